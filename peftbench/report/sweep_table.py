"""One sweep's runs as a compact plain-text table, printed by the harness at the end of a multirun."""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np
import pandas as pd

from peftbench.record import STATUSES
from peftbench.report.answers import (
    DID_NOT_LEARN_MARGIN,
    DID_NOT_LEARN_MARK,
    MEASURED,
    not_learned_keys,
    search_command,
)
from peftbench.report.cells import (
    STOPPED_MARK,
    budget_label,
    human_count,
    memory_cell,
    missing,
    one_line,
    pct_text,
    rate_text,
    reasons_text,
    score_text,
    steps_text,
)
from peftbench.report.compare import failed_runs
from peftbench.report.display import text_grid
from peftbench.report.groups import budget_columns, flags, floats
from peftbench.report.load import REPORT_COLUMNS, RunsFileWarning, load_runs, runs_path

SWEEP_HEADERS = (
    "Method",
    "Rank",
    "LR",
    "Seed",
    "Budget",
    "Steps",
    "Trainable",
    "%",
    "Peak memory",
    "Throughput",
    "Score",
    "Status",
)


def _steps_cell(steps: Any, budget_steps: Any, stopped: bool) -> str:
    """``120/150†``: optimizer steps taken, of the steps the budget works out to, marked if stopped early."""
    mark = STOPPED_MARK if stopped else ""
    if missing(steps):
        return "-" + mark if mark else "-"
    if missing(budget_steps):
        return f"{steps_text(steps)}{mark}"
    return f"{steps_text(steps)}/{steps_text(budget_steps)}{mark}"


def _sweep_budget_warnings(runs: pd.DataFrame) -> list[str]:
    """A warning for each model and task whose runs (with a known budget) have different budgets."""
    lines = []
    known = runs[~((runs["_unit"] == "") & runs["_amount"].isna()).to_numpy()]
    for (model, task), sub in known.groupby(["model", "task"], sort=True):
        budgets = {
            (str(u), math.inf if math.isnan(a) else float(a)): budget_label(u, a)
            for u, a in zip(sub["_unit"].tolist(), sub["_amount"].tolist(), strict=True)
        }
        if len(budgets) > 1:
            listed = ", ".join(label for _, label in sorted(budgets.items()))
            lines.append(
                f"Warning: {model or '-'} / {task or '-'} mixes training budgets ({listed}); compare runs "
                "only within one budget."
            )
    return lines


def format_sweep_table(results_dir: str | os.PathLike[str], sweep_id: str) -> str:
    """Renders one sweep's runs as a compact plain-text table, for the end of a multirun.

    One line per run (method, rank, learning rate, seed, training budget, optimizer steps taken out
    of the budget's steps, e.g. ``120/150``, trainable parameters and their share of the model, peak
    memory, throughput, score, status), then the failed or cancelled runs with their error. A run of a
    setting that did not learn (its seeds' scores not distinguishable from the majority-class baseline,
    or, without one, not above the zero-shot score: :func:`peftbench.report.answers.did_not_learn`) has :data:`DID_NOT_LEARN_MARK` after its score. A run
    that stopped before its budget has :data:`STOPPED_MARK` after its steps, explained in a note; a
    warning says when runs of one model and task have different budgets. Never raises on a missing
    or empty file: it says so in the returned text.

    Args:
        results_dir: Directory holding ``runs.csv``.
        sweep_id: The sweep whose runs to show.

    Returns:
        The table as text, ending with a newline.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RunsFileWarning)
            runs = load_runs(results_dir, columns=(*REPORT_COLUMNS, *MEASURED))
    except FileNotFoundError as error:
        return f"Sweep {sweep_id}: {error}\n"
    runs = runs[(runs["sweep_id"] == str(sweep_id)).to_numpy()]
    if runs.empty:
        return f"Sweep {sweep_id}: no runs recorded in {runs_path(results_dir)}\n"
    unit, amount, inferred = budget_columns(runs)
    budget_steps = np.where(inferred, floats(runs["train_steps"]), floats(runs["budget_steps"]))
    runs = runs.assign(
        _order=np.arange(len(runs)),
        _unit=unit,
        _unit_order=np.where(unit == "", "\uffff", unit),  # an unknown budget sorts last
        _amount=amount,
        _budget_steps=budget_steps,
        _stopped=flags(runs["stopped_early"]),
    )
    runs = runs.sort_values(
        ["method", "rank", "lr", "_unit_order", "_amount", "seed", "_order"],
        kind="mergesort",
        na_position="last",
    )
    lost = not_learned_keys(runs)
    rows = []
    for rec in runs.to_dict("records"):
        if rec["status"] != "success":  # a failed run's partial figures are not results
            rec.update(score=math.nan, train_tokens_per_s=math.nan, train_samples_per_s=math.nan)
        gpu, rss = rec["peak_gpu_mem_bytes"], rec["peak_rss_bytes"]
        memory = (
            memory_cell(gpu, "GPU")
            if not missing(gpu)
            else memory_cell(rss, "RSS" if not missing(rss) else "")
        )
        rows.append(
            [
                str(rec["method"]),
                "-" if missing(rec["rank"]) else str(rec["rank"]),
                "-" if missing(rec["lr"]) else f"{rec['lr']:g}",
                "-" if missing(rec["seed"]) else str(rec["seed"]),
                budget_label(rec["_unit"], rec["_amount"]),
                _steps_cell(rec["train_steps"], rec["_budget_steps"], rec["_stopped"]),
                human_count(rec["trainable_params"]),
                pct_text(rec["trainable_pct"]),
                memory,
                rate_text(rec["train_tokens_per_s"], rec["train_samples_per_s"]),
                score_text(rec["score"])
                + (f" {rec['metric']}" if rec["metric"] and not missing(rec["score"]) else "")
                + (f" {DID_NOT_LEARN_MARK}" if rec["setting_key"] in lost and rec["status"] == "success" else ""),
                str(rec["status"]),
            ]
        )
    counts = runs["status"].value_counts()
    summary = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in STATUSES)
    right = {"Rank", "LR", "Seed", "Steps", "Trainable", "%", "Peak memory", "Throughput", "Score"}
    parts = [f"Sweep {sweep_id}: {len(runs)} run(s): {summary}"]
    parts.extend(_sweep_budget_warnings(runs))
    parts.append(text_grid(SWEEP_HEADERS, rows, right))
    stopped = runs[runs["_stopped"].to_numpy(dtype=bool)]
    if not stopped.empty:
        reasons: dict[str, int] = {}
        for reason in stopped["stop_reason"].astype("str").tolist():
            name = reasons_text(reason) or "reason not recorded"
            reasons[name] = reasons.get(name, 0) + 1
        listed = ", ".join(f"{name}: {n}" for name, n in reasons.items())
        parts.append(f"{STOPPED_MARK} stopped before its budget: {len(stopped)} run(s) ({listed})")
    if lost:
        lost_rows = runs[runs["setting_key"].isin(lost).to_numpy()]
        names = sorted({str(m) for m in lost_rows["method"]})
        # Named with their learning rates: in a learning-rate search only some trials fail to learn.
        shown = ", ".join(f"{m} (lr {', '.join(sorted({_lr(v) for v in lost_rows.loc[lost_rows['method'] == m, 'lr']}))})"
                          for m in names)
        unsearched = [m for m in names if runs.loc[runs["method"] == m, "lr"].nunique() < 2]
        learned = runs[(runs["status"] == "success").to_numpy() & ~runs["setting_key"].isin(lost).to_numpy()]
        searched = [m for m in names if m not in unsearched]
        hopeless = [m for m in searched if not (learned["method"] == m).any()]
        advice = []
        if unsearched:  # a search runs one method: one command each, as the full report gives them
            commands = [f"`{search_command(m, _settings_of(lost_rows, m))}`" for m in unsearched]
            advice.append("the learning rate or the budget is the likely cause, search one "
                          + ("with " if len(commands) == 1 else "for each of them: ") + ", ".join(commands))
        if len(hopeless) < len(searched):
            advice.append("other learning rates of this sweep did better: its best trial is what counts")
        if hopeless:
            advice.append(f"{', '.join(hopeless)} learned at none of the learning rates this sweep tried: more "
                          "trials, a wider range (hydra.sweeper.params) or a larger budget may find one")
        parts.append(f"{DID_NOT_LEARN_MARK} did not learn (score not distinguishable from the majority-class "
                     f"baseline, or without one not above the zero-shot score and 0 by {DID_NOT_LEARN_MARGIN:g}): "
                     f"{shown}; {'; '.join(advice)}")
    failed = failed_runs(runs)
    if not failed.empty:
        parts.append("Failed or cancelled:")
        for rec in failed.to_dict("records"):
            seed = "-" if missing(rec["seed"]) else rec["seed"]
            parts.append(
                f"  {rec['run_id'] or '-'} {rec['method']} ({rec['setting']}, seed {seed}) "
                f"{rec['status']}: {one_line(rec['error'], 200)}"
            )
    return "\n".join(parts) + "\n"


def _lr(value: Any) -> str:
    return "?" if missing(value) else f"{float(value):.3g}"


def _settings_of(rows: pd.DataFrame, method: str) -> str | None:
    """The ``method_settings`` of ``method``'s first row (where the search advice should start from)."""
    cells = rows.loc[rows["method"] == method, "method_settings"] if "method_settings" in rows else []
    return None if len(cells) == 0 or missing(cells.iloc[0]) else str(cells.iloc[0])
