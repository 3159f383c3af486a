"""The report as a package: rooms of a readable size, imports in one direction, no torch, one schema."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from peftbench.record import CSV_COLUMNS, RunRecord, append_csv_row, column_types
from peftbench.report import load_runs

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "peftbench" / "report"
GOLDEN_RUNS = REPO / "tests" / "data" / "report_golden" / "runs.csv"
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.glob("*.py")):
        name = "peftbench.report" if path.stem == "__init__" else f"peftbench.report.{path.stem}"
        modules[name] = path
    assert len(modules) > 10, "the report package should be found"
    return modules


def _imported(node: ast.Import | ast.ImportFrom, module: str, known: set[str]) -> set[str]:
    """The report modules that one import statement of ``module`` imports."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative to the package (every module here is directly in it)
            package = "peftbench.report".split(".")
            base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
        # ``from peftbench.report import x`` imports the package, and the submodule x where there is one.
        targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return {name for name in targets if name in known}


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported (not those inside functions)."""
    found = []
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the report modules it imports at module level (where an import runs at import time)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            edges |= _imported(node, name, set(modules))
        graph[name] = edges - {name}
    return graph


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import circle of the graph (its modules in order, the first repeated at the end), or None."""
    on_path: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> list[str] | None:
        if module in on_path:
            return on_path[on_path.index(module) :] + [module]
        if module in done:
            return None
        on_path.append(module)
        for target in sorted(graph.get(module, ())):
            circle = visit(target)
            if circle:
                return circle
        on_path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        circle = visit(module)
        if circle:
            return circle
    return None


def test_no_report_module_is_over_600_lines() -> None:
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in _modules().items()}
    assert max(sizes.values()) <= MAX_LINES, {name: n for name, n in sizes.items() if n > MAX_LINES}


def test_report_modules_import_each_other_in_one_direction() -> None:
    circle = _circle(_graph())
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_report_modules_import_the_harness_only_at_module_level() -> None:
    """A function-level import of peftbench would hide a circle; only heavy libraries load lazily."""
    lazy = []
    for name, path in _modules().items():
        for function in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("peftbench")):
                    lazy.append(f"{name}.{function.name}: from {node.module}")
                elif isinstance(node, ast.Import) and any(a.name.startswith("peftbench") for a in node.names):
                    lazy.append(f"{name}.{function.name}: import")
    assert lazy == []


def test_the_circle_check_sees_the_imports_and_a_circle() -> None:
    """The graph has the edges it should and a circle is found, so the test above cannot pass vacuously."""
    graph = _graph()
    assert graph["peftbench.report.load"] == set()  # the bottom room imports no other
    assert "peftbench.report.groups" in graph["peftbench.report.stats"]
    assert "peftbench.report.plots" in graph["peftbench.report.html"]
    assert graph["peftbench.report.cli"] >= {"peftbench.report.build", "peftbench.report.formats"}
    assert set(_modules()) - {"peftbench.report", "peftbench.report.__main__"} <= graph["peftbench.report"]
    # A room that imported the package back (``from peftbench.report import ...``) would close a circle.
    graph["peftbench.report.load"] = {"peftbench.report"}
    assert _circle(graph) is not None
    tree = ast.parse("from peftbench.report import budget_label\nfrom . import cells\nimport peftbench.report.stats")
    found = set().union(*(_imported(node, "peftbench.report.plots", set(graph)) for node in tree.body))
    assert found == {"peftbench.report", "peftbench.report.cells", "peftbench.report.stats"}


def test_report_imports_neither_torch_nor_matplotlib_until_a_plot_is_drawn(tmp_path: Path) -> None:
    code = f"""
import sys
import peftbench.report
assert 'torch' not in sys.modules, 'import: torch'
from peftbench.report import FORMATS, build_report, format_sweep_table, render
report = build_report({str(GOLDEN_RUNS)!r})
for fmt in FORMATS:
    assert render(report, fmt, plots={{}}), fmt
assert format_sweep_table({str(GOLDEN_RUNS.parent)!r}, 'multirun-2026-11-20-1a2b3c')
for name in ('torch', 'matplotlib'):
    assert name not in sys.modules, 'render: ' + name
from peftbench.report import render_plots
assert render_plots(report.table)
assert 'matplotlib' in sys.modules and 'torch' not in sys.modules, 'plots'
print('ok')
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_column_types_cover_every_csv_column_from_the_record() -> None:
    types = column_types()
    assert list(types) == CSV_COLUMNS
    assert {name: types[name] for name in ("run_id", "seed", "score", "git_dirty", "started_at")} == {
        "run_id": "str",
        "seed": "int",
        "score": "float",
        "git_dirty": "bool",
        "started_at": "datetime",
    }
    annotations = {name: str(hint) for name, hint in RunRecord.__annotations__.items()}
    for name, kind in types.items():
        if kind in ("int", "float", "bool"):
            assert annotations[name].startswith(kind), name


SAMPLE_VALUES = {"int": 3, "float": 0.25, "bool": True, "str": "x", "datetime": "2026-11-20T10:00:00+00:00"}


@pytest.fixture(scope="module")
def golden_runs(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The golden runs, plus one row with a value in every column the record declares (columns added
    after the golden file was written are typed on that row)."""
    folder = tmp_path_factory.mktemp("typed")
    (folder / "runs.csv").write_bytes(GOLDEN_RUNS.read_bytes())
    values = {name: SAMPLE_VALUES[kind] for name, kind in column_types().items()}
    full = RunRecord(**{**values, "status": "success", "budget_unit": "steps"})
    append_csv_row(folder / "runs.csv", full.to_row())
    return load_runs(folder)


@pytest.mark.parametrize("name", CSV_COLUMNS)
def test_load_runs_types_each_column_as_the_record_declares(golden_runs: pd.DataFrame, name: str) -> None:
    dtype = golden_runs[name].dtype
    kind = column_types()[name]
    if kind == "int":
        assert dtype == "Int64"
    elif kind == "float":
        assert dtype == "float64"
    elif kind == "bool":
        assert dtype == "boolean"
    elif kind == "datetime":
        assert isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC"
    else:
        assert pd.api.types.is_string_dtype(dtype) and not golden_runs[name].isna().any()
    present = golden_runs[name] != "" if kind == "str" else golden_runs[name].notna()
    assert present.any(), f"{name} is empty in the golden file: its type is not checked on a value"
