"""The report as a document: plain text, Markdown, CSV or LaTeX, and :func:`render` for every format."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from peftbench.report.budget import budget_lines, budget_statement, is_warning, stopped_notes
from peftbench.report.build import Report
from peftbench.report.display import (
    DISPLAY_HEADERS,
    FAILED_HEADERS,
    NOTES,
    RIGHT_ALIGNED,
    display_rows,
    failed_rows,
    summary_line,
    text_grid,
)
from peftbench.report.html import render_html
from peftbench.report.summary import ANSWER_NOTES
from peftbench.report.terminal import render_terminal

_LEFT = {"Method", "Setting", "vs best rank"}

FORMATS = ("text", "markdown", "csv", "latex", "html")
"""Output formats understood by :func:`render` and the command line."""


def render_text(report: Report, *, error_limit: int = 100) -> str:
    """Renders the report as plain text: one table per model and task, then the failed runs.

    Each table is headed by its budget (a warning when it mixes budgets) and followed by a note on
    each setting marked as stopped early.
    """
    parts = [f"peftbench report — {summary_line(report)}", ""]
    if report.which:
        parts.append("Which method?")
        for title, lines in report.which:
            parts.extend([f"-- {title} --", *(f"* {line}" for line in lines)])
        parts.append("")
    headers = list(DISPLAY_HEADERS[3:])
    rows = display_rows(report.table)
    if not rows:
        parts.append("No successful runs to compare.")
    sections: dict[tuple[str, str, str], list[int]] = {}
    for position, row in enumerate(rows):
        sections.setdefault((row[0], row[1], row[2]), []).append(position)
    for (model, task, metric), positions in sections.items():
        sub = report.table.iloc[positions]
        parts.append(f"== model: {model or '-'}  task: {task or '-'}  metric: {metric or '-'} ==")
        parts.append(budget_statement(sub))
        parts.append(text_grid(headers, [rows[i][3:] for i in positions], RIGHT_ALIGNED))
        parts.extend(stopped_notes(sub, with_model_task=False))
        parts.append("")
    for title, grid_headers, grid_rows, lines in report.sections:
        right = {h for h in grid_headers if h not in _LEFT}
        parts.extend([f"== {title} ==", text_grid(grid_headers, grid_rows, right), *lines, ""])
    parts.extend(f"* {note}" for note in (*NOTES, *(ANSWER_NOTES if report.which else ())))
    parts.append("")
    parts.append(_failed_text(report.failed, error_limit))
    return "\n".join(parts).rstrip() + "\n"


def _failed_text(failed: pd.DataFrame, error_limit: int | None) -> str:
    if failed.empty:
        return "Failed or cancelled runs: none."
    grid = text_grid(FAILED_HEADERS, failed_rows(failed, error_limit))
    return f"Failed or cancelled runs ({len(failed)}, not included above):\n{grid}"


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(headers: Sequence[str], rows: list[list[str]], right: set[str] | None = None) -> str:
    right = right or set()
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---:" if h in right else "---" for h in headers) + "|")
    lines.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows)
    return "\n".join(lines)


def render_markdown(report: Report, *, error_limit: int = 300) -> str:
    """Renders the report as GitHub-flavoured Markdown."""
    parts = ["# peftbench report", "", summary_line(report), ""]
    if report.which:
        parts.extend(["## Which method?", ""])
        for title, lines in report.which:
            parts.extend([f"### {_md_cell(title)}", "", *(f"- {_md_cell(line)}" for line in lines), ""])
        parts.extend(["## Comparison", ""])
    rows = display_rows(report.table)
    for line in budget_lines(report.table):
        parts.extend([f"**{_md_cell(line)}**" if is_warning(line) else _md_cell(line), ""])
    parts.append(
        _md_table(DISPLAY_HEADERS, rows, RIGHT_ALIGNED) if rows else "No successful runs to compare."
    )
    parts.append("")
    for note in stopped_notes(report.table):
        parts.extend([_md_cell(note), ""])
    for title, grid_headers, grid_rows, lines in report.sections:
        right = {h for h in grid_headers if h not in _LEFT}
        parts.extend([f"### {_md_cell(title)}", "", _md_table(grid_headers, grid_rows, right), ""])
        parts.extend(line for text in lines for line in (_md_cell(text), ""))
    parts.extend(f"- {note}" for note in (*NOTES, *(ANSWER_NOTES if report.which else ())))
    parts.extend(["", "## Failed or cancelled runs", ""])
    if report.failed.empty:
        parts.append("None.")
    else:
        parts.append(_md_table(FAILED_HEADERS, failed_rows(report.failed, error_limit)))
    return "\n".join(parts) + "\n"


def render_csv(report: Report) -> str:
    """Renders the comparison table as CSV with machine-readable values (raw numbers, no units)."""
    return report.table.to_csv(index=False, lineterminator="\n")


def render_failed_csv(report: Report) -> str:
    """Renders the failed and cancelled runs as CSV."""
    return report.failed.to_csv(index=False, lineterminator="\n")


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "α": r"$\alpha$",
    "√": r"$\surd$",
    "·": r"$\cdot$",
    "×": r"$\times$",
    "Δ": r"$\Delta$",
    "…": r"\ldots{}",
    "†": r"\dag{}",
    "—": "---",
    "‡": r"\ddag{}",
    "⊘": r"$\oslash$",
    "φ": r"$\varphi$",
    "²": r"$^2$",
    "–": "--",
    "’": "'",
}


def latex_escape(text: str) -> str:
    """Escapes text for LaTeX (special characters and the few symbols the report uses)."""
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def _latex_tabular(headers: Sequence[str], rows: list[list[str]], right: set[str] | None = None) -> str:
    right = right or set()
    spec = "".join("r" if h in right else "l" for h in headers)
    lines = [f"\\begin{{tabular}}{{{spec}}}", r"\toprule"]
    lines.append(" & ".join(latex_escape(h) for h in headers) + r" \\")
    lines.append(r"\midrule")
    lines.extend(" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows)
    lines.extend([r"\bottomrule", r"\end{tabular}"])
    return "\n".join(lines)


def render_latex(report: Report, *, error_limit: int = 120) -> str:
    """Renders the report as LaTeX tables (needs the ``booktabs`` package)."""
    parts = [
        "% peftbench report; needs \\usepackage{booktabs}",
        "% " + summary_line(report).replace("%", "\\%"),
        r"\begin{table}[ht]",
        r"\centering",
        r"\scriptsize",
        _latex_tabular(DISPLAY_HEADERS, display_rows(report.table), RIGHT_ALIGNED),
    ]
    for line in [*budget_lines(report.table), *stopped_notes(report.table)]:
        text = latex_escape(line)
        parts.append(r"\par\smallskip " + (rf"\textbf{{{text}}}" if is_warning(line) else text) + r"\par")
    parts.extend([r"\caption{" + latex_escape(" ".join(NOTES[:4])) + "}", r"\end{table}"])
    for title, lines in report.which:
        parts.append(r"\paragraph{" + latex_escape(f"Which method? {title}") + "}")
        parts.extend(latex_escape(line) + r"\par" for line in lines)
    for title, grid_headers, grid_rows, lines in report.sections:
        right = {h for h in grid_headers if h not in _LEFT}
        parts.extend([r"\begin{table}[ht]", r"\centering", r"\scriptsize",
                      _latex_tabular(grid_headers, grid_rows, right)])
        parts.extend(r"\par\smallskip " + latex_escape(line) + r"\par" for line in lines)
        parts.extend([r"\caption{" + latex_escape(title) + "}", r"\end{table}"])
    if report.which:
        parts.extend(latex_escape(note) + r"\par" for note in ANSWER_NOTES)
    if not report.failed.empty:
        parts.extend(
            [
                r"\begin{table}[ht]",
                r"\centering",
                r"\scriptsize",
                _latex_tabular(FAILED_HEADERS, failed_rows(report.failed, error_limit)),
                r"\caption{Failed or cancelled runs (not included in the averages).}",
                r"\end{table}",
            ]
        )
    return "\n".join(parts) + "\n"


def render(report: Report, fmt: str = "text", *, plots: dict[str, bytes] | None = None, wide: bool = False,
           width: int | None = None) -> str:
    """Renders a report in one of :data:`FORMATS`.

    Args:
        report: The report from :func:`build_report`.
        fmt: ``text``, ``markdown``, ``csv``, ``latex`` or ``html``.
        plots: Only for ``html``: see :func:`render_html`.
        wide: Only for ``text``: every column (:func:`render_text`) instead of the key columns in at
            most 120 characters (:func:`~peftbench.report.terminal.render_terminal`).
        width: Only for ``text`` without ``wide``: wrap prose at this width (default: the terminal's).

    Returns:
        The rendered document.

    Raises:
        ValueError: For an unknown format.
    """
    renderers: dict[str, Callable[[Report], str]] = {
        "text": render_text,
        "markdown": render_markdown,
        "csv": render_csv,
        "latex": render_latex,
    }
    if fmt == "html":
        return render_html(report, plots=plots)
    if fmt == "text" and not wide:
        return render_terminal(report, width=width)
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return renderers[fmt](report)
