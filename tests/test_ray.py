"""A sweep on Ray (hydra/launcher=ray, hydra-ray-launcher): rows equal the sequential sweep's.

The launcher starts a local Ray instance inside the sweep's process (2 CPUs, its own temporary
folder) and Ray stops it when that process exits; the test checks that no process of that instance
is left, and ends any that is.
"""

from __future__ import annotations

import csv
import shutil
import tempfile

import psutil
import pytest

from tests.conftest import run_cli
from tests.test_e2e import FAST

pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="needs hydra-ray-launcher: pip install 'peftbench[ray]'")


def _rows(results):
    path = results / "runs.csv"
    return list(csv.DictReader(open(path))) if path.exists() else []


def _summary(rows):
    return sorted((r["method"], r["seed"], r["status"], r["trainable_params"], round(float(r["score"]), 6))
                  for r in rows)


def _processes_of(instance_dir: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(instance_dir in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_ray_sweep_of_two_methods_and_two_seeds_equals_the_sequential_sweep(tiny_bert_dir, tmp_path):
    sweep = [f"model.name={tiny_bert_dir}", "method=lora,ia3", "seed=0,1", "wandb.mode=disabled", *FAST]
    sequential = run_cli([*sweep, f"results_dir={tmp_path / 'seq'}", "-m"], cwd=tmp_path)
    assert sequential.returncode == 0, sequential.stderr
    instance_dir = tempfile.mkdtemp(prefix="pbray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    on_ray_args = [*sweep, f"results_dir={tmp_path / 'ray'}", "hydra/launcher=ray", "hydra.launcher.ray.init.num_cpus=2",
                   f"+hydra.launcher.ray.init._temp_dir={instance_dir}", "-m"]
    try:
        on_ray = run_cli(on_ray_args, cwd=tmp_path, timeout=900)
        assert on_ray.returncode == 0, on_ray.stderr[-3000:]
        assert not _processes_of(instance_dir), "the sweep's Ray instance outlived it"
        seq_rows, ray_rows = _rows(tmp_path / "seq"), _rows(tmp_path / "ray")
        assert len(seq_rows) == len(ray_rows) == 4
        assert _summary(ray_rows) == _summary(seq_rows)
        assert all(r["status"] == "success" for r in ray_rows)
        (sweep_id,) = {r["sweep_id"] for r in ray_rows}  # the jobs carry the driver's sweep id
        assert f"Sweep {sweep_id}" in on_ray.stdout

        # Resume, as with joblib: every job finds its row and skips (the workers' "skipping" lines reach
        # the driver's stdout only asynchronously, so the rows are what is checked).
        again = run_cli(on_ray_args, cwd=tmp_path, timeout=900)
        assert again.returncode == 0, again.stderr[-3000:]
        assert _rows(tmp_path / "ray") == ray_rows
    finally:
        for proc in _processes_of(instance_dir):  # only this test's instance, found by its own folder
            proc.kill()
        shutil.rmtree(instance_dir, ignore_errors=True)
