"""The report as one self-contained HTML page: inline CSS, interactive Plotly figures (plotly.js
inlined, so it works offline) where Plotly is installed, and the plots as base64 PNG.

Laid out for a 1280 px window: the page never scrolls sideways (a wide table scrolls inside its own
box), figures take the page's width, legends sit under the plots."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from peftbench.report.budget import budget_lines, is_warning, stopped_notes
from peftbench.report.build import Report
from peftbench.report.display import (
    DISPLAY_HEADERS,
    FAILED_HEADERS,
    NOTES,
    RIGHT_ALIGNED,
    display_rows,
    failed_rows,
    summary_line,
)
from peftbench.report.interactive import available, figure_div, figures, plotly_script
from peftbench.report.plots import PLOT_TITLES, render_plots
from peftbench.report.summary import ANSWER_NOTES

_HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; max-width: 100%; }
p, li { overflow-wrap: anywhere; }
td { white-space: nowrap; } th { min-width: 4em; }
div.scroll { overflow-x: auto; max-width: 100%; margin: 8px 0; }
div.iplot { width: 100%; margin: 12px 0 24px; }
summary { cursor: pointer; font-weight: 600; margin: 8px 0; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 3px 7px; vertical-align: top; }
th { background: #f0f0f0; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.pareto td { background: #fff8e1; }
td.nowrap { white-space: nowrap; }
td.error { font-family: ui-monospace, monospace; white-space: pre-wrap; max-width: 60em; }
ul.notes { font-size: 13px; color: #444; }
p.budget { font-size: 13px; margin: 4px 0; }
p.warning { font-size: 13px; margin: 4px 0; padding: 4px 8px; background: #fff3cd; color: #6b4500;
  border-left: 4px solid #e0a800; }
p.stopped { font-size: 13px; margin: 2px 0; color: #444; }
figure { margin: 12px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 2px; margin-right: 4px; }
"""


def _html_table(
    headers: Sequence[str],
    rows: list[list[str]],
    right: set[str],
    css_class: str,
    row_classes: list[str] | None = None,
    cell_class: dict[str, str] | None = None,
) -> str:
    cell_class = cell_class or {}
    out = ['<div class="scroll">', f'<table class="{css_class}">', "<thead><tr>"]
    out.extend(f"<th>{html.escape(h)}</th>" for h in headers)
    out.append("</tr></thead>")
    out.append("<tbody>")
    for i, row in enumerate(rows):
        klass = row_classes[i] if row_classes else ""
        out.append(f'<tr class="{klass}">' if klass else "<tr>")
        for header, cell in zip(headers, row, strict=True):
            names = " ".join(filter(None, ["num" if header in right else "", cell_class.get(header, "")]))
            attr = f' class="{names}"' if names else ""
            out.append(f"<td{attr}>{html.escape(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def render_html(report: Report, *, plots: dict[str, bytes] | None = None, interactive: bool = True) -> str:
    """Renders the report as one self-contained HTML page (inline CSS, plots embedded as base64 PNG).

    Args:
        report: The report to render.
        plots: PNG images by name, as from :func:`peftbench.report.plots.render_plots`; ``None``
            draws them here, an empty dict leaves them out (and the interactive figures too).
        interactive: Also the interactive figures (:mod:`peftbench.report.interactive`), loss curves
            included, where Plotly is installed.
    """
    if plots is None:
        plots = render_plots(report.table)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>peftbench report</title>",
        f"<style>{_HTML_STYLE}</style></head><body>",
        "<h1>peftbench report</h1>",
        f"<p>{html.escape(summary_line(report))} Generated {html.escape(generated)}.</p>",
    ]
    if report.which:
        parts.append("<h2>Which method?</h2>")
        for title, lines in report.which:
            parts.append(f"<h3>{html.escape(title)}</h3><ul class=\"answers\">"
                         + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>")
    parts.append("<h2>Comparison</h2>")
    rows = display_rows(report.table)
    for line in budget_lines(report.table):
        parts.append(f'<p class="{"warning" if is_warning(line) else "budget"}">{html.escape(line)}</p>')
    if rows:
        classes = ["pareto" if flag else "" for flag in report.table["pareto"].tolist()]
        parts.append(
            _html_table(
                DISPLAY_HEADERS, rows, RIGHT_ALIGNED, "comparison", classes, cell_class={"Budget": "nowrap"}
            )
        )
    else:
        parts.append("<p>No successful runs to compare.</p>")
    parts.extend(f'<p class="stopped">{html.escape(note)}</p>' for note in stopped_notes(report.table))
    for title, grid_headers, grid_rows, lines in report.sections:
        right = {h for h in grid_headers if h not in ("Method", "Setting", "vs best rank")}
        parts.append(f"<h3>{html.escape(title)}</h3>")
        parts.append(_html_table(grid_headers, grid_rows, right, "answers", [""] * len(grid_rows)))
        parts.extend(f"<p>{html.escape(line)}</p>" for line in lines)
    notes = (*NOTES, *(ANSWER_NOTES if report.which else ()))
    parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    if plots and interactive and not report.table.empty and available():
        parts.append("<h2>Interactive plots</h2>")
        parts.append("<p>Hover a point for its setting, seeds and confidence interval; drag to zoom, double-click "
                     "to reset, click a method in a legend to hide it.</p>")
        parts.append(f"<script>{plotly_script()}</script>")
        divs = [figure_div(name, fig) for name, fig in figures(report.table, Path(report.source).parent)]
        parts.append("".join(f'<div class="iplot">{d}</div>' for d in divs))
        # Plotly sizes a figure when it draws it; once the page is laid out, size each to its box again.
        parts.append("<script>window.addEventListener('load', () => document.querySelectorAll('div.iplot "
                     ".js-plotly-plot').forEach(p => Plotly.Plots.resize(p)));</script>")
    if plots:
        parts.append("<h2>Plots</h2>")
        for name, png in plots.items():
            title = PLOT_TITLES.get(name, name)
            data = base64.b64encode(png).decode("ascii")
            parts.append(
                f'<figure id="plot-{html.escape(name)}">'
                f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}"></figure>'
            )
    parts.append("<h2>Failed or cancelled runs</h2>")
    if report.failed.empty:
        parts.append("<p>None.</p>")
    else:
        parts.append(
            _html_table(
                FAILED_HEADERS,
                failed_rows(report.failed, None),
                set(),
                "failed",
                cell_class={"Error": "error"},
            )
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
