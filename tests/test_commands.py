"""``peftbench report`` and ``peftbench best``: the sub-commands of the ``peftbench`` command (and of
``python -m peftbench``), beside the Hydra runner that takes every other argument."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_report_data import known_runs, write_runs

CONSOLE_SCRIPT = Path(sys.executable).with_name("peftbench")


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    write_runs(tmp_path / "results", known_runs())
    return tmp_path / "results"


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_python_m_peftbench_report_is_the_report_and_loads_neither_hydra_nor_torch(results, tmp_path):
    done = _run([sys.executable, "-X", "importtime", "-m", "peftbench", "report", str(results)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"peftbench report — {results / 'runs.csv'}")
    assert "== model: " in done.stdout and "lora" in done.stdout
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "peftbench.report.cli" in imported
    assert not {"torch", "hydra", "transformers"} & imported, sorted({"torch", "hydra", "transformers"} & imported)


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="the peftbench console script is not installed here")
def test_the_console_script_runs_the_report_best_and_the_benchmark(results, tmp_path):
    report = _run([str(CONSOLE_SCRIPT), "report", str(results), "--format", "csv"], tmp_path)
    assert report.returncode == 0, report.stderr
    assert report.stdout.splitlines()[0].startswith("model,task,")

    # No search in these results: best says so (and names itself as it was called).
    best = _run([str(CONSOLE_SCRIPT), "best", str(results)], tmp_path)
    assert best.returncode in (1, 2) and best.stderr.startswith("peftbench.best:"), best.stderr
    usage = _run([str(CONSOLE_SCRIPT), "best", "--seeds"], tmp_path)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: peftbench best"), usage.stderr

    # Anything else is the Hydra runner's, as before.
    job = _run([str(CONSOLE_SCRIPT), "--cfg", "job", "method=ia3"], tmp_path)
    assert job.returncode == 0, job.stderr
    assert "name: ia3" in job.stdout
    typo = _run([str(CONSOLE_SCRIPT), "reprot", str(results)], tmp_path)
    assert typo.returncode == 2 and "unknown command 'reprot'. Did you mean 'report'?" in typo.stderr
    assert not list(tmp_path.glob("**/hydra"))  # refused before Hydra made a run folder


def test_a_bad_report_option_is_refused_with_the_sub_commands_name(tmp_path):
    done = _run([sys.executable, "-m", "peftbench", "report", "--sort"], tmp_path)
    assert done.returncode == 2 and "usage: peftbench report" in done.stderr


def test_the_help_names_the_sub_commands():
    done = _run([sys.executable, "-m", "peftbench", "--help"], REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("peftbench:")
    assert "peftbench report" in done.stdout and "peftbench best" in done.stdout
    # The groups a user chooses from, each with its options; not the internal schema/* groups.
    groups = done.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    names = [line.split(":")[0] for line in groups.splitlines() if ": " in line]
    assert names == ["budget", "method", "model", "task"]
    assert "lora, oft, peft" in groups and "schema/" not in done.stdout
    assert done.stdout.rstrip().endswith("Hydra's own options: --hydra-help.")
