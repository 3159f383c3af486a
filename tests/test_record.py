"""The run record and runs.csv: columns, empty cells, concurrent appends, schema changes."""

from __future__ import annotations

import csv
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from peftbench.record import CSV_COLUMNS, RunRecord, append_csv_row

REQUIRED = ("run_id, sweep_id, status, method, model, task, seed, rank, trainable_params, total_params, "
            "trainable_pct, peak_gpu_mem_bytes, peak_rss_bytes, train_samples_per_s, train_tokens_per_s, "
            "train_time_s, score, metric, device, torch_version, transformers_version, git_sha, config_json").split(", ")


def test_csv_has_every_required_column():
    assert set(REQUIRED) <= set(CSV_COLUMNS)
    assert "loss_curve" not in CSV_COLUMNS


def test_values_that_do_not_apply_are_empty_cells(tmp_path):
    record = RunRecord(method="full", seed=0)
    record.close()
    row = record.to_row()
    assert row["rank"] == "" and row["peak_gpu_mem_bytes"] == "" and row["status"] == "success"
    append_csv_row(tmp_path / "runs.csv", row)
    (read,) = csv.DictReader(open(tmp_path / "runs.csv"))
    assert read["rank"] == "" and read["method"] == "full" and read["seed"] == "0"


def test_failed_record_keeps_the_error():
    record = RunRecord()
    try:
        raise FloatingPointError("loss became nan")
    except FloatingPointError as err:
        record.fail(err)
    record.close()
    assert record.status == "failed"
    assert record.error == "FloatingPointError: loss became nan"
    assert "Traceback" in record.traceback


def _append_many(path: str, worker: int, n: int) -> None:
    for i in range(n):
        append_csv_row(Path(path), {"run_id": f"{worker}-{i}", "status": "success", "config_json": "x" * 300})


def test_concurrent_appends_never_interleave_or_lose_rows(tmp_path):
    path = tmp_path / "runs.csv"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 200)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 1600
    assert len({r["run_id"] for r in rows}) == 1600
    assert all(r["config_json"] == "x" * 300 and r["status"] == "success" for r in rows)


def test_new_columns_extend_an_old_file_without_losing_values(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("run_id,score\nold,0.5\n")
    append_csv_row(path, {"run_id": "new", "score": "0.7", "status": "success"})
    rows = list(csv.DictReader(open(path)))
    assert rows[0] == {"run_id": "old", "score": "0.5", "status": ""}
    assert rows[1] == {"run_id": "new", "score": "0.7", "status": "success"}


def test_a_row_torn_by_a_crash_does_not_swallow_the_next_row(tmp_path):
    path = tmp_path / "runs.csv"
    append_csv_row(path, {"run_id": "a", "status": "success"})
    with open(path, "a") as f:
        f.write("b,succ")  # a writer killed mid-row
    append_csv_row(path, {"run_id": "c", "status": "success"})
    lines = path.read_text().splitlines()
    assert lines == ["run_id,status", "a,success", "b,succ", "c,success"]


def test_setting_key_is_the_run_key_without_the_seed():
    from peftbench.runner import describe

    def keys(**changes):
        config = {"method": {"name": "lora", "lr": 5e-4, "rank": 8}, "model": {"name": "m"}, "task": {"name": "t"},
                  "seed": 0, "train": {"steps": 150, "tokens": None}, "results_dir": "results"}
        for key, value in changes.items():
            config[key] = value
        record = RunRecord()
        describe(record, config)
        return record.run_key, record.setting_key

    base = keys()
    other_seed, other_dir = keys(seed=1), keys(results_dir="elsewhere")
    other_budget = keys(train={"steps": None, "tokens": 5000})
    assert other_seed[0] != base[0] and other_seed[1] == base[1]  # seeds of one setting
    assert other_dir == base  # where results go changes nothing
    assert other_budget[0] != base[0] and other_budget[1] != base[1]  # another budget: another setting


def test_wandb_config_carries_the_comparison_keys_and_the_budget():
    from peftbench.sinks import flat_config

    record = RunRecord(method="lora", seed=1, lr=5e-4, budget_unit="tokens", budget=5000.0, schedule="cosine",
                       warmup_ratio=0.1, setting_key="abc")
    flat = flat_config({"train": {"tokens": 5000, "steps": None}, "method": {"target_modules": ["q", "v"]}}, record)
    assert (flat["budget_unit"], flat["budget"], flat["schedule"], flat["warmup_ratio"]) == ("tokens", 5000.0,
                                                                                            "cosine", 0.1)
    assert flat["setting_key"] == "abc" and flat["train.tokens"] == 5000
    assert flat["method.target_modules"] == '["q", "v"]'  # lists as JSON text: wandb filters on them


def _append_one(path: str) -> None:
    append_csv_row(Path(path), {"run_id": "child", "status": "success"})


def test_appends_wait_for_a_posix_record_lock_held_elsewhere(tmp_path):
    """The lock is an fcntl record lock (the kind NFSv4 and Lustre with -o flock carry between
    machines), not flock: on Linux the two do not see each other, so a child's append blocking on a
    lockf held here shows which kind the append takes."""
    import fcntl
    import time

    path = tmp_path / "runs.csv"
    append_csv_row(path, {"run_id": "first", "status": "success"})
    fd = os.open(path, os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    child = mp.get_context("fork").Process(target=_append_one, args=(str(path),))
    child.start()
    time.sleep(1.0)
    assert child.is_alive(), "the append did not wait for the record lock"
    assert len(list(csv.DictReader(open(path)))) == 1
    fcntl.lockf(fd, fcntl.LOCK_UN)
    os.close(fd)
    child.join(30)
    assert child.exitcode == 0
    assert [r["run_id"] for r in csv.DictReader(open(path))] == ["first", "child"]


def test_a_filesystem_without_locks_is_refused_with_the_reason(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, cmd, *args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    with pytest.raises(OSError, match="flock. mount option"):
        append_csv_row(tmp_path / "runs.csv", {"run_id": "a"})
