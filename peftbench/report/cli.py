"""The ``peftbench-report`` command line (also ``python -m peftbench.report``)."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from peftbench.report.build import build_report, resolve_sort_column
from peftbench.report.compare import BASELINE_METHOD
from peftbench.report.formats import FORMATS, render, render_failed_csv
from peftbench.report.load import RunsFileWarning
from peftbench.report.plots import render_plots, save_plots
from peftbench.report.workspace import save_workspace

_EXTENSIONS = {
    ".txt": "text",
    ".md": "markdown",
    ".csv": "csv",
    ".tex": "latex",
    ".html": "html",
    ".htm": "html",
}


def _parser(prog: str = "peftbench-report") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Compare PEFT methods from the runs recorded in RESULTS_DIR/runs.csv.",
    )
    parser.add_argument(
        "results_dir", nargs="?", default="results", help="results directory (default: results)"
    )
    parser.add_argument("--model", action="append", help="keep only this model (repeatable)")
    parser.add_argument("--task", action="append", help="keep only this task (repeatable)")
    parser.add_argument("--method", action="append", help="show only this method (repeatable)")
    parser.add_argument("--sweep", action="append", help="keep only this sweep id (repeatable)")
    parser.add_argument(
        "--sort",
        metavar="COLUMN",
        help="sort by a comparison column or alias (score, params, memory, throughput, delta, ...)",
    )
    parser.add_argument("--desc", action="store_true", help="sort in descending order")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="output format (default: from the --output extension, else text)",
    )
    parser.add_argument("--output", "-o", metavar="PATH", help="write here instead of standard output")
    parser.add_argument("--wide", action="store_true",
                        help="text: every column and every setting (default: the key columns in 120 characters)")
    parser.add_argument("--wandb-workspace", action="store_true",
                        help="build and save the --sweep's wandb workspace view (needs a logged-in wandb)")
    parser.add_argument("--project", default="peftbench", help="--wandb-workspace: the wandb project")
    parser.add_argument("--entity", default=None, help="--wandb-workspace: the wandb entity (default: yours)")
    parser.add_argument("--plots-dir", metavar="DIR", help="also write the plots as PNG files into DIR")
    parser.add_argument("--no-plots", action="store_true", help="leave the plots out of the HTML page")
    parser.add_argument("--baseline", default=BASELINE_METHOD, help="method to compare with (default: full)")
    parser.add_argument(
        "--include-search",
        action="store_true",
        help="also compare the trials of learning-rate searches (scored on the search split)",
    )
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "peftbench-report") -> int:
    """Runs the ``peftbench-report`` command line (also ``peftbench report``).

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.
        prog: The command's name in its usage and help.

    Returns:
        The exit status: 0 on success, 1 when there is no runs file, 2 on a usage error. Error
        messages start with ``prog``; a :class:`RunsFileWarning` (a skipped line) is one line on
        standard error, ``<prog>: warning: ...``.
    """
    parser = _parser(prog)
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        default = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
            if issubclass(category, RunsFileWarning):  # what was skipped, said to people: one line
                print(f"{prog}: warning: {message}", file=sys.stderr)
            else:
                default(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        return _run(args, prog)


def _run(args: argparse.Namespace, prog: str) -> int:
    if args.wandb_workspace:
        if not args.sweep or len(args.sweep) != 1:
            print(f"{prog}: --wandb-workspace needs one --sweep <sweep id>", file=sys.stderr)
            return 2
        return save_workspace(args.results_dir, args.sweep[0], project=args.project, entity=args.entity)
    fmt = args.format
    if fmt is None:
        fmt = _EXTENSIONS.get(Path(args.output).suffix.lower(), "text") if args.output else "text"
    try:
        if args.sort is not None:
            resolve_sort_column(args.sort)
        report = build_report(
            args.results_dir,
            models=args.model,
            tasks=args.task,
            methods=args.method,
            sweeps=args.sweep,
            sort=args.sort,
            descending=args.desc,
            baseline_method=args.baseline,
            include_search=args.include_search,
            strict=True,
        )
    except FileNotFoundError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2

    plots: dict[str, bytes] | None = None
    if args.plots_dir or (fmt == "html" and not args.no_plots):
        plots = render_plots(report.table)
        if args.plots_dir:
            for path in save_plots(plots, args.plots_dir):
                print(f"wrote {path}", file=sys.stderr)
    if fmt == "html" and args.no_plots:
        plots = {}
    document = render(report, fmt, plots=plots, wide=args.wide)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(document, encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
        if fmt == "csv" and not report.failed.empty:
            failed_path = out.with_name(f"{out.stem}_failed.csv")
            failed_path.write_text(render_failed_csv(report), encoding="utf-8")
            print(f"wrote {failed_path} (failed or cancelled runs)", file=sys.stderr)
    else:
        sys.stdout.write(document)
    return 0
