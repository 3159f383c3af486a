"""What a run tells the world while it goes: the one logging interface the training loop calls.

The loop calls :meth:`RunLogger.log_train` and :meth:`RunLogger.log_eval` and knows no sink: the
wandb sink (:class:`peftbench.wandb_live.WandbLogger`) implements the interface, and
:class:`NullLogger` stands in when wandb is disabled or failed to start. :func:`start_logger`
picks one; a sink's failure is a warning and the run goes on without it.
"""

from __future__ import annotations

import contextlib
import copy
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from peftbench.record import RunRecord


class RunLogger(Protocol):
    """Receives a run's progress as it happens; the step is the optimizer step."""

    def log_train(self, step: int, values: dict[str, float]) -> None:
        """Training values at ``step`` (``train/loss``, ``train/lr``, ``train/tokens_seen``...)."""

    def log_eval(self, step: int, values: dict[str, float]) -> None:
        """Metric values of an evaluation after ``step`` optimizer steps (0: before training), by
        metric name (``{"accuracy": 0.91}``)."""

    def finish(self, record: RunRecord) -> None:
        """The run is over (any status): keep the record, close the run. Called after the CSV row
        is written."""


class NullLogger:
    """Logs nothing: wandb is disabled, or it failed."""

    def log_train(self, step: int, values: dict[str, float]) -> None:
        pass

    def log_eval(self, step: int, values: dict[str, float]) -> None:
        pass

    def finish(self, record: RunRecord) -> None:
        pass


def start_logger(record: RunRecord, config: dict[str, Any], results_dir: Path) -> RunLogger:
    """The wandb run of this benchmark run, started now (unless ``wandb.mode=disabled``) on the
    sinks' background thread (:class:`InBackground`), so the run does not wait for wandb; on any
    failure a warning and a :class:`NullLogger`, so the run goes on without wandb."""
    from peftbench.sinks import wandb_mode

    wandb_cfg = config.get("wandb") or {}
    if wandb_mode(str(wandb_cfg.get("mode", "auto"))) == "disabled":
        return NullLogger()
    record, config = copy.deepcopy(record), copy.deepcopy(config)  # as they are now, for the thread
    return InBackground(lambda: _start_wandb(record, config, results_dir))


def _start_wandb(record: RunRecord, config: dict[str, Any], results_dir: Path) -> RunLogger:
    try:
        from peftbench.wandb_live import WandbLogger

        return WandbLogger.start(record, config, results_dir)
    except Exception as err:  # wandb is a convenience; the CSV row is what must not be lost
        warnings.warn(f"peftbench: wandb did not start for run {record.run_id}, the run goes on without it: "
                      f"{type(err).__name__}: {err}", stacklevel=2)
        return NullLogger()


class InBackground:
    """A :class:`RunLogger` whose calls run on the sinks' one background thread
    (:func:`peftbench.sinks.in_background`), in the order they were made: the start, every value,
    the finish. The run never waits for wandb's start-up, its network or its ``finish``; each run's
    finish comes before the next run's start (one thread), and :func:`peftbench.sinks.wait_for_sinks`
    (the sweep's summary, and the interpreter at exit) waits for the finish. Values and the record
    are copied when handed over, so what is sent is what the run had then."""

    def __init__(self, start: Callable[[], RunLogger]) -> None:
        from peftbench.sinks import in_background

        self._submit = in_background
        self._inner: RunLogger = NullLogger()
        self._submit(lambda: setattr(self, "_inner", start()))

    def log_train(self, step: int, values: dict[str, float]) -> None:
        values = dict(values)
        self._submit(lambda: self._inner.log_train(step, values))

    def log_eval(self, step: int, values: dict[str, float]) -> None:
        values = dict(values)
        self._submit(lambda: self._inner.log_eval(step, values))

    def finish(self, record: RunRecord) -> None:
        record = copy.deepcopy(record)
        self._submit(lambda: self._inner.finish(record), wait_at_end=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is, so it is recorded as cancelled and its wandb run finished
    as failed, as Ctrl-C does."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread (where Python's default
    would end the process at once, leaving no record and a wandb run that never finishes). A
    handler someone else installed (a cluster launcher's) is left alone."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated("SIGTERM: the run was terminated")

    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
