"""Logs a sweep's comparison to Weights & Biases as one "report" run.

The harness calls :func:`log_sweep_to_wandb` at the end of a multirun. It starts one wandb run
(``job_type="report"``, ``group=<sweep_id>``, so it sits next to the sweep's training runs), logs
the comparison table as a ``wandb.Table`` named ``comparison`` (its ``budget_unit`` and ``budget``
columns say each setting's training budget), a score-against-parameters scatter
(``wandb.plot.scatter``) named ``score_vs_params`` whose title names the training budget(s), the
failed runs as ``failed_runs`` when there are any, and finishes the run. ``docs/wandb.md`` explains
which panels reproduce the report's plots.

wandb is imported only when the function runs.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pandas as pd

from peftbench.report.cells import budget_label
from peftbench.report.compare import COMPARISON_COLUMNS, comparison_table, failed_runs

__all__ = ["WANDB_TABLE_COLUMNS", "log_sweep_to_wandb"]

# The comparison table's columns, less the long or derived ones a wandb table panel has no use for.
_NOT_LOGGED = ("method_settings", "score_ci_low", "score_ci_high", "vs_best", "p_vs_best", "final_train_loss",
               "baseline_setting")
WANDB_TABLE_COLUMNS = tuple(c for c in COMPARISON_COLUMNS if c not in _NOT_LOGGED)
"""Columns of the ``comparison`` table logged to wandb (a subset of the report's columns)."""

_FAILED_COLUMNS = ("run_id", "status", "model", "task", "method", "setting", "seed", "error")


def _plain(value: Any) -> Any:
    """Converts pandas/numpy scalars to JSON-friendly Python values (missing -> None)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rows(frame: pd.DataFrame, columns: tuple[str, ...]) -> list[list[Any]]:
    return [[_plain(value) for value in row] for row in frame.loc[:, list(columns)].itertuples(index=False)]


def _budgets(table: pd.DataFrame) -> list[str]:
    """The distinct training budgets of a comparison table, as labels (``150 steps``), smallest first."""
    seen: dict[tuple[str, float], str] = {}
    for unit, amount in zip(table["budget_unit"].tolist(), table["budget"].tolist(), strict=True):
        unit = "" if unit is None or unit != unit else str(unit)
        number = math.inf if _plain(amount) is None else float(amount)
        seen.setdefault((unit, number), budget_label(unit, amount))
    return [label for _, label in sorted(seen.items())]


def log_sweep_to_wandb(
    df_of_sweep: pd.DataFrame,
    sweep_id: str,
    project: str = "peftbench",
    mode: str | None = None,
    dir: str | os.PathLike[str] | None = None,  # same name as wandb.init's argument
) -> str:
    """Logs one sweep's comparison table and score-vs-parameters scatter as a wandb "report" run.

    Args:
        df_of_sweep: The sweep's runs as returned by :func:`peftbench.report.load_runs` (any
            statuses). If it has a ``sweep_id`` column holding ``sweep_id``, other sweeps' rows
            are ignored.
        sweep_id: The sweep id; used as the wandb group and in the run name.
        project: The wandb project.
        mode: ``"online"``, ``"offline"`` or ``"disabled"``; ``None`` lets wandb decide
            (``WANDB_MODE``).
        dir: Directory under which wandb writes its ``wandb/`` folder; ``None`` uses wandb's default.

    Returns:
        The id of the wandb run that was logged.
    """
    import wandb

    runs = df_of_sweep
    if "sweep_id" in runs.columns:
        mine = runs["sweep_id"].astype("str") == str(sweep_id)
        if bool(mine.any()):
            runs = runs[mine.to_numpy()]
    table = comparison_table(runs)
    failed = failed_runs(runs)
    n_runs = len(runs)
    budgets = _budgets(table)
    scatter_title = f"Score vs trainable parameters (sweep {sweep_id}"
    if len(budgets) == 1:
        scatter_title += f", {budgets[0]})"
    elif budgets:
        scatter_title += f"; mixed budgets, compare within one: {', '.join(budgets)})"
    else:
        scatter_title += ")"

    run = wandb.init(
        project=project,
        mode=mode,
        dir=None if dir is None else os.fspath(dir),
        job_type="report",
        group=str(sweep_id),
        name=f"report-{sweep_id}",
        config={"sweep_id": str(sweep_id), "n_runs": n_runs, "n_failed": len(failed), "budgets": budgets},
        reinit="create_new",
        settings=wandb.Settings(console="off", silent=True),
    )
    try:
        comparison = wandb.Table(columns=list(WANDB_TABLE_COLUMNS), data=_rows(table, WANDB_TABLE_COLUMNS))
        payload: dict[str, Any] = {
            "comparison": comparison,
            "score_vs_params": wandb.plot.scatter(
                comparison,
                "trainable_params",
                "score_mean",
                title=scatter_title,
            ),
        }
        if not failed.empty:
            payload["failed_runs"] = wandb.Table(
                columns=list(_FAILED_COLUMNS), data=_rows(failed, _FAILED_COLUMNS)
            )
        run.log(payload)
        run.summary["n_runs"] = n_runs
        run.summary["n_settings"] = len(table)
        run.summary["n_failed"] = len(failed)
        run_id = run.id
    finally:
        run.finish()
    return run_id
