"""Sweeps that scale out and never lose a result: parallel, cluster path, failures, resume, Ctrl-C."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from hydra import compose, initialize_config_dir

from peftbench.config import register_configs
from tests.conftest import REPO, run_cli
from tests.test_e2e import FAST


def _rows(results):
    path = results / "runs.csv"
    return list(csv.DictReader(open(path))) if path.exists() else []


def _summary(rows):
    return sorted((r["method"], r["seed"], r["trainable_params"], round(float(r["score"]), 6)) for r in rows)


def test_joblib_sweep_equals_the_sequential_sweep(tiny_bert_dir, tmp_path):
    sweep = [f"model.name={tiny_bert_dir}", "method=full,lora", "seed=0,1,2", "wandb.mode=offline", *FAST]
    sequential = run_cli([*sweep, f"results_dir={tmp_path / 'seq'}", "-m"], cwd=tmp_path)
    assert sequential.returncode == 0, sequential.stderr
    parallel = run_cli([*sweep, f"results_dir={tmp_path / 'par'}", "hydra/launcher=joblib",
                        "hydra.launcher.n_jobs=2", "-m"], cwd=tmp_path)
    assert parallel.returncode == 0, parallel.stderr
    seq_rows, par_rows = _rows(tmp_path / "seq"), _rows(tmp_path / "par")
    assert len(seq_rows) == len(par_rows) == 6
    assert _summary(seq_rows) == _summary(par_rows)
    assert len({r["sweep_id"] for r in par_rows}) == 1  # workers share the sweep's id
    # one wandb run per job, plus the sweep's comparison table logged at the end
    assert len(list((tmp_path / "par" / "wandb").glob("offline-run-*"))) == 7
    # each job's wandb run was finished (on the worker's background thread) before its worker went away
    from tests.wandb_log import _records_once_complete  # here: the module's CUDA test runs without wandb

    for row in par_rows:
        (log,) = (tmp_path / "par" / "wandb").glob(f"offline-run-*-{row['run_id']}/run-{row['run_id']}.wandb")
        records = _records_once_complete(log, timeout_s=20.0)
        assert [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"] == [0], row["run_id"]


def test_submitit_local_runs_two_jobs(tiny_bert_dir, tmp_path):
    proc = run_cli([f"model.name={tiny_bert_dir}", "rank=2,4", f"results_dir={tmp_path / 'r'}", "wandb.mode=disabled",
                    *FAST, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "-m"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rows = _rows(tmp_path / "r")
    assert sorted(r["rank"] for r in rows) == ["2", "4"]
    assert all(r["status"] == "success" for r in rows)


def test_slurm_launcher_config_composes():
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.array_parallelism > 1


def test_rerunning_a_killed_sweep_finishes_only_the_missing_runs(tiny_bert_dir, tmp_path):
    results = tmp_path / "r"
    args = [f"model.name={tiny_bert_dir}", "rank=2,4,8", f"results_dir={results}", "wandb.mode=disabled",
            *FAST, "-m"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "peftbench", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while len(_rows(results)) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-sweep, no chance to clean up
    proc.wait()
    first = _rows(results)
    assert 1 <= len(first) < 3, "the sweep should have been killed after its first run"

    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    rows = _rows(results)
    assert sorted(r["rank"] for r in rows) == ["2", "4", "8"]  # each run once, none repeated
    assert again.stdout.count("skipping") == len(first)
    assert rows[: len(first)] == first  # what was recorded is untouched

    forced = run_cli([a for a in args if not a.startswith(("rank=", "-m"))] + ["rank=2", "force=true"], cwd=tmp_path)
    assert forced.returncode == 0 and len(_rows(results)) == 4


def test_nan_loss_fails_the_run_and_it_is_recorded(tiny_bert_dir, tmp_path, monkeypatch):
    import peftbench.runner as runner

    real_build = runner.build_model

    def build_with_fault(*args, **kwargs):
        model, tokenizer = real_build(*args, **kwargs)
        forward = model.forward

        def nan_forward(**batch):
            out = forward(**batch)
            out.loss = out.loss * float("nan")  # an injected fault: the loss becomes NaN
            return out

        model.forward = nan_forward
        return model, tokenizer

    monkeypatch.setattr(runner, "build_model", build_with_fault)
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"model.name={tiny_bert_dir}", f"results_dir={tmp_path}",
                                           "wandb.mode=disabled", *FAST])
    record = runner.run(cfg)
    assert record.status == "failed"
    assert "FloatingPointError" in record.error and "nan" in record.error
    (row,) = _rows(tmp_path)
    assert row["status"] == "failed" and row["score"] == ""


def test_ctrl_c_records_the_run_as_cancelled(tiny_bert_dir, tmp_path):
    results = tmp_path / "r"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "peftbench", f"model.name={tiny_bert_dir}", f"results_dir={results}",
         "wandb.mode=disabled", "train.steps=100000", "train.log_every=1", "train.batch_size=8"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("[train]"):
            break
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130  # 128 + SIGINT, as a shell reports an interrupted command
    (row,) = _rows(results)
    assert row["status"] == "cancelled" and "KeyboardInterrupt" in row["error"]
    # One line says what happened, instead of the interrupt's traceback.
    assert "Traceback" not in err
    assert (f"peftbench: Ctrl-C: run {row['run_id']} cancelled at step {row['train_steps']} of 100000, recorded "
            f"as cancelled in {results}/runs.csv.") in err


@pytest.mark.cuda
def test_cuda_run_records_gpu_memory(tiny_bert_dir, tmp_path):
    assert torch.cuda.is_available()
    proc = run_cli([f"model.name={tiny_bert_dir}", f"results_dir={tmp_path}", "wandb.mode=disabled", "device=cuda",
                    *FAST], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (row,) = _rows(tmp_path)
    assert int(row["peak_gpu_mem_bytes"]) > 0 and row["device"].startswith("cuda")


def test_two_sweeps_started_together_keep_their_own_folders_and_ids(tiny_bert_dir, tmp_path):
    """Two sweeps launched at the same moment into one results_dir: each keeps its Hydra folder (whose
    overrides `peftbench.best` reads back) and its sweep id. Folder names go down to the microsecond,
    so they differ even when both sweeps start within the same second."""
    import yaml

    results = tmp_path / "results"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    procs = {method: subprocess.Popen(
        [sys.executable, "-m", "peftbench", f"model.name={tiny_bert_dir}", f"method={method}", "train.steps=2",
         "train.eval_size=16", "train.latency_batches=0", f"results_dir={results}", "wandb.mode=disabled", "-m"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for method in ("lora", "ia3")}
    for proc in procs.values():
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    folders = sorted((results / "hydra").iterdir())
    assert len(folders) == 2
    for folder in folders:
        assert re.fullmatch(r"sweep_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}", folder.name), folder.name
    methods_of = {f.name: yaml.safe_load((f / "multirun.yaml").read_text())["hydra"]["overrides"]["task"]
                  for f in folders}
    rows = _rows(results)
    assert len({r["sweep_id"] for r in rows}) == 2
    for row in rows:  # each row's sweep id names the folder that holds its own sweep's overrides
        from peftbench.best import sweep_dir_name

        assert f"method={row['method']}" in methods_of[sweep_dir_name(row["sweep_id"])]


def test_ray_launcher_config_composes_without_the_plugin():
    """conf/hydra/launcher/ray.yaml names the plugin's class itself, so it composes (and the config
    tests pass) where hydra-ray-launcher is not installed; running it needs the plugin."""
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=ray", "hydra.launcher.ray.remote.num_gpus=1"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert launcher.ray.init.address is None and launcher.ray.remote.num_gpus == 1
    assert launcher.ray.remote.num_cpus == 1
