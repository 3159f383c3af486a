"""The report's output on a fixed runs file equals the output stored before the report was split.

``tests/data/report_golden/runs.csv`` (written by ``make_runs.py`` there: several methods and seeds,
two budgets, a run without a budget, an early stop, a failed and a cancelled run, two sweeps and a
search) is rendered in every format, through the library and through the command line, and
compared with ``tests/data/report_golden/expected/``. Those files were produced by
``make_expected.py`` with the single-module report (``peftbench/report.py`` at commit a8c749c),
before it became a package, and are not edited by hand: a difference here is a change of the
report's behaviour.

Two parts of the output are not fixed and are compared with care:

* the HTML page says when it was generated: that timestamp is replaced by ``<time>`` on both sides
  (:func:`normalise`), and the page is rendered without its plots (PNG bytes depend on the
  matplotlib version; the plots have their own tests in ``test_report_html.py``);
* CSV cells are compared as numbers where they are numbers, to 1e-12 relative (the p-values come
  from scipy and may differ in the last digit between versions); the columns and every other cell
  must be equal.

Three changes are deliberate: the column types now come from ``RunRecord`` (:data:`RETYPED`); the
text report keeps every column only with ``--wide`` (``wide=True``), as the stored text files were
rendered, the default text report fitting 120 columns (``test_report_terminal.py``); and the
confidence-interval note says that intervals are clipped to their metric's range, a clause removed
before comparing (:func:`without_ci_clipping_note`; the stored runs' intervals all lie within range,
so no number changes).
"""

from __future__ import annotations

import csv
import io
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from peftbench.report import (
    REPORT_COLUMNS,
    build_report,
    comparison_table,
    format_sweep_table,
    load_runs,
    main,
    render,
    render_failed_csv,
)

GOLDEN = Path(__file__).resolve().parent / "data" / "report_golden"
EXPECTED = GOLDEN / "expected"
SWEEP_A = "multirun-2026-11-20-1a2b3c"
SWEEP_B = "multirun-2026-11-21-4d5e6f"


def _dtypes(results: str) -> str:
    # Columns the record gained after the golden file was written are typed by the record (checked in
    # test_report_package.py), not here: the full load is compared on the golden file's own columns.
    header = set((Path(results) / "runs.csv").read_text().splitlines()[0].split(","))
    lines = ["# load_runs(all columns)"]
    lines.extend(f"{name}\t{dtype}" for name, dtype in load_runs(results).dtypes.items() if name in header)
    lines.append("# load_runs(REPORT_COLUMNS)")
    lines.extend(f"{name}\t{dtype}" for name, dtype in load_runs(results, columns=REPORT_COLUMNS).dtypes.items())
    lines.append("# comparison_table")
    lines.extend(f"{name}\t{dtype}" for name, dtype in comparison_table(load_runs(results)).dtypes.items())
    return "\n".join(lines) + "\n"


CASES: dict[str, Callable[[str], str]] = {
    "text.txt": lambda results: render(build_report(results), "text", wide=True),
    "markdown.md": lambda results: render(build_report(results), "markdown"),
    "comparison.csv": lambda results: render(build_report(results), "csv"),
    "failed.csv": lambda results: render_failed_csv(build_report(results)),
    "latex.tex": lambda results: render(build_report(results), "latex"),
    "report.html": lambda results: render(build_report(results), "html", plots={}),
    "text_include_search.txt": lambda results: render(build_report(results, include_search=True), "text", wide=True),
    "text_lora_sweep_a_by_score.txt": lambda results: render(
        build_report(results, methods="lora", sweeps=SWEEP_A, sort="score", descending=True), "text", wide=True
    ),
    "sweep_a.txt": lambda results: format_sweep_table(results, SWEEP_A),
    "sweep_b.txt": lambda results: format_sweep_table(results, SWEEP_B),
    "dtypes.txt": _dtypes,
}
"""Expected file name -> how it is rendered from the results directory (the current directory)."""

RETYPED = {
    "best_score": "float64",
    "best_step": "Int64",
    "train_flops_per_token": "Int64",
    "achieved_flops_per_s": "float64",
    "mfu": "float64",
    "infer_latency_ms": "float64",
    "infer_latency_merged_ms": "float64",
    "checkpoint_bytes": "Int64",
}
"""Columns that the single-module report read as text, being missing from its hand-kept lists of
typed columns, and that :func:`load_runs` types since the types come from ``RunRecord``
(:func:`peftbench.record.column_types`). Every other type in ``dtypes.txt`` is as stored."""

CLI = {
    "text.txt": ["--format", "text", "--wide"],
    "markdown.md": ["--format", "markdown"],
    "comparison.csv": ["--format", "csv"],
    "latex.tex": ["--format", "latex"],
    "report.html": ["--format", "html", "--no-plots"],
    "text_include_search.txt": ["--include-search", "--wide"],
    "text_lora_sweep_a_by_score.txt": ["--method", "lora", "--sweep", SWEEP_A, "--sort", "score", "--desc", "--wide"],
}
"""Expected file name -> the command-line arguments that print the same document."""


def normalise(name: str, text: str) -> str:
    """Replaces what is not fixed from one rendering to the next (the HTML page's timestamp)."""
    if name.endswith(".html"):
        text, count = re.subn(r"Generated \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\.", "Generated <time>.", text)
        assert count == 1, "the page should say once when it was generated"
    return text


def without_layout(text: str) -> str:
    """The page without its layout: its style sheet and the boxes that let wide tables scroll (changed
    on purpose for a 1280 px window, checked in a browser by test_report_page.py); the content is compared."""
    text = re.sub(r"<style>.*?</style>", "<style></style>", text, flags=re.S)
    return text.replace('<div class="scroll">', "").replace("</table></div>", "</table>")


def retyped(dtypes: str) -> str:
    """The stored ``dtypes.txt`` with the :data:`RETYPED` columns of the full load as they are read now."""
    lines = dtypes.splitlines()
    full = lines[: lines.index("# load_runs(REPORT_COLUMNS)")]
    for name, dtype in RETYPED.items():
        position = full.index(f"{name}\tstr")  # each was read as text before
        lines[position] = f"{name}\t{dtype}"
    return "\n".join(lines) + "\n"


def without_ci_clipping_note(text: str) -> str:
    """The document without the clause, added on purpose, that says the printed intervals are clipped
    to their metric's range (the stored runs' intervals all lie within it; test_report_audit.py)."""
    import html

    from peftbench.report import latex_escape
    from peftbench.report.display import CI_CLIPPED_NOTE

    for variant in (CI_CLIPPED_NOTE, html.escape(CI_CLIPPED_NOTE), latex_escape(CI_CLIPPED_NOTE)):
        text = text.replace(variant, "")
    return text


def assert_same(name: str, actual: str, expected: str) -> None:
    if not name.endswith(".csv"):
        actual = without_ci_clipping_note(actual)
    if name == "dtypes.txt":
        expected = retyped(expected)
    if name.endswith(".html"):
        actual, expected = without_layout(actual), without_layout(expected)
    if name.endswith(".csv"):
        _assert_same_csv(actual, expected)
    else:
        assert actual == expected


def _assert_same_csv(actual: str, expected: str) -> None:
    got = list(csv.reader(io.StringIO(actual)))
    want = list(csv.reader(io.StringIO(expected)))
    assert got[0] == want[0], "the CSV columns changed"
    assert len(got) == len(want)
    for row, (a, b) in enumerate(zip(got[1:], want[1:], strict=True), start=1):
        assert len(a) == len(b)
        for column, x, y in zip(want[0], a, b, strict=True):
            if x == y:
                continue
            try:
                same = math.isclose(float(x), float(y), rel_tol=1e-12)
            except ValueError:
                same = False
            assert same, f"row {row}, {column}: {x!r} != {y!r}"


@pytest.fixture()
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A copy of the fixed runs file as ``./runs.csv``, so the report names the same source everywhere."""
    shutil.copy(GOLDEN / "runs.csv", tmp_path / "runs.csv")
    monkeypatch.chdir(tmp_path)
    return "."


def test_expected_outputs_are_there_and_not_trivial() -> None:
    assert sorted(p.name for p in EXPECTED.iterdir()) == sorted(CASES)
    text = {name: (EXPECTED / name).read_text(encoding="utf-8") for name in CASES}
    for name, content in text.items():
        assert len(content) > 300 and len(content.splitlines()) >= 3, name
    for method in ("full", "lora", "ia3", "houlsby", "prefix"):
        assert f"\n{method} " in text["text.txt"], method
    assert len(list(csv.DictReader(io.StringIO(text["comparison.csv"])))) == 12
    assert [row["status"] for row in csv.DictReader(io.StringIO(text["failed.csv"]))] == ["cancelled", "failed"]
    assert text["report.html"].count("<tr") == 1 + 12 + 1 + 2 and "<img" not in text["report.html"]
    assert "Warning:" in text["sweep_a.txt"] and "120/150†" in text["sweep_a.txt"]
    assert "lr=0.003" in text["text_include_search.txt"] and "lr=0.003" not in text["text_lora_sweep_a_by_score.txt"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_library_output_equals_the_stored_output(results: str, name: str) -> None:
    expected = (EXPECTED / name).read_text(encoding="utf-8")
    assert_same(name, normalise(name, CASES[name](results)), expected)


@pytest.mark.parametrize("name", sorted(CLI))
def test_command_line_prints_the_stored_output(
    results: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([results, *CLI[name]]) == 0
    expected = (EXPECTED / name).read_text(encoding="utf-8")
    assert_same(name, normalise(name, capsys.readouterr().out), expected)
