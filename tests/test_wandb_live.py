"""wandb live: the run starts with the benchmark run, streams training and evaluation values at the
optimizer step, ends with the record as summary, and a wandb failure or a SIGTERM loses nothing.
Offline runs are read back from their ``.wandb`` transaction log."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from peftbench import runner
from peftbench.sinks import wait_for_sinks
from tests.test_models import compose_run, one_torch_thread  # noqa: F401 (autouse)
from tests.wandb_log import _nested, _records_once_complete, history_rows

FAST = ["train.steps=6", "train.batch_size=8", "train.eval_size=16", "train.log_every=2", "train.eval_every=3",
        "train.eval_at_start=true", "train.measure_warmup_steps=0", "train.latency_batches=1"]


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _wandb_file(results: Path, run_id: str) -> Path:
    (path,) = results.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")
    return path


def test_an_offline_run_streams_while_it_trains(tiny_bert_dir, offline, monkeypatch):
    results = offline / "results"
    measure = runner.measure_inference

    def slow_measure(*args, **kwargs):  # the run goes on well after training: live rows come before
        time.sleep(2.0)
        return measure(*args, **kwargs)

    monkeypatch.setattr(runner, "measure_inference", slow_measure)
    cfg = compose_run([f"model.name={tiny_bert_dir}", f"results_dir={results}", "wandb.mode=offline", *FAST])
    record = runner.run(cfg, sweep_id="sw1")
    assert record.status == "success", record.error
    wait_for_sinks()  # wandb's calls run on the sinks' background thread
    records = _records_once_complete(_wandb_file(results, record.run_id))
    kinds = [r.WhichOneof("record_type") for r in records]

    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_id == record.run_id and run.run_group == "sw1" and run.job_type == "lora"
    started = run.start_time.seconds + run.start_time.nanos / 1e9
    # With the run, not after it: about a second on an idle machine; the margin is for a busy one.
    assert _epoch(record.started_at) <= started + 1 and started - _epoch(record.started_at) <= 15

    rows = history_rows(records)
    train = [r for r in rows if "train/loss" in r]
    evals = [r for r in rows if "eval/accuracy" in r]
    assert [r["_step"] for r in train] == [2, 4, 6]
    assert [r["_step"] for r in evals] == [0, 3, 6]
    assert [loss for _, loss in record.loss_curve] == pytest.approx([r["train/loss"] for r in train])
    assert [r["train/tokens_seen"] for r in train] == sorted(r["train/tokens_seen"] for r in train)
    assert train[-1]["train/tokens_seen"] == record.train_tokens
    assert all(r["train/samples_per_s"] > 0 and r["train/tokens_per_s"] > r["train/samples_per_s"] for r in train)
    assert train[0]["train/lr"] > train[1]["train/lr"] > train[2]["train/lr"] == 0  # linear decay to 0 at the end
    assert evals[-1]["eval/accuracy"] == pytest.approx(record.score)
    # Logged while training, seconds before the run ended (an after-the-fact log comes after finished_at).
    assert started <= train[0]["_timestamp"] <= _epoch(record.finished_at) - 1.0

    metrics = {r.metric.name or r.metric.glob_name for r in records if r.WhichOneof("record_type") == "metric"}
    assert {"train/tokens_seen", "eval/*"} <= metrics
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(_nested(r.summary.update))
    assert summary["score"] == pytest.approx(record.score) and summary["run_id"] == record.run_id
    assert "config_json" not in summary
    exit_record = next(r.exit for r in records if r.WhichOneof("record_type") == "exit")
    assert exit_record.exit_code == 0 and kinds.index("run") < kinds.index("history")
    row = next(csv.DictReader(open(results / "runs.csv")))
    assert row["run_id"] == record.run_id and row["status"] == "success"


class BrokenRun:
    """A wandb run whose logging breaks mid-run."""

    def __init__(self) -> None:
        self.summary, self.finished, self.logged = {}, [], 0

    def define_metric(self, *args, **kwargs) -> None:
        pass

    def log(self, values, step=None) -> None:
        self.logged += 1
        raise ConnectionError("wandb went away")

    def finish(self, exit_code=0) -> None:
        self.finished.append(exit_code)


def test_wandb_failing_at_start_or_mid_run_is_a_warning(tiny_bert_dir, offline, monkeypatch):
    import wandb

    def no_init(**kwargs):
        raise RuntimeError("no wandb today")

    monkeypatch.setattr(wandb, "init", no_init)
    cfg = compose_run([f"model.name={tiny_bert_dir}", f"results_dir={offline / 'a'}", "wandb.mode=offline", *FAST])
    with pytest.warns(UserWarning, match="wandb did not start .* goes on without it: RuntimeError: no wandb today"):
        record = runner.run(cfg)
        wait_for_sinks()  # the start failed on the background thread
    assert record.status == "success", record.error

    broken = BrokenRun()
    monkeypatch.setattr(wandb, "init", lambda **kwargs: broken)
    cfg = compose_run([f"model.name={tiny_bert_dir}", f"results_dir={offline / 'b'}", "wandb.mode=offline", *FAST])
    with pytest.warns(UserWarning, match=r"wandb failed \(log\) .* goes on without wandb: ConnectionError"):
        record = runner.run(cfg)
        wait_for_sinks()
    assert record.status == "success", record.error
    assert broken.logged == 1  # after the first failure nothing more is sent...
    assert broken.finished == [0] and broken.summary["score"] == record.score  # ...but the run is closed
    rows = list(csv.DictReader(open(offline / "b" / "runs.csv")))
    assert [r["status"] for r in rows] == ["success"]


class RecordingRun(BrokenRun):
    """A wandb run that keeps what it was sent, and on which thread."""

    def __init__(self) -> None:
        super().__init__()
        self.rows, self.threads = [], set()

    def log(self, values, step=None) -> None:
        self.threads.add(threading.current_thread().name)
        self.rows.append((step, dict(values)))


def test_the_run_does_not_wait_for_wandb_and_wandb_gets_everything_in_order(tiny_bert_dir, offline, monkeypatch):
    import wandb

    run = RecordingRun()

    def slow_init(**kwargs):  # an online start over a slow network
        time.sleep(3.0)
        return run

    monkeypatch.setattr(wandb, "init", slow_init)
    cfg = compose_run([f"model.name={tiny_bert_dir}", f"results_dir={offline}", "wandb.mode=online", *FAST])
    record = runner.run(cfg)
    assert record.status == "success", record.error
    assert json.loads(record.stage_times_s)["setup"] < 2.0  # the 3 s start was not waited for
    wait_for_sinks()
    assert run.finished == [0] and run.summary["score"] == record.score and run.summary["run_id"] == record.run_id
    steps = [step for step, _ in run.rows]
    assert steps == sorted(steps) and [s for s, v in run.rows if "train/loss" in v] == [2, 4, 6]
    assert [s for s, v in run.rows if "eval/accuracy" in v] == [0, 3, 6]
    assert run.threads and not any(name == threading.main_thread().name for name in run.threads)


def test_sigterm_records_the_run_as_cancelled_and_fails_its_wandb_run(tiny_bert_dir, offline):
    results = offline / "results"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "peftbench", f"model.name={tiny_bert_dir}", f"results_dir={results}",
         "wandb.mode=offline", "train.steps=100000", "train.batch_size=8", "train.log_every=1",
         "train.measure_warmup_steps=0"],
        cwd=offline, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("[train] step"):
                break
        time.sleep(3.0)  # some steps into training
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    assert proc.returncode == 143, out  # 128 + SIGTERM
    (row,) = list(csv.DictReader(open(results / "runs.csv")))
    assert row["status"] == "cancelled" and "SIGTERM" in row["error"], out
    assert f"peftbench: SIGTERM: run {row['run_id']} cancelled at step" in out and "Traceback" not in out
    assert row["stop_reason"] == "cancelled" and 0 < int(row["train_steps"]) < 100000
    records = _records_once_complete(_wandb_file(results, row["run_id"]))
    exit_record = next(r.exit for r in records if r.WhichOneof("record_type") == "exit")
    assert exit_record.exit_code == 1
    assert any("train/loss" in r for r in history_rows(records))
