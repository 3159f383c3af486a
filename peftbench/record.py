"""One record per run, and the sinks that keep it: ``runs.csv``, a JSON file per run, wandb.

The CSV row is the record flattened. Rows are appended under an exclusive file lock with a single
``write`` of the whole line, so concurrent runs never interleave and a crash cannot damage the rows
already written.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import traceback
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STATUSES = ("success", "failed", "cancelled")
BUDGET_UNITS = ("steps", "epochs", "samples", "tokens")  # what ``budget_unit`` can be


@dataclass
class RunRecord:
    """Everything known about one run. Fields that do not apply stay None (an empty CSV cell)."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    run_key: str = ""
    setting_key: str = ""  # run_key without the seed: runs with equal setting_key are seeds of one setting
    sweep_id: str = ""
    status: str = "running"
    error: str = ""
    started_at: str = field(default_factory=lambda: now_iso())
    finished_at: str = ""
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
    budget_unit: str = ""  # what the training budget counts: steps, epochs, samples or tokens
    budget: float | None = None  # how many of budget_unit (train.steps, .epochs, .samples or .tokens)
    budget_steps: int | None = None  # the optimizer steps the budget works out to (the schedule's length)
    train_steps: int | None = None  # optimizer steps taken (fewer than budget_steps if it stopped early)
    train_samples: int | None = None  # training examples seen
    train_tokens: int | None = None  # non-padding input tokens seen
    stopped_early: bool | None = None  # training ended before its budget was spent
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

    def fail(self, err: BaseException, status: str = "failed") -> None:
        self.status = status
        self.error = f"{type(err).__name__}: {err}".strip()
        self.traceback = "".join(traceback.format_exception(type(err), err, err.__traceback__))

    def close(self) -> None:
        if self.status == "running":
            self.status = "success"
        self.finished_at = now_iso()

    def to_row(self) -> dict[str, Any]:
        """The CSV row: every column but the loss curve; None becomes an empty cell."""
        return {name: _cell(getattr(self, name)) for name in CSV_COLUMNS}


CSV_COLUMNS = [f.name for f in fields(RunRecord) if f.name not in ("loss_curve", "eval_curve")]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def append_csv_row(path: Path, row: dict[str, Any]) -> None:
    """Appends ``row`` to the CSV at ``path``, writing the header if the file is new or empty.

    A file written by an older version with other columns is rewritten once, under the lock, to the
    union of both column sets, so no recorded value is lost. The rewrite happens in place (other
    writers hold this inode's lock) after a backup copy ``runs.csv.bak`` is safely on disk.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        header = _read_header(path)
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
        os.write(fd, buffer.getvalue().encode("utf-8"))  # one write: a row is never split
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _ends_without_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _read_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def _rewrite_with_columns(fd: int, path: Path, columns: list[str]) -> None:
    old_text = path.read_text(encoding="utf-8")
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
    os.write(fd, buffer.getvalue().encode("utf-8"))
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
