"""Reading an offline wandb run back from its ``.wandb`` transaction log (protobuf records), for tests.

wandb 0.31 ships no Python reader for these files, so the layout is followed here.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

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


def history_rows(records) -> list[dict[str, object]]:
    """Each history record as one ``{key: value}`` row, ``_step`` included, in order."""
    return [_nested(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
