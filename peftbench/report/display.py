"""What every rendered report shows people: the comparison's headers and rows of cells, the failed runs'
rows, the notes under the table, the summary line, and the plain-text grid the text formats share."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from peftbench.report.answers import CONTENTION_MARK, DID_NOT_LEARN_MARK, is_marked
from peftbench.report.budget import stopped_count
from peftbench.report.build import Report
from peftbench.report.cells import (
    STOPPED_MARK,
    budget_label,
    ci_cell,
    delta_text,
    human_count,
    memory_cell,
    missing,
    one_line,
    pct_text,
    rate_text,
    ratio_text,
    score_cell,
    vs_best_cell,
)
from peftbench.report.stats import ALPHA, CI_LEVEL, SIGNIFICANCE_TEST

CI_CLIPPED_NOTE = (", clipped to the metric's possible values (accuracy, F1, exact match and ROUGE in [0, 1], "
                   "correlations in [-1, 1])")
"""The part of the CI note that says the printed interval is clipped (:data:`~peftbench.report.stats.METRIC_RANGES`)."""

NOTES = (
    "Score: mean ± sample standard deviation (ddof=1) over seeds; a setting with one seed has no std.",
    f"{CI_LEVEL:.0%} CI: confidence interval of the mean score over seeds, mean ± t(n-1) · std / √n "
    f"(Student's t distribution){CI_CLIPPED_NOTE}; n/a with fewer than 2 seeds.",
    f"vs best: each setting against the best setting of its model, task and budget (the highest mean "
    f"among settings with at least 2 seeds) by a {SIGNIFICANCE_TEST} at alpha={ALPHA:g}: 'tied' = not "
    "distinguishable from the best, 'worse' = significantly below it (p-value shown), 'n/a' = fewer than "
    "2 seeds; each test is separate (no correction for multiple comparisons).",
    "Runs are grouped when they differ only by seed (same model, task, method, method settings, lr, "
    "training budget and every other config key: the runs' setting_key). Two settings that look alike "
    "but differ in another key (batch size, schedule...) get '(config <setting_key>)' after their label.",
    "Budget: the training budget each seed was given (steps, epochs, samples or tokens); settings with "
    "different budgets are never pooled, tested against each other or compared with each other's full "
    "fine-tuning. '?' = not recorded; runs recorded before budgets were get the optimizer steps they "
    "took as their budget.",
    f"{STOPPED_MARK} after a score: at least one seed stopped before its budget (early stopping); the "
    "note under the table says how many and after how many steps.",
    "Peak memory: peak GPU memory allocated where measured (GPU), else peak process RSS (RSS).",
    "'vs full' columns compare with full fine-tuning on the same model, task and budget (its best-scoring "
    "setting if there are several): parameters, memory and speed as ratios, score as a difference.",
    "Pareto: on the front of highest score and fewest trainable parameters for that model, task and budget.",
    "Failed and cancelled runs are listed separately and never included in the averages.",
)

CI_HEADER = f"{CI_LEVEL:.0%} CI"
VS_BEST_HEADER = f"vs best (Welch t, α={ALPHA:g})"
DISPLAY_HEADERS = (
    "Model",
    "Task",
    "Metric",
    "Method",
    "Setting",
    "Budget",
    "Trainable",
    "% of model",
    "Peak memory",
    "Throughput",
    "Score (mean ± std)",
    CI_HEADER,
    VS_BEST_HEADER,
    "Seeds",
    "Params vs full",
    "Memory vs full",
    "Speed vs full",
    "Δ score vs full",
    "Pareto",
    "Failed",
)
RIGHT_ALIGNED = {
    "Trainable",
    "% of model",
    "Peak memory",
    "Throughput",
    "Score (mean ± std)",
    CI_HEADER,
    "Seeds",
    "Params vs full",
    "Memory vs full",
    "Speed vs full",
    "Δ score vs full",
    "Failed",
}


def display_rows(table: pd.DataFrame) -> list[list[str]]:
    """Formats a :func:`comparison_table` for people, one list of cells per row (see DISPLAY_HEADERS).

    The score of a setting of which some seed stopped before its budget ends with
    :data:`STOPPED_MARK`; :func:`stopped_notes` explains each mark.
    """
    rows = []
    for rec in table.to_dict("records"):
        rows.append(
            [
                str(rec["model"]),
                str(rec["task"]),
                str(rec["metric"]),
                str(rec["method"]),
                str(rec["setting"]),
                budget_label(rec.get("budget_unit"), rec.get("budget")),
                human_count(rec["trainable_params"]),
                pct_text(rec["trainable_pct"]),
                memory_cell(rec["peak_mem_bytes"], rec["mem_kind"]),
                rate_text(rec["train_tokens_per_s"], rec["train_samples_per_s"])
                + (CONTENTION_MARK if is_marked(rec.get("contended")) else ""),
                score_cell(rec["score_mean"], rec["score_std"])
                + (STOPPED_MARK if stopped_count(rec) else "")
                + (DID_NOT_LEARN_MARK if is_marked(rec.get("did_not_learn")) else ""),
                ci_cell(rec.get("score_ci_low"), rec.get("score_ci_high")),
                vs_best_cell(rec.get("vs_best"), rec.get("p_vs_best")),
                str(rec["n_seeds"]),
                ratio_text(rec["params_ratio"]),
                ratio_text(rec["mem_ratio"]),
                ratio_text(rec["throughput_ratio"]),
                delta_text(rec["score_delta"]),
                "yes" if rec["pareto"] else "",
                str(rec["n_failed"]) if rec["n_failed"] else "",
            ]
        )
    return rows


FAILED_HEADERS = ("Run", "Sweep", "Status", "Model", "Task", "Method", "Setting", "Seed", "Started", "Error")


def failed_rows(failed: pd.DataFrame, error_limit: int | None) -> list[list[str]]:
    """Formats :func:`~peftbench.report.compare.failed_runs` for people (see :data:`FAILED_HEADERS`)."""
    rows = []
    for rec in failed.to_dict("records"):
        started = rec["started_at"]
        if isinstance(started, pd.Timestamp):
            started = started.strftime("%Y-%m-%d %H:%M:%S")
        rows.append(
            [
                str(rec["run_id"]) or "-",
                str(rec["sweep_id"]) or "-",
                str(rec["status"]),
                str(rec["model"]),
                str(rec["task"]),
                str(rec["method"]),
                str(rec["setting"]),
                "-" if missing(rec["seed"]) else str(rec["seed"]),
                "-" if missing(started) or started is pd.NaT else str(started),
                one_line(rec["error"], error_limit) if error_limit else (str(rec["error"]).strip() or "-"),
            ]
        )
    return rows


def text_grid(headers: Sequence[str], rows: list[list[str]], right: set[str] | None = None) -> str:
    """Lays out rows of cells as a plain-text table with a header and a dashed rule."""
    right = right or set()
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.rjust(w) if header in right else cell.ljust(w)
            for cell, w, header in zip(cells, widths, headers, strict=True)
        ]
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def summary_line(report: Report) -> str:
    """The line that heads every format: where the runs came from, how many, how many settings."""
    ok = report.n_runs - len(report.failed)
    search = (
        f" {report.n_search} search trial(s) (scored on the search split) left out; --include-search "
        "shows them."
        if report.n_search
        else ""
    )
    return (
        f"{report.source}: {report.n_runs} run(s), {ok} successful, {len(report.failed)} failed or "
        f"cancelled; {len(report.table)} setting(s).{search}"
    )
