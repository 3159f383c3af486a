"""Reading ``runs.csv``: the torn last line of a crash, malformed rows, and each column's type.

The types come from the record (:func:`peftbench.record.column_types`): one schema for the CSV the
harness writes and the frame the report reads.

Everything above this room (grouping, statistics, rendering) takes the :class:`pandas.DataFrame`
that :func:`load_runs` returns.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from peftbench.record import CSV_COLUMNS, STATUSES, column_types

RUNS_FILENAME = "runs.csv"
"""Name of the file the harness appends to inside a results directory."""

_TYPES = column_types()
INT_COLUMNS = tuple(name for name, kind in _TYPES.items() if kind == "int")
"""Columns read as nullable ``Int64`` (float64 where a value is not whole): RunRecord's ``int`` fields."""
FLOAT_COLUMNS = tuple(name for name, kind in _TYPES.items() if kind == "float")
"""Columns read as ``float64``: RunRecord's ``float`` fields."""
BOOL_COLUMNS = tuple(name for name, kind in _TYPES.items() if kind == "bool")
"""Columns read as nullable ``boolean``: RunRecord's ``bool`` fields."""
DATETIME_COLUMNS = tuple(name for name, kind in _TYPES.items() if kind == "datetime")
"""Columns read as UTC timestamps: RunRecord's fields with ``column_type`` "datetime"."""

RUN_COLUMNS = tuple(CSV_COLUMNS)
"""The columns the harness writes, in order. Older files may lack some; newer ones may add more."""

REPORT_COLUMNS = (
    "run_id",
    "sweep_id",
    "status",
    "error",
    "started_at",
    "method",
    "model",
    "task",
    "seed",
    "rank",
    "lr",
    "method_settings",
    "trainable_params",
    "total_params",
    "trainable_pct",
    "peak_gpu_mem_bytes",
    "peak_rss_bytes",
    "train_samples_per_s",
    "train_tokens_per_s",
    "train_time_s",
    "budget_unit",
    "budget",
    "budget_steps",
    "train_steps",
    "train_samples",
    "train_tokens",
    "stopped_early",
    "stop_reason",
    "score",
    "metric",
    "final_train_loss",
    "device",
    "eval_on",
    "setting_key",
)
"""The subset of columns the report needs (reading fewer columns keeps large files fast)."""


class RunsFileWarning(UserWarning):
    """Something in ``runs.csv`` was skipped (a torn line, a malformed row, a duplicate run)."""


def runs_path(results_dir: str | os.PathLike[str]) -> Path:
    """The ``runs.csv`` of a results directory, or the CSV path itself."""
    path = Path(results_dir)
    if path.is_dir() or path.suffix.lower() != ".csv":
        path = path / RUNS_FILENAME
    return path


def _cut_torn_tail(data: bytes) -> tuple[bytes, bool]:
    """Drops a last record that a crash left unfinished.

    ``csv.DictWriter`` ends every record with a newline that is outside any quoted field, so a file
    is complete exactly when it ends with a newline and its quote characters are balanced. When it
    is not, the record after the last unquoted newline is torn. Only the tail is walked.
    """
    if not data:
        return data, False
    total_quotes = data.count(b'"')
    if data.endswith(b"\n") and total_quotes % 2 == 0:
        return data, False
    end = len(data)
    suffix_quotes = 0
    while True:
        pos = data.rfind(b"\n", 0, end)
        if pos < 0:
            return b"", True
        suffix_quotes += data.count(b'"', pos, end)
        if (total_quotes - suffix_quotes) % 2 == 0:
            return data[: pos + 1], True
        end = pos


def _to_int(values: pd.Series) -> pd.Series:
    numbers = values if values.dtype == "float64" else pd.to_numeric(values, errors="coerce")
    present = numbers.dropna()
    if len(present) and not bool((present % 1 == 0).all()):
        return numbers.astype("float64")
    return numbers.astype("Int64")


def to_bool(values: pd.Series) -> pd.Series:
    """Reads ``true``/``false`` (also ``1``/``0``, ``yes``/``no``) as a nullable boolean column."""
    lowered = values.str.strip().str.lower()
    mapping = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    return lowered.map(mapping).astype("boolean")


def load_runs(
    results_dir: str | os.PathLike[str] = "results",
    *,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Reads the runs recorded by the harness.

    The reader is tolerant: unknown extra columns are kept, missing optional columns are added
    empty, a last record torn by a crash is skipped with a :class:`RunsFileWarning`, and so are
    malformed rows (too many fields, or an unknown status).

    Args:
        results_dir: The results directory holding ``runs.csv`` (or the path of a CSV file).
        columns: Read only these columns (faster on large files); ``None`` reads all of them.
            Requested columns that the file lacks are added empty.

    Returns:
        One row per run, each column typed as :class:`peftbench.record.RunRecord` declares it:
        integer columns (``seed``, ``rank``, parameter counts, byte counts, ...) are nullable
        ``Int64``, measurements are ``float64`` (NaN where not applicable), ``started_at`` and
        ``finished_at`` are UTC timestamps, ``git_dirty`` and ``stopped_early`` are nullable boolean
        and the remaining columns (and unknown extra ones) are strings ("" where empty).

    Raises:
        FileNotFoundError: If there is no ``runs.csv`` at the given place.
    """
    path = runs_path(results_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no runs file at {path}")
    data, torn = _cut_torn_tail(path.read_bytes())
    if torn:
        warnings.warn(
            f"{path}: skipped a last line torn by an interrupted write", RunsFileWarning, stacklevel=2
        )
    wanted = None if columns is None else list(dict.fromkeys(columns))
    if re.search(rb"\S", data) is None:
        frame = pd.DataFrame({name: pd.Series(dtype="str") for name in (wanted or RUN_COLUMNS)})
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = _read_csv(data, wanted)
        bad = [w for w in caught if issubclass(w.category, pd.errors.ParserWarning)]
        for other in caught:
            if other not in bad:
                warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
        if bad:
            count = sum(str(w.message).count("Skipping line") or 1 for w in bad)
            warnings.warn(
                f"{path}: skipped {count} malformed line(s) with too many fields",
                RunsFileWarning,
                stacklevel=2,
            )
    return _typed(frame, wanted, str(path))


def _read_csv(data: bytes, wanted: list[str] | None) -> pd.DataFrame:
    """Parses the CSV bytes: numeric columns straight to float64 (fast), everything else as text."""
    usecols = None if wanted is None else (lambda name: name in wanted)
    numeric = {name: "float64" for name in INT_COLUMNS + FLOAT_COLUMNS}
    try:
        return pd.read_csv(
            io.BytesIO(data),
            dtype=defaultdict(lambda: str, numeric),
            keep_default_na=False,
            na_values=[""],
            on_bad_lines="warn",
            usecols=usecols,
            engine="c",
        )
    except ValueError:
        # A numeric column holds text somewhere: read everything as text, coerce in _typed.
        return pd.read_csv(
            io.BytesIO(data),
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            on_bad_lines="warn",
            usecols=usecols,
            engine="c",
        )


def _typed(frame: pd.DataFrame, wanted: list[str] | None, source: str) -> pd.DataFrame:
    frame = frame.copy()
    for name in wanted or RUN_COLUMNS:
        if name not in frame.columns:
            frame[name] = "success" if name == "status" else ""
    for name in frame.columns:
        column = frame[name]
        if column.dtype == object or isinstance(column.dtype, pd.StringDtype):
            if column.dtype != "str":
                column = column.astype("str")
            frame[name] = column.fillna("") if column.hasnans else column
    status = frame["status"].str.strip().str.lower()
    valid = status.isin(STATUSES)
    if not bool(valid.all()):
        warnings.warn(
            f"{source}: skipped {int((~valid).sum())} row(s) with a missing or unknown status",
            RunsFileWarning,
            stacklevel=3,
        )
        frame = frame[valid.to_numpy()]
        status = status[valid.to_numpy()]
    frame["status"] = status
    for name in INT_COLUMNS:
        if name in frame.columns:
            frame[name] = _to_int(frame[name])
    for name in FLOAT_COLUMNS:
        if name in frame.columns:
            if frame[name].dtype != "float64":
                frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    for name in DATETIME_COLUMNS:
        if name in frame.columns:
            frame[name] = pd.to_datetime(frame[name], utc=True, errors="coerce", format="ISO8601")
    for name in BOOL_COLUMNS:
        if name in frame.columns:
            frame[name] = to_bool(frame[name])
    return frame.reset_index(drop=True)
