"""The package's shape: shipped configs found through one helper, nothing generic installed at the
top level, no import cycles, rooms of a size a person can hold, provenance from the user's side."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from peftbench import provenance
from peftbench.resources import conf_dir, config_group, config_groups

REPO = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = {"peftbench": REPO / "peftbench", "peftbench.methods": REPO / "methods"}
MAX_LINES = 600


def project_modules() -> dict[str, Path]:
    """Every module of peftbench (the methods folder under its installed name peftbench.methods)."""
    modules = {}
    for package, root in SOURCE_ROOTS.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that ``name`` imports anywhere in its file (lazy imports included)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        for target in targets:
            # "from peftbench import methods" imports the module peftbench.methods
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def test_shipped_configs_are_found_through_the_helper():
    assert (conf_dir() / "config.yaml").is_file()
    assert {"method", "model", "task", "budget", "hydra"} <= set(config_groups())
    assert "lora" in config_group("method") and "minilm" in config_group("model")
    assert config_group("hydra/launcher") == ["ray", "slurm"]


def test_no_module_builds_paths_into_the_source_tree():
    """Shipped files are found through peftbench.resources, which works from a wheel too."""
    offenders = [str(p.relative_to(REPO)) for p in project_modules().values()
                 if ".parent.parent" in p.read_text() and p.name != "provenance.py"]
    assert offenders == []


def test_no_import_cycles():
    modules = project_modules()
    graph = {name: imports_of(name, path, set(modules)) for name, path in modules.items()}
    # A package's __init__ re-exporting its submodules is not a cycle with them.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    assert sum(map(len, graph.values())) > 20, "the import graph was not read"
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_module_is_over_600_lines():
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in project_modules().values()}
    assert len(sizes) > 20
    assert {k: v for k, v in sizes.items() if v > MAX_LINES} == {}


def test_methods_package_imports_nothing_of_the_harness():
    modules = project_modules()
    for name, path in modules.items():
        if name.startswith("peftbench.methods"):
            harness = {t for t in imports_of(name, path, set(modules)) if not t.startswith("peftbench.methods")}
            assert harness == set(), f"{name} imports {harness}"


def test_a_users_methods_folder_does_not_shadow_ours(tmp_path):
    """A research repository with its own ``methods/`` package: ``python -m peftbench`` still finds ours."""
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "__init__.py").write_text("raise ImportError('the user methods package')\n")
    (tmp_path / "conf").mkdir()  # and a conf/ folder of their own
    out = subprocess.run([sys.executable, "-m", "peftbench", "--cfg", "job", "method=ia3"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "name: ia3" in out.stdout


def test_a_users_config_dir_adds_options(tmp_path):
    """``--config-dir`` adds a folder of the user's own configs beside the shipped ones."""
    (tmp_path / "myconf" / "model").mkdir(parents=True)
    (tmp_path / "myconf" / "model" / "my-bert.yaml").write_text(
        "defaults:\n  - minilm\n  - _self_\nname: /data/models/my-bert\n")
    out = subprocess.run([sys.executable, "-m", "peftbench", "--config-dir", str(tmp_path / "myconf"),
                          "--cfg", "job", "model=my-bert"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "name: /data/models/my-bert" in out.stdout


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})


def test_git_state_describes_the_users_repository(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "exp.txt").write_text("a")
    _git(tmp_path, "add", "exp.txt")
    _git(tmp_path, "commit", "-q", "-m", "x")
    sha, dirty, source = provenance.git_state.__wrapped__(tmp_path)
    assert len(sha) == 40 and dirty is False and source == "working_directory"
    (tmp_path / "exp.txt").write_text("b")
    assert provenance.git_state.__wrapped__(tmp_path)[1] is True


def test_git_state_outside_a_repository(tmp_path, monkeypatch):
    """Outside any repository: peftbench's own checkout when it runs from one, else nothing; never
    site-packages."""
    sha, _, source = provenance.git_state.__wrapped__(tmp_path)
    if provenance._is_peftbench_checkout(provenance.SOURCE_DIR):
        assert source == "peftbench_source" and len(sha) == 40
    monkeypatch.setattr(provenance, "SOURCE_DIR", tmp_path / "site-packages")
    assert provenance.git_state.__wrapped__(tmp_path) == ("", None, "")
