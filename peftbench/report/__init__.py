"""Results report: compare PEFT methods across the runs recorded in ``runs.csv``.

The harness appends one row per run to ``<results_dir>/runs.csv``. The report reads that file,
groups the successful runs that differ only by their seed, and compares every setting with full
fine-tuning on the same model and task.

Command line::

    python -m peftbench.report [RESULTS_DIR] [--model M] [--task T] [--method X] [--sweep S]
                               [--sort COLUMN [--desc]] [--format text|markdown|csv|latex|html]
                               [--output PATH] [--plots-dir DIR] [--include-search]

Library API (names and signatures are kept stable; all are importable from this package):

* :func:`load_runs` reads ``runs.csv`` into a :class:`pandas.DataFrame` with typed columns.
* :func:`comparison_table` turns those runs into one row per (model, task, method, setting).
* :func:`failed_runs` lists the failed and cancelled runs.
* :func:`format_sweep_table` renders one sweep's runs as a compact plain-text table.
* :func:`significance` adds each setting's confidence interval and its comparison with the best
  setting of its model, task and training budget (see :data:`SIGNIFICANCE_TEST`).
* :func:`budget_label`, :func:`budget_statement`, :func:`budget_lines` and :func:`stopped_notes`
  say which training budget each comparison holds and which settings stopped before it.

Runs with different training budgets (``budget_unit`` and ``budget``: so many steps, epochs,
samples or tokens) are different settings: they are never pooled, and settings are compared
(best setting, full fine-tuning baseline, Pareto front) only within one model, task and budget.

The package's rooms, each importing only those above it:

* :mod:`~peftbench.report.load`: reading ``runs.csv`` (torn tail, malformed rows, column types
  from :class:`peftbench.record.RunRecord`);
* :mod:`~peftbench.report.groups`: what a setting is (grouping keys, labels, budgets);
* :mod:`~peftbench.report.stats`: confidence intervals, Welch tests, the Pareto front;
* :mod:`~peftbench.report.compare`: the comparison table and the failed runs;
* :mod:`~peftbench.report.build`: a filtered, sorted :class:`Report` of a results directory;
* :mod:`~peftbench.report.cells`: how values read to people;
* :mod:`~peftbench.report.budget`: the budget statements and stopped-early notes;
* :mod:`~peftbench.report.display`: headers, rows, notes and the text grid every format shares;
* :mod:`~peftbench.report.plots`, :mod:`~peftbench.report.html`, :mod:`~peftbench.report.formats`:
  the figures, the HTML page, and text, Markdown, CSV and LaTeX;
* :mod:`~peftbench.report.answers`: did each setting learn, was the machine busy, which rank, what
  was forgotten, what is cheapest (issue 14; columns added to the comparison);
* :mod:`~peftbench.report.summary`: those answers in sentences ("Which method?") and small tables;
* :mod:`~peftbench.report.interactive`: the HTML page's Plotly figures, loss curves included;
* :mod:`~peftbench.report.defaults`: each method's shipped defaults, for labels of what differs;
* :mod:`~peftbench.report.terminal`: the default text report, key columns in 120 characters;
* :mod:`~peftbench.report.sweep_table`: one sweep's table for the end of a multirun;
* :mod:`~peftbench.report.wandb_table`: a sweep's comparison logged to Weights & Biases;
* :mod:`~peftbench.report.workspace`: a sweep's wandb workspace view, built from code;
* :mod:`~peftbench.report.cli`: the command line.

The report imports no torch, and matplotlib, scipy and wandb only when a plot is drawn, a test
is run or a table is logged, so it stays fast on large sweeps.
"""

from __future__ import annotations

from peftbench.report.answers import (
    CONTENTION_MARK,
    DID_NOT_LEARN_MARK,
    did_not_learn,
    rank_sweeps,
    setting_answers,
)
from peftbench.report.budget import budget_lines, budget_statement, stopped_notes
from peftbench.report.build import SORT_ALIASES, Report, build_report, resolve_sort_column
from peftbench.report.cells import STOPPED_MARK, budget_label, human_bytes, human_count
from peftbench.report.cli import main
from peftbench.report.compare import (
    BASELINE_METHOD,
    COMPARISON_COLUMNS,
    FAILED_COLUMNS,
    comparison_table,
    failed_runs,
)
from peftbench.report.defaults import method_defaults, short_setting_label
from peftbench.report.display import (
    CI_HEADER,
    DISPLAY_HEADERS,
    FAILED_HEADERS,
    NOTES,
    VS_BEST_HEADER,
    display_rows,
)
from peftbench.report.formats import (
    FORMATS,
    latex_escape,
    render,
    render_csv,
    render_failed_csv,
    render_latex,
    render_markdown,
    render_text,
)
from peftbench.report.groups import BUDGET_KEYS, COMPARE_KEYS, GROUP_KEYS, SETTING_KEYS, setting_label
from peftbench.report.html import render_html
from peftbench.report.interactive import figures as interactive_figures
from peftbench.report.interactive import loss_curves
from peftbench.report.load import (
    BOOL_COLUMNS,
    DATETIME_COLUMNS,
    FLOAT_COLUMNS,
    INT_COLUMNS,
    REPORT_COLUMNS,
    RUN_COLUMNS,
    RUNS_FILENAME,
    RunsFileWarning,
    load_runs,
)
from peftbench.report.plots import METHOD_COLORS, PLOT_TITLES, method_color, render_plots, save_plots
from peftbench.report.stats import ALPHA, CI_LEVEL, SIGNIFICANCE_TEST, VS_BEST, pareto_front, significance
from peftbench.report.summary import ANSWER_NOTES, answer_sections, which_method
from peftbench.report.sweep_table import SWEEP_HEADERS, format_sweep_table
from peftbench.report.terminal import render_terminal
from peftbench.report.wandb_table import WANDB_TABLE_COLUMNS, log_sweep_to_wandb
from peftbench.report.workspace import build_workspace, save_workspace

__all__ = [
    "interactive_figures",
    "ALPHA",
    "ANSWER_NOTES",
    "CONTENTION_MARK",
    "DID_NOT_LEARN_MARK",
    "answer_sections",
    "did_not_learn",
    "rank_sweeps",
    "setting_answers",
    "which_method",
    "BASELINE_METHOD",
    "BOOL_COLUMNS",
    "BUDGET_KEYS",
    "CI_HEADER",
    "CI_LEVEL",
    "COMPARE_KEYS",
    "COMPARISON_COLUMNS",
    "DATETIME_COLUMNS",
    "DISPLAY_HEADERS",
    "FAILED_COLUMNS",
    "FAILED_HEADERS",
    "FLOAT_COLUMNS",
    "FORMATS",
    "GROUP_KEYS",
    "INT_COLUMNS",
    "METHOD_COLORS",
    "NOTES",
    "PLOT_TITLES",
    "REPORT_COLUMNS",
    "RUNS_FILENAME",
    "RUN_COLUMNS",
    "Report",
    "RunsFileWarning",
    "SETTING_KEYS",
    "SIGNIFICANCE_TEST",
    "SORT_ALIASES",
    "STOPPED_MARK",
    "SWEEP_HEADERS",
    "VS_BEST",
    "VS_BEST_HEADER",
    "WANDB_TABLE_COLUMNS",
    "budget_label",
    "budget_lines",
    "budget_statement",
    "build_report",
    "comparison_table",
    "display_rows",
    "failed_runs",
    "format_sweep_table",
    "human_bytes",
    "human_count",
    "latex_escape",
    "load_runs",
    "log_sweep_to_wandb",
    "main",
    "method_color",
    "pareto_front",
    "render",
    "render_terminal",
    "loss_curves",
    "build_workspace",
    "save_workspace",
    "method_defaults",
    "short_setting_label",
    "render_csv",
    "render_failed_csv",
    "render_html",
    "render_latex",
    "render_markdown",
    "render_plots",
    "render_text",
    "resolve_sort_column",
    "save_plots",
    "setting_label",
    "significance",
    "stopped_notes",
]
