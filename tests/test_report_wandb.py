"""log_sweep_to_wandb, run offline, read back from the run's own ``.wandb`` transaction log."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from peftbench.report import load_runs
from tests.test_report_data import known_runs, write_runs

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

from peftbench.report.wandb_table import WANDB_TABLE_COLUMNS, log_sweep_to_wandb  # noqa: E402

_BLOCK = 32 * 1024
_HEADER = 7  # per-record header: CRC-32 (4 bytes), length (2 bytes, little endian), type (1 byte)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _scan_with_wandb_datastore(path: Path) -> list[bytes] | None:
    """Uses wandb's own reader where this wandb version still ships it (older releases)."""
    try:
        from wandb.sdk.internal.datastore import DataStore  # type: ignore[import-not-found]
    except ImportError:
        return None
    store = DataStore()
    store.open_for_scan(str(path))
    records = []
    while (data := store.scan_data()) is not None:
        records.append(data)
    return records


def _scan_log(path: Path) -> list[bytes]:
    """Reads the records of a ``.wandb`` file (a LevelDB-style log of protobuf ``Record``s).

    wandb 0.31 no longer ships a Python reader (``wandb.sdk.internal.datastore`` is gone; the Go
    core writes the file), so this follows the same layout: a 7-byte file header (``:W&B``, the
    magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each with a 7-byte chunk header; a
    record is one FULL chunk or FIRST, MIDDLE..., LAST chunks; a block tail shorter than a chunk
    header is zero padding.
    """
    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a wandb transaction log"
    records: list[bytes] = []
    pending = b""
    pos = 7
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            records.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            records.append(pending + chunk)
            pending = b""
        else:  # zero padding at the end of a block
            pos += _BLOCK - pos % _BLOCK if pos % _BLOCK else 0
    return records


def _records(path: Path) -> list[wandb_internal_pb2.Record]:
    raw = _scan_with_wandb_datastore(path)
    if raw is None:
        raw = _scan_log(path)
    out = []
    for data in raw:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        out.append(record)
    return out


def _records_once_complete(path: Path, timeout_s: float = 60.0) -> list[wandb_internal_pb2.Record]:
    """Reads the log once wandb's core process has written the run's exit record.

    ``run.finish()`` can return before the separate core process has flushed the log to disk
    (seen under load on a 2-core machine), so poll for the final record rather than race it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        records = _records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _nested(items) -> dict[str, object]:
    """Flattens history/summary/config items into {"a.b": decoded JSON value}."""
    flat = {}
    for item in items:
        key = ".".join(item.nested_key) if item.nested_key else item.key
        flat[key] = json.loads(item.value_json)
    return flat


@pytest.fixture()
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, sub in (
        ("WANDB_DIR", "wandb-root"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_ARTIFACT_DIR", "artifacts"),
    ):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


def test_sweep_table_and_scatter_are_in_the_offline_run(offline: Path) -> None:
    results = offline / "results"
    write_runs(results, known_runs())
    runs = load_runs(results)
    sweep = runs[runs["sweep_id"] == "sweepA"]
    run_dir = offline / "wb"

    run_id = log_sweep_to_wandb(sweep, "sweepA", project="peftbench-test", mode="offline", dir=run_dir)

    files = list(run_dir.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1, list(run_dir.rglob("*"))
    records = _records_once_complete(files[0])
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "run" in kinds and "history" in kinds and "exit" in kinds

    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_id == run_id and run.job_type == "report" and run.run_group == "sweepA"
    assert run.project == "peftbench-test"

    history = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            history.update(_nested(record.history.item))
    assert history["comparison._type"] == "table-file"
    assert history["comparison.nrows"] == 5  # sweepA: full, lora r=8, lora r=16, ia3, houlsby
    assert history["failed_runs._type"] == "table-file" and history["failed_runs.nrows"] == 2

    # The table file the history points at holds the comparison rows.
    table_path = files[0].parent / "files" / history["comparison.path"]
    table = json.loads(table_path.read_text(encoding="utf-8"))
    assert table["columns"] == list(WANDB_TABLE_COLUMNS)
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    lora8 = next(r for r in rows if r["method"] == "lora" and r["rank"] == 8)
    assert lora8["score_mean"] == pytest.approx(0.89) and lora8["n_seeds"] == 3
    assert lora8["params_ratio"] == pytest.approx(100_000 / 22_000_000)
    houlsby = next(r for r in rows if r["method"] == "houlsby")
    assert houlsby["score_std"] is None  # one seed: no std, logged as null rather than NaN
    # Each setting's budget: these runs predate budget columns, so it is the 100 steps they trained.
    assert {(r["budget_unit"], r["budget"], r["budget_inferred"]) for r in rows} == {("steps", 100, True)}
    assert lora8["n_stopped_early"] == 0 and lora8["train_steps"] == 100

    # The scatter is a custom chart over that table: x = trainable_params, y = score_mean.
    config = {}
    for record in records:
        if record.WhichOneof("record_type") == "config":
            config.update(_nested(record.config.update))
    assert _nested(run.config.update)["budgets"] == ["100 steps"]
    scatter = config["_wandb.visualize.score_vs_params"]
    assert scatter["panel_config"]["stringSettings"]["title"] == (
        "Score vs trainable parameters (sweep sweepA, 100 steps)"
    )
    assert scatter["panel_config"]["panelDefId"] == "wandb/scatter/v0"
    assert scatter["panel_config"]["fieldSettings"] == {"x": "trainable_params", "y": "score_mean"}
