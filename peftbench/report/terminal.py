"""The text report for a terminal: the key columns in at most 120 characters, prose wrapped.

``peftbench-report`` prints this by default; ``--wide`` (and every other format) keeps every column.
The Setting column shows only what differs from the method's defaults (a note says so).
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence

import pandas as pd

from peftbench.report.answers import CONTENTION_MARK, DID_NOT_LEARN_MARK, is_marked
from peftbench.report.budget import budget_statement, stopped_count, stopped_notes
from peftbench.report.build import Report
from peftbench.report.cells import (
    STOPPED_MARK,
    budget_label,
    human_count,
    memory_cell,
    missing,
    one_line,
    rate_text,
    score_cell,
    vs_best_cell,
)
from peftbench.report.defaults import DEFAULTS_LABEL, display_setting
from peftbench.report.display import NOTES, VS_BEST_HEADER, summary_line, text_grid
from peftbench.report.summary import ANSWER_NOTES

TABLE_WIDTH = 120
"""No table line of the default text report is longer."""

HEADERS = ("Method", "Setting", "Budget", "Trainable", "Peak memory", "Throughput", "Score (mean ± std)",
           "vs best", "Pareto")
RIGHT = {"Trainable", "Peak memory", "Throughput", "Score (mean ± std)"}
FAILED = ("Run", "Status", "Method", "Setting", "Seed", "Error")

COMPACT_NOTES = (
    f"Setting: only what differs from the method's defaults (conf/method/<method>.yaml); "
    f"'{DEFAULTS_LABEL}' = exactly the defaults. --wide shows every setting and every column (budget, "
    f"share of the model, CI, seeds, the ratios to full fine-tuning, failures).",
    f"vs best: the '{VS_BEST_HEADER}' column of --wide.",
)


def terminal_width() -> int:
    """The terminal's width in characters (120 when the output is not a terminal)."""
    return shutil.get_terminal_size((TABLE_WIDTH, 24)).columns


def rows(table: pd.DataFrame) -> list[list[str]]:
    """The key cells of each row of a comparison table (see :data:`HEADERS`)."""
    out = []
    for rec in table.to_dict("records"):
        out.append([
            str(rec["method"]),
            display_setting(rec),
            budget_label(rec.get("budget_unit"), rec.get("budget")),
            human_count(rec["trainable_params"]),
            memory_cell(rec["peak_mem_bytes"], rec["mem_kind"]),
            rate_text(rec["train_tokens_per_s"], rec["train_samples_per_s"])
            + (CONTENTION_MARK if is_marked(rec.get("contended")) else ""),
            score_cell(rec["score_mean"], rec["score_std"]) + (STOPPED_MARK if stopped_count(rec) else "")
            + (DID_NOT_LEARN_MARK if is_marked(rec.get("did_not_learn")) else ""),
            vs_best_cell(rec.get("vs_best"), rec.get("p_vs_best")),
            "yes" if rec["pareto"] else "",
        ])
    return out


def fit_grid(headers: Sequence[str], cells: list[list[str]], right: set[str], width: int, shrink: str) -> str:
    """:func:`~peftbench.report.display.text_grid`, with the ``shrink`` column's cells cut (ending in
    ``…``) so that no line is longer than ``width``."""
    grid = text_grid(headers, cells, right)
    longest = max(len(line) for line in grid.splitlines())
    if longest <= width:
        return grid
    column = list(headers).index(shrink)
    current = max(len(headers[column]), *(len(row[column]) for row in cells))
    keep = max(len(headers[column]), current - (longest - width), 8)
    cut = [[(_cut(c, keep) if i == column else c) for i, c in enumerate(row)] for row in cells]
    return text_grid(headers, cut, right)


def _cut(cell: str, keep: int) -> str:
    """``cell`` in at most ``keep`` characters, ending in ``…``; a ``(config <key>)`` tag at its end
    (what tells lookalike settings apart) is kept whole."""
    if len(cell) <= keep:
        return cell
    tag = cell[cell.index(" (config "):] if " (config " in cell else ""
    head = cell[: len(cell) - len(tag)]
    room = keep - len(tag) - 1
    if room < 1:  # no room for the label beside its tag: the tag alone (cut too, if it must be)
        tag = tag.strip()
        return tag if len(tag) <= keep else tag[: keep - 1] + "…"
    return head[:room] + "…" + tag


_KEEP = "\u00a0"  # textwrap breaks only at ASCII white space


def wrap(text: str, width: int, indent: str = "") -> str:
    """One paragraph wrapped at ``width`` (a hanging ``indent`` on the lines after the first); a
    command in backticks stays on one line, so it can be copied."""
    pieces = text.split("`")
    kept = "`".join(p.replace(" ", _KEEP) if i % 2 else p for i, p in enumerate(pieces))
    return textwrap.fill(kept, width=width, subsequent_indent=indent, break_on_hyphens=False).replace(_KEEP, " ")


def render_terminal(report: Report, *, width: int | None = None, error_limit: int = 300) -> str:
    """The text report with the key columns, each table at most :data:`TABLE_WIDTH` characters wide
    (and no wider than ``width``), prose wrapped at ``width`` (default: the terminal's); a failed
    run's error is cut at ``error_limit`` characters and wraps within the table's width."""
    width = width or terminal_width()
    table_width = min(width, TABLE_WIDTH)
    parts = [wrap(f"peftbench report — {summary_line(report)}", width), ""]
    if report.which:  # the answers, in sentences, before the tables they are drawn from
        parts.append("Which method?")
        for title, lines in report.which:
            parts.extend([f"-- {title} --", *(wrap(f"* {line}", width, "  ") for line in lines)])
        parts.append("")
    cells = rows(report.table)
    if not cells:
        parts.append("No successful runs to compare.")
    sections: dict[tuple[str, str, str], list[int]] = {}
    for position, rec in enumerate(report.table[["model", "task", "metric"]].astype("str").itertuples(index=False)):
        sections.setdefault(tuple(rec), []).append(position)
    for (model, task, metric), positions in sections.items():
        sub = report.table.iloc[positions]
        section = [cells[i] for i in positions]
        headers = list(HEADERS)
        if len({row[2] for row in section}) == 1:  # one budget: said above the table, not in a column
            headers.remove("Budget")
            section = [row[:2] + row[3:] for row in section]
        parts.append(f"== model: {model or '-'}  task: {task or '-'}  metric: {metric or '-'} ==")
        parts.append(wrap(budget_statement(sub), width))
        parts.append(fit_grid(headers, section, RIGHT, table_width, shrink="Setting"))
        parts.extend(wrap(note, width, "  ") for note in stopped_notes(sub, with_model_task=False))
        parts.append("")
    for title, grid_headers, grid_rows, lines in report.sections:
        right = {h for h in grid_headers if h not in ("Method", "Setting", "vs best rank")}
        grid = (fit_grid(grid_headers, grid_rows, right, table_width, shrink="Setting") if "Setting" in grid_headers
                else text_grid(grid_headers, grid_rows, right))
        parts.extend([f"== {title} ==", grid, *(wrap(line, width, "  ") for line in lines), ""])
    notes = (*COMPACT_NOTES, *NOTES, *(ANSWER_NOTES if report.which else ()))
    parts.extend(wrap(f"* {note}", width, "  ") for note in notes)
    parts.append("")
    parts.append(_failed(report.failed, table_width, error_limit))
    return "\n".join(parts).rstrip() + "\n"


ERROR_MIN_WIDTH = 40
"""The failed-runs table gives its Error column at least this many characters (cutting the Setting)."""


def _failed(failed: pd.DataFrame, width: int, error_limit: int) -> str:
    """The failed and cancelled runs; each error wraps in the room the other columns leave (at least
    :data:`ERROR_MIN_WIDTH`, a long Setting is cut for it) onto continuation lines."""
    if failed.empty:
        return "Failed or cancelled runs: none."
    cells, errors = [], []
    for rec in failed.to_dict("records"):
        cells.append([
            str(rec["run_id"]) or "-",
            str(rec["status"]),
            str(rec["method"]),
            str(rec["setting"]),
            "-" if missing(rec["seed"]) else str(rec["seed"]),
        ])
        errors.append(one_line(rec["error"], error_limit))
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(FAILED[:-1])]
    room = width - sum(widths) - 2 * len(widths)
    if room < ERROR_MIN_WIDTH:  # the Setting gives way, down to 8 characters
        setting = FAILED.index("Setting")
        keep = max(8, len(FAILED[setting]), widths[setting] - (ERROR_MIN_WIDTH - room))
        room += widths[setting] - keep
        for row in cells:
            row[setting] = _cut(row[setting], keep)
    room = max(room, len(FAILED[-1]))
    rows = []
    for row, error in zip(cells, errors, strict=True):
        pieces = textwrap.wrap(error, width=room, break_on_hyphens=False) or ["-"]
        rows.append([*row, pieces[0]])
        rows.extend([*([""] * len(row)), piece] for piece in pieces[1:])
    grid = text_grid(FAILED, rows, set())
    return f"Failed or cancelled runs ({len(failed)}, not included above; --wide shows their sweep and start):\n{grid}"
