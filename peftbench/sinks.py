"""Where a finished run's record goes: the CSV first (it must never be lost), then JSON, then wandb.

A run's own wandb run is live (:mod:`peftbench.live`: started with the run, streamed during
training) and is finished here with the record as its summary. A record without a live logger (a
caller of :func:`save_record` outside the runner) is written to wandb after the fact. Every wandb
call, live or after the fact, runs on one background thread, in the order made (one run finished
before the next one starts); :func:`wait_for_sinks` (called by the sweep's summary, and at
interpreter exit by ``concurrent.futures``) waits for them.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from peftbench.record import RunRecord, append_csv_row, write_json
from peftbench.wandb_live import flat_config, log_to_wandb, wandb_mode  # noqa: F401  (wandb's side, re-exported)

log = logging.getLogger("peftbench")


def save_record(record: RunRecord, results_dir: Path, config: dict[str, Any], wandb_cfg: dict[str, Any],
                logger: Any = None) -> None:
    """Writes the record to ``runs.csv``, ``runs/<run_id>.json`` and wandb, in that order.

    ``logger`` is the run's live logger (:func:`peftbench.live.start_logger`): the record goes to its
    wandb run's summary and the run is finished. Without one, a wandb run is made after the fact.
    A failure of the JSON file or of wandb is reported as a warning and never loses the CSV row.
    """
    try:
        append_csv_row(results_dir / "runs.csv", record.to_row())
    except OSError:  # a filesystem without locks: keep the JSON file at least, then say so
        write_json(results_dir / "runs" / f"{record.run_id}.json", record)
        raise
    _guarded("json", record.run_id, lambda: write_json(results_dir / "runs" / f"{record.run_id}.json", record))
    if logger is not None:  # the run's own live wandb run: its finish queued before the next run's start
        _guarded("wandb", record.run_id, lambda: logger.finish(record))
    elif wandb_mode(wandb_cfg.get("mode", "auto")) != "disabled":
        write = functools.partial(log_to_wandb, record, config, wandb_cfg, results_dir)
        in_background(lambda: _guarded("wandb", record.run_id, write), wait_at_end=True)


def _guarded(sink: str, run_id: str, call) -> None:
    try:
        call()
    except Exception as err:  # a sink's failure must not lose the run
        warnings.warn(f"peftbench: could not write run {run_id} to {sink}: {err}", stacklevel=2)


_worker: ThreadPoolExecutor | None = None
_pending: list[Future] = []


def _background() -> ThreadPoolExecutor:
    global _worker
    if _worker is None:
        _worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="peftbench-wandb")
    return _worker


def in_background(call: Callable[[], None], wait_at_end: bool = False) -> None:
    """Runs ``call`` on the one background thread, after every call handed over before it; with
    ``wait_at_end``, :func:`wait_for_sinks` waits for it (the calls before it are done by then too)."""
    future = _background().submit(call)
    if wait_at_end:
        _pending.append(future)


def wait_for_sinks() -> None:
    """Returns once every record handed to wandb so far is written and its wandb run finished (or
    its failure warned about): the live runs' (:class:`peftbench.live.InBackground`) and those
    written after the fact."""
    while _pending:
        _pending.pop(0).result()
