"""A sweep's wandb workspace view, built from code with ``wandb-workspaces``: no panel wired by hand.

    peftbench-report results --wandb-workspace --sweep <sweep id> [--project peftbench] [--entity me]

builds one saved view of the project filtered to the sweep, its runs grouped by method:

- *Comparison*: score against trainable parameters (log x), score against peak memory, parallel
  coordinates over method, rank, lr and score, and throughput (tokens/s) per method;
- *Training*: the loss curves and the evaluation curve, mean over the runs of each method, against
  the optimizer step, and the loss against the tokens seen.

Saving needs a logged-in wandb (``wandb login`` or ``WANDB_API_KEY``); building does not, so the
view is tested offline. This module reads only the results files and imports no torch.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Any

from peftbench.sinks import wandb_mode

MEMORY_KEYS = ("peak_gpu_mem_bytes", "peak_rss_bytes")  # GPU memory where the sweep ran on one


def sweep_rows(results_dir: Path, sweep_id: str) -> list[dict[str, str]]:
    """The sweep's rows of ``runs.csv`` (every status)."""
    with open(results_dir / "runs.csv", newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if row.get("sweep_id") == sweep_id]


def memory_key(rows: list[dict[str, str]]) -> str:
    """``peak_gpu_mem_bytes`` if any run of the sweep has it, else ``peak_rss_bytes`` (CPU runs)."""
    return MEMORY_KEYS[0] if any(row.get(MEMORY_KEYS[0]) for row in rows) else MEMORY_KEYS[1]


def eval_metrics(rows: list[dict[str, str]]) -> list[str]:
    """The sweep's score metrics, as logged live (``eval/accuracy``), in first-seen order."""
    return list(dict.fromkeys(f"eval/{row['metric']}" for row in rows if row.get("metric"))) or ["eval/accuracy"]


def build_workspace(entity: str, project: str, sweep_id: str, memory: str = "peak_rss_bytes",
                    metrics: list[str] | None = None, name: str | None = None) -> Any:
    """The sweep's workspace view (a ``wandb_workspaces.workspaces.Workspace``, not yet saved).

    Args:
        entity, project: where the sweep's runs are.
        sweep_id: the sweep; its runs carry it as the config key ``sweep_id`` (and as their group).
        memory: the summary key of the memory axis (:data:`MEMORY_KEYS`).
        metrics: the evaluation curves to plot (``["eval/accuracy"]``).
        name: the view's name; default ``peftbench <sweep id>``.
    """
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    metrics = metrics or ["eval/accuracy"]
    by_method = wr.Config("method")
    comparison = ws.Section(name="Comparison", is_open=True, panels=[
        wr.ScatterPlot(title="Score vs trainable parameters (log)", x=wr.SummaryMetric("trainable_params"),
                       y=wr.SummaryMetric("score"), log_x=True),
        wr.ScatterPlot(title=f"Score vs peak memory ({memory})", x=wr.SummaryMetric(memory),
                       y=wr.SummaryMetric("score")),
        wr.ParallelCoordinatesPlot(title="Method, rank, lr and score", columns=[
            wr.ParallelCoordinatesPlotColumn(metric=wr.Config(key)) for key in ("method", "rank", "lr")
        ] + [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric("score"))]),
        wr.BarPlot(title="Training throughput per method (tokens/s, median, min-max)",
                   metrics=[wr.SummaryMetric("train_tokens_per_s")], groupby=by_method,
                   groupby_aggfunc="median", groupby_rangefunc="minmax"),
    ])
    curves = dict(groupby=by_method, groupby_aggfunc="mean", groupby_rangefunc="stddev")
    training = ws.Section(name="Training", is_open=True, panels=[
        wr.LinePlot(title="Training loss by method (mean over runs)", x="Step", y=["train/loss"], **curves),
        *[wr.LinePlot(title=f"{metric} by method (mean over runs)", x="Step", y=[metric], **curves)
          for metric in metrics],
        wr.LinePlot(title="Training loss against tokens seen", x="train/tokens_seen", y=["train/loss"], **curves),
    ])
    return ws.Workspace(
        entity=entity, project=project, name=name or f"peftbench {sweep_id}", sections=[comparison, training],
        runset_settings=ws.RunsetSettings(filters=[ws.Config("sweep_id") == sweep_id], groupby=[ws.Config("method")]),
    )


def logged_in() -> bool:
    """Whether this machine can save to wandb (an API key in the environment or in ``~/.netrc``)."""
    return os.environ.get("WANDB_MODE") not in ("offline", "disabled") and (
        bool(os.environ.get("WANDB_API_KEY")) or wandb_mode("auto") == "online")


def save_workspace(results_dir: str | os.PathLike[str], sweep_id: str, *, project: str = "peftbench",
                   entity: str | None = None, name: str | None = None) -> int:
    """Builds the sweep's view (:func:`build_workspace`) and saves it to wandb; says clearly why not
    when it cannot. Returns the exit status (0 saved, 2 not)."""
    results_dir = Path(results_dir)
    try:
        rows = sweep_rows(results_dir, sweep_id)
    except FileNotFoundError:
        rows = []
    if not rows:
        print(f"peftbench-report: no runs of sweep {sweep_id!r} in {results_dir / 'runs.csv'}", file=sys.stderr)
        return 2
    try:
        import wandb_workspaces  # noqa: F401
    except ImportError:
        print('peftbench-report: the workspace needs the wandb-workspaces package: '
              'pip install "peftbench[wandb-workspaces]"', file=sys.stderr)
        return 2
    if not logged_in():
        print("peftbench-report: saving a wandb workspace needs a logged-in wandb (online): run `wandb login` or "
              "set WANDB_API_KEY, and `wandb sync` offline runs first (they are under <results_dir>/wandb). "
              "docs/wandb.md lists the panels to add by hand instead.", file=sys.stderr)
        return 2
    import wandb

    view = build_workspace(entity or wandb.Api().default_entity, project, sweep_id, memory_key(rows),
                           eval_metrics(rows), name)
    view.save()
    print(f"peftbench-report: saved the workspace view {view.name!r} of sweep {sweep_id}: {view.url}")
    return 0
