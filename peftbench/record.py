"""One record per run, and the sinks that keep it: ``runs.csv``, a JSON file per run, wandb.

The CSV row is the record flattened. Rows are appended under an exclusive POSIX record lock
(``fcntl.lockf``, which NFSv3 through lockd, NFSv4 and Lustre mounted with ``-o flock`` carry to every
client, where ``flock`` may stay local to one machine) with a single positioned ``write`` of the whole
line at the end of the file as the lock holder sees it, so concurrent runs on any number of machines
never interleave and a crash cannot damage the rows already written.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import threading
import traceback
import typing
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STATUSES = ("success", "failed", "cancelled")
BUDGET_UNITS = ("steps", "epochs", "samples", "tokens")  # what ``budget_unit`` can be
COLUMN_TYPES = ("str", "int", "float", "bool", "datetime")  # what a CSV column holds (column_types)
STRATEGIES = ("ddp", "fsdp")  # train.strategy of a run on several processes; ``strategy`` is "single" on one


@dataclass
class RunRecord:
    """Everything known about one run. Fields that do not apply stay None (an empty CSV cell)."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    run_key: str = ""
    setting_key: str = ""  # run_key without the seed: runs with equal setting_key are seeds of one setting
    sweep_id: str = ""
    status: str = "running"
    error: str = ""
    started_at: str = field(default_factory=lambda: now_iso(), metadata={"column_type": "datetime"})
    finished_at: str = field(default="", metadata={"column_type": "datetime"})  # ISO 8601, as started_at
    method: str = ""
    model: str = ""
    task: str = ""
    seed: int | None = None
    rank: int | None = None
    lr: float | None = None
    method_settings: str = ""
    trainable_params: int | None = None
    total_params: int | None = None
    trainable_pct: float | None = None
    peak_gpu_mem_bytes: int | None = None
    peak_gpu_reserved_bytes: int | None = None
    peak_rss_bytes: int | None = None
    model_weight_bytes: int | None = None  # the model's parameters and buffers as stored (4-bit packed at their size)
    train_samples_per_s: float | None = None
    train_tokens_per_s: float | None = None
    train_time_s: float | None = None
    compile_time_s: float | None = None  # torch.compile's own compile time (train.compile=true), not in train_time_s' throughput
    stage_times_s: str = ""  # wall seconds of each stage of the run as JSON: {"setup": ..., "load": ..., "train": ...}
    precision: str = ""  # the precision training actually ran in: fp32, or bf16/fp16 autocast where the device supports it
    budget_unit: str = ""  # what the training budget counts: steps, epochs, samples or tokens
    budget: float | None = None  # how many of budget_unit (train.steps, .epochs, .samples or .tokens)
    budget_steps: int | None = None  # the optimizer steps the budget works out to (the schedule's length)
    train_steps: int | None = None  # optimizer steps taken (fewer than budget_steps if it stopped early)
    train_samples: int | None = None  # training examples seen
    train_tokens: int | None = None  # non-padding input tokens seen
    stopped_early: bool | None = None  # training ended before its budget was spent
    world_size: int = 1  # processes that trained the run together (torch.distributed ranks)
    strategy: str = "single"  # how they shared it: single (one process), ddp or fsdp
    stop_reason: str = ""  # why it stopped early: early_stopping, failed or cancelled
    schedule: str = ""  # learning-rate schedule after the warm-up: linear, cosine or constant
    warmup_ratio: float | None = None  # share of budget_steps with a linear warm-up
    eval_samples_per_s: float | None = None
    score: float | None = None
    metric: str = ""
    metrics_json: str = ""  # every metric value of the final evaluation, extra splits included
    eval_on: str = ""  # "eval" (the reported split) or "search" (a slice of the training split)
    scored_on: str = ""  # the split the score is computed on (a search slice with eval_on=search)
    best_score: float | None = None
    best_step: int | None = None
    final_train_loss: float | None = None
    train_flops_per_token: int | None = None
    achieved_flops_per_s: float | None = None
    mfu: float | None = None
    infer_latency_ms: float | None = None
    infer_latency_merged_ms: float | None = None
    checkpoint_bytes: int | None = None
    # Answers (issue 14; docs/answers.md). The learned update's spectrum (peftbench/spectrum.py): mean
    # over the changed weight matrices of the effective rank (Roy and Vetterli 2007) and of the stable
    # rank of W - W0; empty for methods that change no weight matrix (adapters, prefix tuning).
    update_effective_rank: float | None = None
    update_stable_rank: float | None = None
    # Forgetting (peftbench/forgetting.py): 1 - linear CKA of base vs tuned final hidden states on
    # the reference text; tuned - base per-token cross-entropy there (causal LMs); which text.
    representation_drift: float | None = None
    ref_loss_delta: float | None = None
    forgetting_reference: str = ""
    # Did it learn (peftbench/baseline.py): the majority-class predictor's score on the evaluation
    # split (classification), and the score before training (with train.eval_at_start).
    baseline_score: float | None = None
    zero_shot_score: float | None = None
    # How busy the machine was while training (peftbench/contention.py).
    load_avg_1m_start: float | None = None
    load_avg_1m_end: float | None = None
    cpu_count: int | None = None
    cpu_util: float | None = None  # process CPU time / (training wall time x torch threads), CPU runs
    gpu_other_mem_bytes: int | None = None  # device memory in use at the start not held by our allocator
    gpu_util_pct: float | None = None
    device: str = ""
    device_name: str = ""
    num_threads: int | None = None
    python_version: str = ""
    torch_version: str = ""
    transformers_version: str = ""
    git_sha: str = ""
    git_dirty: bool | None = None
    git_source: str = ""  # which repository git_sha describes: working_directory or peftbench_source
    hostname: str = ""
    package_versions: str = ""
    config_json: str = ""
    # Kept in the per-run JSON file, not in the CSV: (step, loss) of training, (step, score) of
    # the evaluations during training (``train.eval_every``) and at the end.
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    eval_curve: list[tuple[int, float]] = field(default_factory=list)
    # Per changed weight matrix: its update's spectrum (peftbench/spectrum.py, Spectrum.layers).
    update_spectrum: list[dict[str, Any]] = field(default_factory=list)
    # Why a changed weight's update is missing from update_spectrum ("" when none is): peft's Poly cannot merge.
    update_spectrum_note: str = ""
    # Also JSON only: each rank's own peak memory and throughput, in rank order, for a run on several
    # processes (the CSV holds the maximum memory and the summed throughput).
    per_rank: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, err: BaseException, status: str = "failed") -> None:
        self.status = status
        self.error = f"{type(err).__name__}: {err}".strip()
        self.traceback = "".join(traceback.format_exception(type(err), err, err.__traceback__))

    def close(self) -> None:
        if self.status == "running":
            self.status = "success"
        self.finished_at = now_iso()

    def to_row(self) -> dict[str, Any]:
        """The CSV row: every column but the curves and the per-rank figures; None becomes an empty cell."""
        return {name: _cell(getattr(self, name)) for name in CSV_COLUMNS}


JSON_ONLY = ("loss_curve", "eval_curve", "update_spectrum", "update_spectrum_note", "per_rank")  # kept in runs/<run_id>.json, not in the CSV
CSV_COLUMNS = [f.name for f in fields(RunRecord) if f.name not in JSON_ONLY]

_PYTHON_TYPES = {int: "int", float: "float", bool: "bool", str: "str"}


def column_types() -> dict[str, str]:
    """Each CSV column's type (one of :data:`COLUMN_TYPES`), read from :class:`RunRecord`'s annotations.

    ``int`` and ``int | None`` are ``"int"``, and so for float, bool and str. A field's
    ``column_type`` metadata overrides its annotation: ``started_at`` and ``finished_at`` are ISO 8601
    text, ``"datetime"``. Readers of the CSV (the report) type its columns from this, so a new field
    needs no second list.

    Returns:
        Column name -> type, in the order of :data:`CSV_COLUMNS`.

    Raises:
        TypeError: If a CSV column is annotated with anything but one of those types (or it or None).
    """
    hints = typing.get_type_hints(RunRecord)
    types = {}
    for f in fields(RunRecord):
        if f.name not in CSV_COLUMNS:
            continue
        kind = f.metadata.get("column_type")
        if kind is None:
            hint = hints[f.name]
            options = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
            kind = _PYTHON_TYPES.get(options[0]) if len(options) == 1 else None
        if kind not in COLUMN_TYPES:
            raise TypeError(f"RunRecord.{f.name}: a CSV column must be one of {COLUMN_TYPES}, not {f.type}")
        types[f.name] = kind
    return types


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


# POSIX record locks belong to the process, not to the file descriptor: two threads of one process
# would both "hold" it, and closing any descriptor of the file drops it. Threads take this first.
_THREAD_LOCK = threading.Lock()


def append_csv_row(path: Path, row: dict[str, Any]) -> None:
    """Appends ``row`` to the CSV at ``path``, writing the header if the file is new or empty.

    Safe from many processes on many machines sharing the file over NFS or Lustre: the row is written
    under an exclusive POSIX record lock (``fcntl.lockf`` over the whole file), at the end of the file
    as read after the lock is taken (taking the lock makes an NFS client revalidate its cached size,
    which ``O_APPEND`` alone does not), in one ``pwrite``, and flushed with ``fsync`` before the lock
    is released. A file written by an older version with other columns is rewritten once, under the
    lock, to the union of both column sets, so no recorded value is lost. The rewrite happens in place
    (other writers lock this inode) after a backup copy ``runs.csv.bak`` is safely on disk.

    Raises:
        OSError: the filesystem refuses POSIX locks (Lustre mounted without ``flock``, NFS without
            a lock manager); the message says so, and the run's JSON file is still written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCK:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd, path)
            try:
                _append_locked(fd, path, row)
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _lock(fd: int, path: Path) -> None:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)  # blocks until every other writer, on any client, is done
    except OSError as err:
        raise OSError(err.errno, f"cannot take a POSIX lock on {path} ({err.strerror}): rows could be lost "
                      "if several runs append at once, so none is appended. This filesystem does not support "
                      "fcntl record locks (Lustre needs the `flock` mount option, NFSv3 a running lockd); put "
                      "results_dir on a filesystem that does") from err


def _append_locked(fd: int, path: Path, row: dict[str, Any]) -> None:
    header = _read_header(fd)
    columns = list(row)
    if header and header != columns:
        if set(columns) <= set(header):
            columns = header
        else:
            columns = header + [c for c in columns if c not in header]
            _rewrite_with_columns(fd, path, columns)
    buffer = io.StringIO()
    if _ends_without_newline(fd):  # a row torn by a crash: start ours on a line of its own
        buffer.write("\n")
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    if not header:
        writer.writeheader()
    writer.writerow({c: row.get(c, "") for c in columns})
    data = buffer.getvalue().encode("utf-8")
    end = os.fstat(fd).st_size
    if os.pwrite(fd, data, end) != len(data):  # one write: a row is never split
        raise OSError(f"short write appending a row to {path}")
    os.fsync(fd)


def _ends_without_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


# Everything below reads through the locked descriptor: opening and closing the file a second time
# would release the process's POSIX lock (a lock belongs to the process and the inode).
def _read_header(fd: int) -> list[str]:
    first, offset = b"", 0
    while b"\n" not in first:
        chunk = os.pread(fd, 65536, offset)
        if not chunk:
            break
        first, offset = first + chunk, offset + len(chunk)
    return next(csv.reader([first.split(b"\n", 1)[0].decode("utf-8")]), [])


def _read_all(fd: int) -> str:
    size = os.fstat(fd).st_size
    data, offset = b"", 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        data, offset = data + chunk, offset + len(chunk)
    return data.decode("utf-8")


def _rewrite_with_columns(fd: int, path: Path, columns: list[str]) -> None:
    old_text = _read_all(fd)
    backup = path.with_suffix(path.suffix + ".bak")
    backup.write_text(old_text, encoding="utf-8")
    with open(backup, "rb") as f:
        os.fsync(f.fileno())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for old in csv.DictReader(io.StringIO(old_text)):
        writer.writerow({c: old.get(c, "") for c in columns})
    os.ftruncate(fd, 0)
    os.pwrite(fd, buffer.getvalue().encode("utf-8"), 0)
    os.fsync(fd)
    backup.unlink()


def write_json(path: Path, record: RunRecord) -> None:
    """The whole record, loss curve and traceback included, as ``runs/<run_id>.json``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(record)
    data["traceback"] = getattr(record, "traceback", "")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)
