"""Results report: compare PEFT methods across the runs recorded in ``runs.csv``.

The harness appends one row per run to ``<results_dir>/runs.csv``. This module reads that file,
groups the successful runs that differ only by their seed, and compares every setting with full
fine-tuning on the same model and task.

Command line::

    python -m peftbench.report [RESULTS_DIR] [--model M] [--task T] [--method X] [--sweep S]
                               [--sort COLUMN [--desc]] [--format text|markdown|csv|latex|html]
                               [--output PATH] [--plots-dir DIR] [--include-search]

Library API (names and signatures are kept stable):

* :func:`load_runs` reads ``runs.csv`` into a :class:`pandas.DataFrame` with typed columns.
* :func:`comparison_table` turns those runs into one row per (model, task, method, setting).
* :func:`failed_runs` lists the failed and cancelled runs.
* :func:`format_sweep_table` renders one sweep's runs as a compact plain-text table.
* :func:`significance` adds each setting's confidence interval and its comparison with the best
  setting of its model, task and training budget (see :data:`SIGNIFICANCE_TEST`).
* :func:`budget_label`, :func:`budget_statement`, :func:`budget_lines` and :func:`stopped_notes`
  say which training budget each comparison holds and which settings stopped before it.

Runs with different training budgets (``budget_unit`` and ``budget``: so many steps, epochs,
samples or tokens) are different settings: they are never pooled, and settings are compared
(best setting, full fine-tuning baseline, Pareto front) only within one model, task and budget.

This module deliberately imports neither torch nor matplotlib at import time; plots live in
:mod:`peftbench.report_plots` and are imported only when a plot is drawn.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import io
import json
import math
import os
import re
import sys
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peftbench.record import CSV_COLUMNS, STATUSES

__all__ = [
    "BASELINE_METHOD",
    "COMPARISON_COLUMNS",
    "FORMATS",
    "RUNS_FILENAME",
    "Report",
    "RunsFileWarning",
    "budget_label",
    "budget_lines",
    "budget_statement",
    "build_report",
    "comparison_table",
    "failed_runs",
    "format_sweep_table",
    "load_runs",
    "main",
    "pareto_front",
    "render",
    "significance",
    "stopped_notes",
]

RUNS_FILENAME = "runs.csv"
"""Name of the file the harness appends to inside a results directory."""

BASELINE_METHOD = "full"
"""Method that relative figures are computed against."""

CI_LEVEL = 0.95
"""Confidence level of each setting's interval for its mean score (Student's t, n - 1 df)."""

ALPHA = 0.05
"""Significance level of the comparison with the best setting."""

SIGNIFICANCE_TEST = "two-sided Welch t-test"
"""How each setting is compared with the best setting of its model and task."""

VS_BEST = ("best", "tied", "worse", "n/a")
"""Values of the ``vs_best`` column: the best setting (highest mean among those with at least 2
seeds), not distinguishable from it, significantly below it, or not testable (fewer than 2 seeds)."""

INT_COLUMNS = (
    "seed",
    "rank",
    "trainable_params",
    "total_params",
    "peak_gpu_mem_bytes",
    "peak_gpu_reserved_bytes",
    "peak_rss_bytes",
    "budget_steps",
    "train_steps",
    "train_samples",
    "train_tokens",
    "num_threads",
)
FLOAT_COLUMNS = (
    "lr",
    "trainable_pct",
    "train_samples_per_s",
    "train_tokens_per_s",
    "train_time_s",
    "budget",
    "warmup_ratio",
    "eval_samples_per_s",
    "score",
    "final_train_loss",
)
DATETIME_COLUMNS = ("started_at", "finished_at")
BOOL_COLUMNS = ("git_dirty", "stopped_early")

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

SETTING_KEYS = ("model", "task", "method", "rank", "method_settings", "lr")
"""What a setting is, its training budget aside."""

BUDGET_KEYS = ("budget_unit", "budget")
"""The training budget: what it counts (:data:`peftbench.record.BUDGET_UNITS`) and how many of them."""

GROUP_KEYS = (*SETTING_KEYS, *BUDGET_KEYS, "setting_key")
"""Runs that agree on all of these (and differ only by seed) form one comparison row: runs with
different budgets are different settings and are never pooled. ``setting_key`` (the hash of the
whole resolved config but the seed) also keeps apart runs that differ in any other key (batch size,
schedule, sequence length...); rows recorded before it existed have it empty and pool as before."""

COMPARE_KEYS = ("model", "task", *BUDGET_KEYS)
"""Settings are compared with each other (best setting, full fine-tuning baseline, Pareto front)
only within one model, task and budget."""

STOPPED_MARK = "†"
"""Appended to the score of a setting of which at least one seed stopped before its budget."""

COMPARISON_COLUMNS = (
    "model",
    "task",
    "method",
    "setting",
    "rank",
    "lr",
    "method_settings",
    "setting_key",
    "budget_unit",
    "budget",
    "budget_steps",
    "budget_inferred",
    "n_seeds",
    "seeds",
    "n_failed",
    "n_stopped_early",
    "stop_reason",
    "trainable_params",
    "total_params",
    "trainable_pct",
    "peak_mem_bytes",
    "mem_kind",
    "train_samples_per_s",
    "train_tokens_per_s",
    "train_time_s",
    "train_steps",
    "train_samples",
    "train_tokens",
    "stopped_steps",
    "score_mean",
    "score_std",
    "score_ci_low",
    "score_ci_high",
    "vs_best",
    "p_vs_best",
    "metric",
    "final_train_loss",
    "baseline_setting",
    "params_ratio",
    "mem_ratio",
    "throughput_ratio",
    "score_delta",
    "pareto",
)
"""Columns of :func:`comparison_table`, in order."""

FAILED_COLUMNS = (
    "run_id",
    "sweep_id",
    "status",
    "model",
    "task",
    "method",
    "setting",
    "seed",
    "started_at",
    "error",
)
"""Columns of :func:`failed_runs`, in order."""

FORMATS = ("text", "markdown", "csv", "latex", "html")
"""Output formats understood by :func:`render` and the command line."""

SORT_ALIASES = {
    "params": "trainable_params",
    "trainable": "trainable_params",
    "pct": "trainable_pct",
    "memory": "peak_mem_bytes",
    "mem": "peak_mem_bytes",
    "throughput": "train_tokens_per_s",
    "tokens": "train_tokens_per_s",
    "samples": "train_samples_per_s",
    "score": "score_mean",
    "std": "score_std",
    "seeds": "n_seeds",
    "delta": "score_delta",
    "p": "p_vs_best",
    "ci": "score_ci_low",
    "stopped": "n_stopped_early",
}
"""Short names accepted by ``--sort`` besides the column names of :data:`COMPARISON_COLUMNS`."""

NOTES = (
    "Score: mean ± sample standard deviation (ddof=1) over seeds; a setting with one seed has no std.",
    f"{CI_LEVEL:.0%} CI: confidence interval of the mean score over seeds, mean ± t(n-1) · std / √n "
    "(Student's t distribution); n/a with fewer than 2 seeds.",
    f"vs best: each setting against the best setting of its model, task and budget (the highest mean "
    f"among settings with at least 2 seeds) by a {SIGNIFICANCE_TEST} at alpha={ALPHA:g}: 'tied' = not "
    "distinguishable from the best, 'worse' = significantly below it (p-value shown), 'n/a' = fewer than "
    "2 seeds; each test is separate (no correction for multiple comparisons).",
    "Runs are grouped when they differ only by seed (same model, task, method, method settings, lr, "
    "training budget and every other config key: the runs' setting_key). Two settings that look alike "
    "but differ in another key (batch size, schedule...) get '(config <setting_key>)' after their label.",
    "Budget: the training budget each seed was given (steps, epochs, samples or tokens); settings with "
    "different budgets are never pooled, tested against each other or compared with each other's full "
    "fine-tuning. '?' = not recorded; runs recorded before budgets were get the optimizer steps they "
    "took as their budget.",
    f"{STOPPED_MARK} after a score: at least one seed stopped before its budget (early stopping); the "
    "note under the table says how many and after how many steps.",
    "Peak memory: peak GPU memory allocated where measured (GPU), else peak process RSS (RSS).",
    "'vs full' columns compare with full fine-tuning on the same model, task and budget (its best-scoring "
    "setting if there are several): parameters, memory and speed as ratios, score as a difference.",
    "Pareto: on the front of highest score and fewest trainable parameters for that model, task and budget.",
    "Failed and cancelled runs are listed separately and never included in the averages.",
)


class RunsFileWarning(UserWarning):
    """Something in ``runs.csv`` was skipped (a torn line, a malformed row, a duplicate run)."""


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _runs_path(results_dir: str | os.PathLike[str]) -> Path:
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


def _to_bool(values: pd.Series) -> pd.Series:
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
        One row per run. Integer columns (``seed``, ``rank``, parameter counts, byte counts, ...)
        are nullable ``Int64``, measurements are ``float64`` (NaN where not applicable),
        ``started_at``/``finished_at`` are UTC timestamps, ``git_dirty`` is nullable boolean and
        the remaining columns are strings ("" where empty).

    Raises:
        FileNotFoundError: If there is no ``runs.csv`` at the given place.
    """
    path = _runs_path(results_dir)
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
            frame[name] = _to_bool(frame[name])
    return frame.reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------------


def _floats(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _format_setting_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(_format_setting_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def setting_label(method_settings: str, lr: float | None) -> str:
    """Renders a method's settings and learning rate compactly, e.g. ``alpha=16 r=8 lr=0.0002``.

    Settings whose value is ``null`` (the method's default) are left out.

    Args:
        method_settings: The ``method_settings`` cell (a JSON object), possibly empty.
        lr: The learning rate, or ``None``/NaN when unknown.

    Returns:
        The label, or ``"-"`` when there is nothing to show.
    """
    parts: list[str] = []
    text = (method_settings or "").strip()
    if text:
        try:
            settings = json.loads(text)
        except ValueError:
            parts.append(text)
        else:
            if isinstance(settings, dict):
                parts.extend(
                    f"{key}={_format_setting_value(value)}"
                    for key, value in settings.items()
                    if value is not None
                )
            elif settings is not None:
                parts.append(_format_setting_value(settings))
    if lr is not None and not pd.isna(lr):
        parts.append(f"lr={float(lr):g}")
    return " ".join(parts) or "-"


def _labels(settings: pd.Series, lrs: pd.Series) -> list[str]:
    cache: dict[tuple[str, float], str] = {}
    out = []
    for text, lr in zip(settings.tolist(), _floats(lrs).tolist(), strict=True):
        key = (text, lr)
        if key not in cache:
            cache[key] = setting_label(text, lr)
        out.append(cache[key])
    return out


def pareto_front(params: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Marks the points that no other point beats on both trainable parameters and score.

    A point is dominated when another has at most as many parameters and at least as high a score,
    and is strictly better in one of the two. Identical points are all kept. Points with a missing
    value are never on the front.

    Args:
        params: Trainable parameter counts (lower is better).
        scores: Scores (higher is better).

    Returns:
        A boolean array, True for the points on the front.
    """
    p = np.asarray(params, dtype="float64")
    s = np.asarray(scores, dtype="float64")
    front = np.zeros(len(p), dtype=bool)
    valid = np.flatnonzero(np.isfinite(p) & np.isfinite(s))
    order = valid[np.lexsort((-s[valid], p[valid]))]
    best_score = -math.inf
    best_params = math.nan
    for i in order:
        if s[i] > best_score:
            front[i] = True
            best_score, best_params = s[i], p[i]
        elif s[i] == best_score and p[i] == best_params:
            front[i] = True
    return front


def _ensure_run_columns(df: pd.DataFrame) -> pd.DataFrame:
    missing = [name for name in REPORT_COLUMNS if name not in df.columns]
    if not missing:
        return df
    df = df.copy()
    for name in missing:
        df[name] = "success" if name == "status" else (np.nan if name in INT_COLUMNS + FLOAT_COLUMNS else "")
    return df


def _empty_comparison() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype="object") for name in COMPARISON_COLUMNS})


def _flags(values: pd.Series) -> np.ndarray:
    """True where a boolean column holds true (missing, empty or anything else is False)."""
    if not isinstance(values.dtype, pd.BooleanDtype) and values.dtype != bool:
        values = _to_bool(values.astype("str"))
    return values.fillna(False).to_numpy(dtype=bool)


def _budget_columns(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each run's training budget.

    A run recorded before budgets were (no ``budget_unit`` and no ``budget``) that succeeded is
    given the optimizer steps it took as its budget: the harness of that time always spent the whole
    budget. Any other run without a recorded budget keeps an unknown one (``""`` and NaN).

    Args:
        df: Runs with ``status``, ``budget_unit``, ``budget`` and ``train_steps``.

    Returns:
        The unit (lower case), the amount, and whether the budget was inferred, one entry per run.
    """
    unit = df["budget_unit"].astype("str").str.strip().str.lower().to_numpy(dtype=object)
    amount = _floats(df["budget"])
    steps = _floats(df["train_steps"])
    success = (df["status"].astype("str") == "success").to_numpy()
    inferred = (unit == "") & np.isnan(amount) & np.isfinite(steps) & success
    if inferred.any():
        unit = np.where(inferred, "steps", unit)
        amount = np.where(inferred, steps, amount)
    return unit, amount, inferred


def _group_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The grouping keys (:data:`GROUP_KEYS`) of each run, plus ``_budget_inferred``."""
    frame = df.loc[:, ["model", "task", "method", "method_settings"]].reset_index(drop=True)
    for name in ("model", "task", "method", "method_settings"):
        if frame[name].dtype != "str":
            frame[name] = frame[name].astype("str")
    frame["rank"] = _floats(df["rank"])
    frame["lr"] = _floats(df["lr"])
    unit, amount, inferred = _budget_columns(df)
    frame["budget_unit"] = pd.array(unit, dtype="str")
    frame["budget"] = amount
    key = df["setting_key"] if "setting_key" in df.columns else pd.Series([""] * len(df))
    frame["setting_key"] = pd.array(key.fillna("").astype("str").to_numpy(), dtype="str")
    frame = frame.loc[:, list(GROUP_KEYS)]
    frame["_budget_inferred"] = inferred
    return frame


def _failed_counts(table: pd.DataFrame, failed: pd.DataFrame) -> np.ndarray:
    """How many failed or cancelled runs each row of ``table`` has.

    A failed run with a recorded budget counts for its own budget; one without (an older file, or a
    run that failed before its budget was known) counts for every budget of its setting.
    """
    counts = np.zeros(len(table), dtype="int64")
    if failed.empty:
        return counts
    keys = _group_frame(failed)
    unknown = ((keys["budget_unit"] == "") & keys["budget"].isna()).to_numpy()
    for subset, on in ((keys[~unknown], list(GROUP_KEYS)), (keys[unknown], list(SETTING_KEYS))):
        if subset.empty:
            continue
        per_key = subset.groupby(on, dropna=False, sort=False).size().rename("_count").reset_index()
        merged = table.loc[:, on].merge(per_key, on=on, how="left")
        counts += merged["_count"].fillna(0).to_numpy(dtype="int64")
    return counts


def _stop_reasons(work: pd.DataFrame, stopped: np.ndarray, table: pd.DataFrame) -> list[str]:
    """The distinct reasons (comma-separated) why each row's stopped-early seeds stopped."""
    if not stopped.any():
        return [""] * len(table)
    sub = work.loc[stopped, [*GROUP_KEYS, "_reason"]]
    reasons = (
        sub.groupby(list(GROUP_KEYS), dropna=False, sort=False)["_reason"]
        .agg(lambda values: ",".join(sorted({v for v in values.tolist() if v})))
        .rename("_reasons")
        .reset_index()
    )
    merged = table.loc[:, list(GROUP_KEYS)].merge(reasons, on=list(GROUP_KEYS), how="left")
    return merged["_reasons"].fillna("").astype("str").tolist()


def _tell_apart(table: pd.DataFrame) -> None:
    """Appends ``(config <setting_key>)`` to labels that would otherwise repeat within one model,
    task, method and budget: those settings differ in a config key the label does not show."""
    same = [*COMPARE_KEYS, "method", "setting"]
    clash = table.duplicated(subset=same, keep=False).to_numpy() & (table["setting_key"] != "").to_numpy()
    if clash.any():
        table.loc[clash, "setting"] = [
            f"{label} (config {key[:6]})" if label else f"(config {key[:6]})"
            for label, key in zip(table.loc[clash, "setting"], table.loc[clash, "setting_key"], strict=True)
        ]


def comparison_table(df: pd.DataFrame, *, baseline_method: str = BASELINE_METHOD) -> pd.DataFrame:
    """Compares every setting of every method, averaging over seeds.

    Only successful runs are averaged. Runs that agree on model, task, method, rank, method
    settings, learning rate and training budget (unit and amount) form one row: runs with different
    budgets are never pooled. If the same setting was run twice with the same seed, only the run
    written last counts (a :class:`RunsFileWarning` says so). Settings are compared with each other
    (best setting, full fine-tuning baseline, Pareto front) only within one model, task and budget.

    Args:
        df: Runs as returned by :func:`load_runs` (any statuses; other columns are ignored).
        baseline_method: The method the relative columns compare with (full fine-tuning).

    Returns:
        One row per (model, task, method, setting, budget) with the columns of
        :data:`COMPARISON_COLUMNS`: ``budget_unit`` and ``budget`` (``""``/NaN where unknown; a
        successful run recorded without a budget gets the steps it trained, and
        ``budget_inferred`` says so), ``budget_steps`` (median over seeds of the optimizer steps
        the budget works out to), ``n_seeds`` (successful runs with a score), ``seeds``,
        ``n_failed`` (failed or cancelled runs of that setting), ``n_stopped_early`` (seeds among
        ``n_seeds`` that stopped before their budget), ``stop_reason`` (their distinct reasons,
        comma-separated) and ``stopped_steps`` (their mean optimizer steps), parameter counts,
        ``peak_mem_bytes`` (mean over seeds of the GPU peak where measured, else the RSS peak;
        ``mem_kind`` says which), mean throughputs, the mean ``train_steps``, ``train_samples``
        and ``train_tokens`` actually trained, ``score_mean`` and ``score_std`` (sample std,
        ddof=1; NaN for one seed), the relative columns ``params_ratio``, ``mem_ratio`` and
        ``throughput_ratio`` (this row / baseline) and ``score_delta`` (this row - baseline),
        computed against the best-scoring baseline setting of the same model, task and budget
        (``baseline_setting``; NaN where there is none), and ``pareto`` (on the
        max-score/min-parameters front of its model, task and budget). Rows are sorted by model,
        task, budget, baseline first, method, trainable parameters and learning rate.
    """
    df = _ensure_run_columns(df)
    status = df["status"].astype("str")
    ok = df[(status == "success").to_numpy()]
    if ok.empty:
        return _empty_comparison()
    keys = list(GROUP_KEYS)

    work = _group_frame(ok)
    work["seed"] = _floats(ok["seed"])
    for name in (
        "score",
        "trainable_params",
        "total_params",
        "trainable_pct",
        "train_samples_per_s",
        "train_tokens_per_s",
        "train_time_s",
        "budget_steps",
        "train_steps",
        "train_samples",
        "train_tokens",
        "final_train_loss",
    ):
        work[name] = _floats(ok[name])
    inferred = work["_budget_inferred"].to_numpy()
    if inferred.any():
        work.loc[inferred, "budget_steps"] = work.loc[inferred, "train_steps"]
    gpu = _floats(ok["peak_gpu_mem_bytes"])
    rss = _floats(ok["peak_rss_bytes"])
    on_gpu = np.isfinite(gpu)
    work["_mem"] = np.where(on_gpu, gpu, rss)
    work["_gpu"] = on_gpu.astype("int64")
    work["_rss"] = (~on_gpu & np.isfinite(rss)).astype("int64")
    work["metric"] = ok["metric"].astype("str").to_numpy()
    stopped = _flags(ok["stopped_early"]) & np.isfinite(work["score"].to_numpy())
    work["_stopped"] = stopped.astype("int64")
    work["_stopped_steps"] = np.where(stopped, work["train_steps"].to_numpy(), np.nan)
    work["_reason"] = ok["stop_reason"].astype("str").to_numpy()

    with_seed = work["seed"].notna().to_numpy()
    duplicated = np.zeros(len(work), dtype=bool)
    if with_seed.any():
        duplicated[with_seed] = work[with_seed].duplicated(subset=[*keys, "seed"], keep="last").to_numpy()
    if duplicated.any():
        warnings.warn(
            f"{int(duplicated.sum())} successful run(s) repeat a setting and seed that was run again "
            "later; only the latest run of each counts",
            RunsFileWarning,
            stacklevel=2,
        )
        work = work[~duplicated]
        stopped = stopped[~duplicated]

    grouped = work.groupby(keys, dropna=False, sort=False)
    table = grouped.agg(
        n_seeds=("score", "count"),
        _n=("score", "size"),
        budget_steps=("budget_steps", "median"),
        budget_inferred=("_budget_inferred", "any"),
        n_stopped_early=("_stopped", "sum"),
        trainable_params=("trainable_params", "median"),
        total_params=("total_params", "median"),
        trainable_pct=("trainable_pct", "median"),
        peak_mem_bytes=("_mem", "mean"),
        _n_gpu=("_gpu", "sum"),
        _n_rss=("_rss", "sum"),
        train_samples_per_s=("train_samples_per_s", "mean"),
        train_tokens_per_s=("train_tokens_per_s", "mean"),
        train_time_s=("train_time_s", "mean"),
        train_steps=("train_steps", "mean"),
        train_samples=("train_samples", "mean"),
        train_tokens=("train_tokens", "mean"),
        stopped_steps=("_stopped_steps", "mean"),
        score_mean=("score", "mean"),
        score_std=("score", "std"),
        metric=("metric", "first"),
        final_train_loss=("final_train_loss", "mean"),
    ).reset_index()
    table["seeds"] = grouped["seed"].agg(_join_seeds).to_numpy()
    table["stop_reason"] = _stop_reasons(work, stopped, table)
    table["n_failed"] = _failed_counts(table, df[(status != "success").to_numpy()])

    pct = table["trainable_pct"].to_numpy(dtype="float64")
    derived = (
        100.0
        * table["trainable_params"].to_numpy(dtype="float64")
        / table["total_params"].to_numpy(dtype="float64")
    )
    table["trainable_pct"] = np.where(np.isfinite(pct), pct, derived)
    table["mem_kind"] = np.select(
        [
            ~np.isfinite(table["peak_mem_bytes"].to_numpy(dtype="float64")),
            table["_n_gpu"].to_numpy() == table["_n"].to_numpy(),
            table["_n_rss"].to_numpy() == table["_n"].to_numpy(),
        ],
        ["", "GPU", "RSS"],
        default="mixed",
    )
    table["setting"] = _labels(table["method_settings"], table["lr"])
    _tell_apart(table)
    table = _add_relative(table, baseline_method)
    table = significance(table)
    table["pareto"] = False
    for index in table.groupby(list(COMPARE_KEYS), sort=False, dropna=False).indices.values():
        sub = table.iloc[index]
        table.loc[table.index[index], "pareto"] = pareto_front(sub["trainable_params"], sub["score_mean"])
    table["pareto"] = table["pareto"].astype(bool)

    for name in ("rank", "trainable_params", "total_params", "budget_steps"):
        table[name] = pd.array(np.round(table[name].to_numpy(dtype="float64")), dtype="Float64").astype(
            "Int64"
        )
    table["n_seeds"] = table["n_seeds"].astype("int64")
    table["n_stopped_early"] = table["n_stopped_early"].astype("int64")
    table["budget_inferred"] = table["budget_inferred"].astype(bool)
    table = _default_order(table, baseline_method)
    return table.loc[:, list(COMPARISON_COLUMNS)].reset_index(drop=True)


def significance(table: pd.DataFrame, *, alpha: float = ALPHA, level: float = CI_LEVEL) -> pd.DataFrame:
    """Adds each setting's confidence interval and its comparison with the best setting.

    Works from the per-setting summary alone (mean, sample std with ddof=1, number of seeds), so it
    stays fast on large files. For each setting with ``n >= 2`` seeds the interval of the mean is
    ``mean ± t_{(1+level)/2, n-1} · std / sqrt(n)`` (Student's t). Within each model, task and
    training budget (``budget_unit`` and ``budget``, where the table has them: settings trained on
    different budgets are never compared), the best setting is the one with the highest mean among
    those with at least 2 seeds; every other such setting is compared with it by a two-sided Welch t-test (unequal variances, Welch–Satterthwaite
    degrees of freedom). Two settings whose scores are each constant over seeds (zero variance) get
    p = 1 if their means are equal, else p = 0.

    Args:
        table: A table with ``model``, ``task``, ``n_seeds``, ``score_mean`` and ``score_std``, and
            optionally ``budget_unit`` and ``budget``.
        alpha: Significance level; ``p >= alpha`` means not distinguishable from the best.
        level: Confidence level of the intervals.

    Returns:
        The table with ``score_ci_low``, ``score_ci_high`` (NaN with fewer than 2 seeds),
        ``vs_best`` (one of :data:`VS_BEST`) and ``p_vs_best`` (the Welch test's p-value; NaN for
        the best setting itself and where there is no test).
    """
    table = table.copy()
    n = table["n_seeds"].to_numpy(dtype="float64")
    mean = table["score_mean"].to_numpy(dtype="float64")
    std = table["score_std"].to_numpy(dtype="float64")
    testable = (n >= 2) & np.isfinite(mean) & np.isfinite(std)
    low = np.full(len(table), np.nan)
    high = np.full(len(table), np.nan)
    p_value = np.full(len(table), np.nan)
    verdict = np.full(len(table), "n/a", dtype=object)
    if testable.any():
        from scipy import stats  # only when there is something to test: keeps the import light

        half = stats.t.ppf(0.5 + level / 2, n[testable] - 1) * std[testable] / np.sqrt(n[testable])
        low[testable] = mean[testable] - half
        high[testable] = mean[testable] + half
        best = np.full(len(table), -1)
        within = [name for name in COMPARE_KEYS if name in table.columns]
        for index in table.groupby(within, sort=False, dropna=False).indices.values():
            candidates = index[testable[index]]
            if len(candidates):
                # Highest mean; among equal means the one with more seeds, then the first.
                order = np.lexsort((np.arange(len(candidates)), -n[candidates], -mean[candidates]))
                best[index] = candidates[order[0]]
        others = testable & (best >= 0) & (best != np.arange(len(table)))
        b = best[others]
        var_a, var_b = std[others] ** 2 / n[others], std[b] ** 2 / n[b]
        se2 = var_a + var_b
        diff = mean[others] - mean[b]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_stat = diff / np.sqrt(se2)
            df = se2**2 / (var_a**2 / (n[others] - 1) + var_b**2 / (n[b] - 1))
            welch = 2 * stats.t.sf(np.abs(t_stat), df)
        p_value[others] = np.where(se2 > 0, welch, np.where(diff == 0, 1.0, 0.0))
        verdict[others] = np.where(p_value[others] >= alpha, "tied", "worse")
        verdict[np.unique(best[best >= 0])] = "best"
    table["score_ci_low"] = low
    table["score_ci_high"] = high
    table["vs_best"] = verdict.astype(str)
    table["p_vs_best"] = p_value
    return table


def _join_seeds(seeds: pd.Series) -> str:
    values = sorted({int(v) for v in seeds.tolist() if v == v})
    return ",".join(str(v) for v in values)


def _add_relative(table: pd.DataFrame, baseline_method: str) -> pd.DataFrame:
    base = table[table["method"] == baseline_method]
    for name in ("baseline_setting",):
        table[name] = ""
    for name in ("params_ratio", "mem_ratio", "throughput_ratio", "score_delta"):
        table[name] = np.nan
    if base.empty:
        return table
    base = base.sort_values("score_mean", ascending=False, na_position="last", kind="mergesort")
    base = base.drop_duplicates(list(COMPARE_KEYS), keep="first")
    fields = [
        "setting",
        "trainable_params",
        "peak_mem_bytes",
        "mem_kind",
        "train_tokens_per_s",
        "train_samples_per_s",
        "score_mean",
    ]
    base = base[[*COMPARE_KEYS, *fields]].rename(columns={name: f"_b_{name}" for name in fields})
    merged = table.merge(base, on=list(COMPARE_KEYS), how="left")

    def ratio(name: str) -> np.ndarray:
        num = merged[name].to_numpy(dtype="float64")
        den = merged[f"_b_{name}"].to_numpy(dtype="float64")
        with np.errstate(divide="ignore", invalid="ignore"):
            out = num / den
        out[~np.isfinite(out)] = np.nan
        return out

    merged["baseline_setting"] = merged["_b_setting"].fillna("").astype("str")
    merged["params_ratio"] = ratio("trainable_params")
    same_kind = (merged["mem_kind"] == merged["_b_mem_kind"]) & merged["mem_kind"].isin(["GPU", "RSS"])
    merged["mem_ratio"] = np.where(same_kind.to_numpy(), ratio("peak_mem_bytes"), np.nan)
    tokens = ratio("train_tokens_per_s")
    merged["throughput_ratio"] = np.where(np.isfinite(tokens), tokens, ratio("train_samples_per_s"))
    merged["score_delta"] = merged["score_mean"].to_numpy(dtype="float64") - merged["_b_score_mean"].to_numpy(
        dtype="float64"
    )
    return merged.drop(columns=[c for c in merged.columns if c.startswith("_b_")])


def _default_order(table: pd.DataFrame, baseline_method: str) -> pd.DataFrame:
    helper = table.assign(_not_base=(table["method"] != baseline_method).astype(int))
    helper = helper.sort_values(
        [
            "model",
            "task",
            "budget_unit",
            "budget",
            "_not_base",
            "method",
            "trainable_params",
            "lr",
            "setting",
        ],
        kind="mergesort",
        na_position="last",
    )
    return helper.drop(columns="_not_base")


def failed_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Lists the runs that did not succeed, with their error messages.

    Args:
        df: Runs as returned by :func:`load_runs`.

    Returns:
        The failed and cancelled runs (columns :data:`FAILED_COLUMNS`), oldest first.
    """
    df = _ensure_run_columns(df)
    bad = df[(df["status"].astype("str") != "success").to_numpy()]
    out = pd.DataFrame(
        {
            "run_id": bad["run_id"].astype("str").to_numpy(),
            "sweep_id": bad["sweep_id"].astype("str").to_numpy(),
            "status": bad["status"].astype("str").to_numpy(),
            "model": bad["model"].astype("str").to_numpy(),
            "task": bad["task"].astype("str").to_numpy(),
            "method": bad["method"].astype("str").to_numpy(),
            "setting": _labels(bad["method_settings"].astype("str"), bad["lr"]),
            "seed": pd.array(_floats(bad["seed"]), dtype="Float64").astype("Int64"),
            "started_at": bad["started_at"].to_numpy(),
            "error": bad["error"].astype("str").to_numpy(),
        }
    )
    if not out.empty:
        out = out.sort_values("started_at", kind="mergesort", na_position="last")
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Human-readable formatting
# --------------------------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def human_bytes(value: Any) -> str:
    """Formats a byte count with binary units, e.g. ``1.50 GiB``; "-" when missing."""
    if _missing(value):
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" or size >= 999.5 else f"{size:.3g} {unit}"
        size /= 1024
    return f"{size:.3g} TiB"  # pragma: no cover - the loop always returns


def human_count(value: Any) -> str:
    """Formats a count with SI-style suffixes, e.g. ``125M`` or ``8.19k``; "-" when missing."""
    if _missing(value):
        return "-"
    number = float(value)
    for threshold, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= threshold:
            return f"{number / threshold:.3g}{suffix}"
    return f"{number:.0f}"


def _pct(value: Any) -> str:
    if _missing(value):
        return "-"
    value = float(value)
    if value == 0 or value >= 0.1:
        return f"{value:.2f}%"
    return f"{value:.2g}%"


def _score(value: Any) -> str:
    return "-" if _missing(value) else f"{float(value):.4f}"


def _ratio(value: Any) -> str:
    return "-" if _missing(value) else f"{float(value):.3g}×"


def _delta(value: Any) -> str:
    return "-" if _missing(value) else f"{float(value):+.4f}"


def _rate(tokens: Any, samples: Any) -> str:
    if not _missing(tokens):
        return f"{human_count(tokens)} tok/s"
    if not _missing(samples):
        return f"{human_count(samples)} samples/s"
    return "-"


def _ci_cell(low: Any, high: Any) -> str:
    if _missing(low) or _missing(high):
        return "n/a"
    return f"[{float(low):.4f}, {float(high):.4f}]"


def _vs_best_cell(verdict: Any, p_value: Any) -> str:
    verdict = str(verdict) if not _missing(verdict) and str(verdict) else "n/a"
    if verdict in ("tied", "worse") and not _missing(p_value):
        return f"{verdict} (p={_p(p_value)})"
    return verdict


def _p(value: Any) -> str:
    return f"{float(value):.2g}"


def _score_cell(mean: Any, std: Any) -> str:
    if _missing(mean):
        return "-"
    if _missing(std):
        return _score(mean)
    return f"{float(mean):.4f} ± {float(std):.4f}"


def _memory_cell(value: Any, kind: str) -> str:
    text = human_bytes(value)
    return text if text == "-" or not kind else f"{text} {kind}"


def _number(value: float) -> str:
    """A count with thousands separators (``10,000``), or with decimals where it has them (``2.5``)."""
    return f"{value:,.0f}" if value == int(value) else f"{value:,g}"


def _compact_exact(value: float) -> str:
    """A large count with a k/M/B suffix where that loses nothing (``500k``, ``1.5M``), else in full."""
    if value == int(value):
        for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= threshold and value % (threshold / 100) == 0:
                return f"{value / threshold:,g}{suffix}"
    return _number(value)


def budget_label(unit: Any, amount: Any) -> str:
    """Renders a training budget for people, e.g. ``150 steps``, ``2.5 epochs``, ``500k tokens``.

    Args:
        unit: What the budget counts (one of :data:`peftbench.record.BUDGET_UNITS`); empty when not recorded.
        amount: How many of them; None/NaN when not recorded.

    Returns:
        The label; ``"?"`` when neither is known, ``"? steps"`` or ``"150 ?"`` when one is.
    """
    unit = "" if _missing(unit) else str(unit).strip()
    if _missing(amount) or not math.isfinite(float(amount)):
        return f"? {unit}" if unit else "?"
    amount = float(amount)
    text = _compact_exact(amount) if unit == "tokens" else _number(amount)
    if not unit:
        return f"{text} ?"
    if amount == 1 and unit.endswith("s"):
        unit = unit[:-1]
    return f"{text} {unit}"


def _steps_text(value: Any) -> str:
    value = float(value)
    return _number(value) if value == int(value) else f"{value:,.1f}"


def _reasons_text(reasons: Any) -> str:
    names = [r.strip().replace("_", " ") for r in str(reasons or "").split(",") if r.strip()]
    return ", ".join(names)


CI_HEADER = f"{CI_LEVEL:.0%} CI"
VS_BEST_HEADER = f"vs best (Welch t, α={ALPHA:g})"
DISPLAY_HEADERS = (
    "Model",
    "Task",
    "Metric",
    "Method",
    "Setting",
    "Budget",
    "Trainable",
    "% of model",
    "Peak memory",
    "Throughput",
    "Score (mean ± std)",
    CI_HEADER,
    VS_BEST_HEADER,
    "Seeds",
    "Params vs full",
    "Memory vs full",
    "Speed vs full",
    "Δ score vs full",
    "Pareto",
    "Failed",
)
_RIGHT = {
    "Trainable",
    "% of model",
    "Peak memory",
    "Throughput",
    "Score (mean ± std)",
    CI_HEADER,
    "Seeds",
    "Params vs full",
    "Memory vs full",
    "Speed vs full",
    "Δ score vs full",
    "Failed",
}


def _stopped_count(rec: dict[str, Any]) -> int:
    count = rec.get("n_stopped_early")
    return 0 if _missing(count) else int(count)


def display_rows(table: pd.DataFrame) -> list[list[str]]:
    """Formats a :func:`comparison_table` for people, one list of cells per row (see DISPLAY_HEADERS).

    The score of a setting of which some seed stopped before its budget ends with
    :data:`STOPPED_MARK`; :func:`stopped_notes` explains each mark.
    """
    rows = []
    for rec in table.to_dict("records"):
        rows.append(
            [
                str(rec["model"]),
                str(rec["task"]),
                str(rec["metric"]),
                str(rec["method"]),
                str(rec["setting"]),
                budget_label(rec.get("budget_unit"), rec.get("budget")),
                human_count(rec["trainable_params"]),
                _pct(rec["trainable_pct"]),
                _memory_cell(rec["peak_mem_bytes"], rec["mem_kind"]),
                _rate(rec["train_tokens_per_s"], rec["train_samples_per_s"]),
                _score_cell(rec["score_mean"], rec["score_std"])
                + (STOPPED_MARK if _stopped_count(rec) else ""),
                _ci_cell(rec.get("score_ci_low"), rec.get("score_ci_high")),
                _vs_best_cell(rec.get("vs_best"), rec.get("p_vs_best")),
                str(rec["n_seeds"]),
                _ratio(rec["params_ratio"]),
                _ratio(rec["mem_ratio"]),
                _ratio(rec["throughput_ratio"]),
                _delta(rec["score_delta"]),
                "yes" if rec["pareto"] else "",
                str(rec["n_failed"]) if rec["n_failed"] else "",
            ]
        )
    return rows


def _budgets_of(table: pd.DataFrame) -> tuple[list[tuple[str, int]], bool]:
    """The distinct budgets of a table's rows (label, number of settings), smallest first, and
    whether any of them was inferred from the steps taken."""
    if "budget_unit" not in table.columns or "budget" not in table.columns:
        return [("?", len(table))], False
    units = table["budget_unit"].astype("str").tolist()
    amounts = _floats(table["budget"]).tolist()
    counts: dict[tuple[str, float], int] = {}
    for unit, amount in zip(units, amounts, strict=True):
        key = (unit, math.inf if math.isnan(amount) else amount)
        counts[key] = counts.get(key, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: (item[0][0] == "", item[0][0], item[0][1]))
    labels = [
        (budget_label(unit, None if amount == math.inf else amount), n) for (unit, amount), n in ordered
    ]
    inferred = "budget_inferred" in table.columns and bool(table["budget_inferred"].fillna(False).any())
    return labels, inferred


def budget_statement(table: pd.DataFrame) -> str:
    """Says which training budget the rows of one comparison (one model and task) were trained on.

    Args:
        table: Rows of a :func:`comparison_table`, normally those of one model and task.

    Returns:
        ``"Budget: 150 steps."`` when every row has the same budget; a warning naming each budget
        and its number of settings when they differ, since rows of different budgets must not be
        compared with each other.
    """
    labels, inferred = _budgets_of(table)
    how = " (taken as the steps trained by runs recorded without a budget)" if inferred else ""
    if len(labels) <= 1:
        label = labels[0][0] if labels else "?"
        if label == "?":
            return "Budget: not recorded (?)."
        return f"Budget: {label}{how}."
    listed = ", ".join(f"{label} ({n} setting{'s' if n != 1 else ''})" for label, n in labels)
    return (
        f"Warning: this table mixes training budgets: {listed}{how}. Compare only rows with the same "
        "budget; 'vs best', 'vs full' and Pareto are computed within each budget."
    )


def _is_warning(line: str) -> bool:
    return "Warning:" in line


def _comparisons(table: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """(model, task, row positions) of each model and task, in the order they first appear."""
    groups = table.groupby(["model", "task"], sort=False).indices
    return [(str(model), str(task), index) for (model, task), index in groups.items()]


def budget_lines(table: pd.DataFrame) -> list[str]:
    """Budget statements (:func:`budget_statement`) for a table that holds several models and tasks.

    Args:
        table: A :func:`comparison_table`.

    Returns:
        One line when every row has the same budget, else one line per model and task, prefixed
        with ``model / task:``; nothing for an empty table.
    """
    if table.empty:
        return []
    if len(_budgets_of(table)[0]) == 1:
        return [budget_statement(table)]
    return [
        f"{model or '-'} / {task or '-'}: {budget_statement(table.iloc[index])}"
        for model, task, index in _comparisons(table)
    ]


def stopped_notes(table: pd.DataFrame, *, with_model_task: bool = True) -> list[str]:
    """Explains each :data:`STOPPED_MARK`: which setting, why, how many seeds and after how many steps.

    Args:
        table: A :func:`comparison_table` (or some of its rows).
        with_model_task: Name the model and task of each setting (for a table that holds several).

    Returns:
        One line per setting of which at least one seed stopped before its budget, e.g.
        ``† lora r=8 lr=0.001 (150 steps): stopped before its budget (early stopping): 1 of 3 seeds,
        mean 120 of 150 steps``.
    """
    if "n_stopped_early" not in table.columns:
        return []
    notes = []
    for rec in table[table["n_stopped_early"].fillna(0).to_numpy(dtype="int64") > 0].to_dict("records"):
        where = f"{rec['model'] or '-'} / {rec['task'] or '-'}, " if with_model_task else ""
        budget = budget_label(rec.get("budget_unit"), rec.get("budget"))
        reasons = _reasons_text(rec.get("stop_reason"))
        steps = ""
        if not _missing(rec.get("stopped_steps")):
            taken = _steps_text(rec["stopped_steps"])
            total = rec.get("budget_steps")
            steps = (
                f", mean {taken} of {_steps_text(total)} steps"
                if not _missing(total)
                else (f", mean {taken} steps trained")
            )
        notes.append(
            f"{STOPPED_MARK} {where}{rec['method']} {rec['setting']} ({budget}): stopped before its budget"
            f"{f' ({reasons})' if reasons else ''}: {_stopped_count(rec)} of {rec['n_seeds']} seed{'' if rec['n_seeds'] == 1 else 's'}{steps}"
        )
    return notes


FAILED_HEADERS = ("Run", "Sweep", "Status", "Model", "Task", "Method", "Setting", "Seed", "Started", "Error")


def _one_line(text: str, limit: int | None) -> str:
    line = " ".join(str(text).split())
    if limit is not None and len(line) > limit:
        line = line[: limit - 1] + "…"
    return line or "-"


def _failed_rows(failed: pd.DataFrame, error_limit: int | None) -> list[list[str]]:
    rows = []
    for rec in failed.to_dict("records"):
        started = rec["started_at"]
        if isinstance(started, pd.Timestamp):
            started = started.strftime("%Y-%m-%d %H:%M:%S")
        rows.append(
            [
                str(rec["run_id"]) or "-",
                str(rec["sweep_id"]) or "-",
                str(rec["status"]),
                str(rec["model"]),
                str(rec["task"]),
                str(rec["method"]),
                str(rec["setting"]),
                "-" if _missing(rec["seed"]) else str(rec["seed"]),
                "-" if _missing(started) or started is pd.NaT else str(started),
                _one_line(rec["error"], error_limit) if error_limit else (str(rec["error"]).strip() or "-"),
            ]
        )
    return rows


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    """Everything a rendered report shows.

    Attributes:
        table: The comparison table (:func:`comparison_table`), filtered and sorted.
        failed: Failed and cancelled runs (:func:`failed_runs`), filtered.
        source: Where the runs came from (path of ``runs.csv``).
        n_runs: Number of runs read after filtering (all statuses).
        n_search: Runs left out because they are search trials (``eval_on == "search"``: scored on
            the search split, not on the reported evaluation split).
    """

    table: pd.DataFrame
    failed: pd.DataFrame
    source: str
    n_runs: int
    n_search: int = 0


def _as_list(values: str | Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [values] if isinstance(values, str) else list(values)


def resolve_sort_column(name: str) -> str:
    """Maps a ``--sort`` argument (column name or alias such as ``score``) to a column name.

    Raises:
        ValueError: If the name is neither a comparison column nor an alias.
    """
    column = SORT_ALIASES.get(name, name)
    if column not in COMPARISON_COLUMNS:
        known = ", ".join(sorted(set(COMPARISON_COLUMNS) | set(SORT_ALIASES)))
        raise ValueError(f"cannot sort by {name!r}; choose one of: {known}")
    return column


def build_report(
    results_dir: str | os.PathLike[str] = "results",
    *,
    models: str | Sequence[str] | None = None,
    tasks: str | Sequence[str] | None = None,
    methods: str | Sequence[str] | None = None,
    sweeps: str | Sequence[str] | None = None,
    sort: str | None = None,
    descending: bool = False,
    baseline_method: str = BASELINE_METHOD,
    include_search: bool = False,
) -> Report:
    """Loads, filters, aggregates and sorts the runs of a results directory.

    Search trials (runs with ``eval_on == "search"``, scored on the search split that a learning-rate
    search tunes on) are left out unless ``include_search``: their scores are not comparable with
    scores on the evaluation split. Model, task and sweep filters apply before aggregation. The method filter applies after it,
    so that the relative columns can still use the full fine-tuning baseline.

    Args:
        results_dir: Directory holding ``runs.csv`` (or the CSV path itself).
        models: Keep only these models.
        tasks: Keep only these tasks.
        methods: Show only these methods.
        sweeps: Keep only runs of these sweep ids.
        sort: Column (or alias, see :data:`SORT_ALIASES`) to sort by; default order otherwise.
        descending: Sort in descending order.
        baseline_method: Method the relative columns compare with.
        include_search: Keep the search trials too.

    Returns:
        The :class:`Report`.
    """
    runs = load_runs(results_dir, columns=REPORT_COLUMNS)
    n_search = 0
    if not include_search:
        search = (runs["eval_on"] == "search").to_numpy()
        n_search = int(search.sum())
        if n_search:
            runs = runs[~search]
    for column, values in (("model", models), ("task", tasks), ("sweep_id", sweeps)):
        chosen = _as_list(values)
        if chosen is not None:
            runs = runs[runs[column].isin(chosen).to_numpy()]
    table = comparison_table(runs, baseline_method=baseline_method)
    failed = failed_runs(runs)
    chosen_methods = _as_list(methods)
    if chosen_methods is not None:
        table = table[table["method"].isin(chosen_methods).to_numpy()].reset_index(drop=True)
        failed = failed[failed["method"].isin(chosen_methods).to_numpy()].reset_index(drop=True)
    if sort is not None:
        column = resolve_sort_column(sort)
        table = table.sort_values(
            column, ascending=not descending, kind="mergesort", na_position="last"
        ).reset_index(drop=True)
    return Report(
        table=table, failed=failed, source=str(_runs_path(results_dir)), n_runs=len(runs), n_search=n_search
    )


def _text_grid(headers: Sequence[str], rows: list[list[str]], right: set[str] | None = None) -> str:
    right = right or set()
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.rjust(w) if header in right else cell.ljust(w)
            for cell, w, header in zip(cells, widths, headers, strict=True)
        ]
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def _summary_line(report: Report) -> str:
    ok = report.n_runs - len(report.failed)
    search = (
        f" {report.n_search} search trial(s) (scored on the search split) left out; --include-search "
        "shows them."
        if report.n_search
        else ""
    )
    return (
        f"{report.source}: {report.n_runs} run(s), {ok} successful, {len(report.failed)} failed or "
        f"cancelled; {len(report.table)} setting(s).{search}"
    )


def render_text(report: Report, *, error_limit: int = 100) -> str:
    """Renders the report as plain text: one table per model and task, then the failed runs.

    Each table is headed by its budget (a warning when it mixes budgets) and followed by a note on
    each setting marked as stopped early.
    """
    parts = [f"peftbench report — {_summary_line(report)}", ""]
    headers = list(DISPLAY_HEADERS[3:])
    rows = display_rows(report.table)
    if not rows:
        parts.append("No successful runs to compare.")
    sections: dict[tuple[str, str, str], list[int]] = {}
    for position, row in enumerate(rows):
        sections.setdefault((row[0], row[1], row[2]), []).append(position)
    for (model, task, metric), positions in sections.items():
        sub = report.table.iloc[positions]
        parts.append(f"== model: {model or '-'}  task: {task or '-'}  metric: {metric or '-'} ==")
        parts.append(budget_statement(sub))
        parts.append(_text_grid(headers, [rows[i][3:] for i in positions], _RIGHT))
        parts.extend(stopped_notes(sub, with_model_task=False))
        parts.append("")
    parts.extend(f"* {note}" for note in NOTES)
    parts.append("")
    parts.append(_failed_text(report.failed, error_limit))
    return "\n".join(parts).rstrip() + "\n"


def _failed_text(failed: pd.DataFrame, error_limit: int | None) -> str:
    if failed.empty:
        return "Failed or cancelled runs: none."
    grid = _text_grid(FAILED_HEADERS, _failed_rows(failed, error_limit))
    return f"Failed or cancelled runs ({len(failed)}, not included above):\n{grid}"


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(headers: Sequence[str], rows: list[list[str]], right: set[str] | None = None) -> str:
    right = right or set()
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---:" if h in right else "---" for h in headers) + "|")
    lines.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows)
    return "\n".join(lines)


def render_markdown(report: Report, *, error_limit: int = 300) -> str:
    """Renders the report as GitHub-flavoured Markdown."""
    parts = ["# peftbench report", "", _summary_line(report), ""]
    rows = display_rows(report.table)
    for line in budget_lines(report.table):
        parts.extend([f"**{_md_cell(line)}**" if _is_warning(line) else _md_cell(line), ""])
    parts.append(_md_table(DISPLAY_HEADERS, rows, _RIGHT) if rows else "No successful runs to compare.")
    parts.append("")
    for note in stopped_notes(report.table):
        parts.extend([_md_cell(note), ""])
    parts.extend(f"- {note}" for note in NOTES)
    parts.extend(["", "## Failed or cancelled runs", ""])
    if report.failed.empty:
        parts.append("None.")
    else:
        parts.append(_md_table(FAILED_HEADERS, _failed_rows(report.failed, error_limit)))
    return "\n".join(parts) + "\n"


def render_csv(report: Report) -> str:
    """Renders the comparison table as CSV with machine-readable values (raw numbers, no units)."""
    return report.table.to_csv(index=False, lineterminator="\n")


def render_failed_csv(report: Report) -> str:
    """Renders the failed and cancelled runs as CSV."""
    return report.failed.to_csv(index=False, lineterminator="\n")


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "α": r"$\alpha$",
    "√": r"$\surd$",
    "·": r"$\cdot$",
    "×": r"$\times$",
    "Δ": r"$\Delta$",
    "…": r"\ldots{}",
    "†": r"\dag{}",
    "—": "---",
}


def latex_escape(text: str) -> str:
    """Escapes text for LaTeX (special characters and the few symbols the report uses)."""
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def _latex_tabular(headers: Sequence[str], rows: list[list[str]], right: set[str] | None = None) -> str:
    right = right or set()
    spec = "".join("r" if h in right else "l" for h in headers)
    lines = [f"\\begin{{tabular}}{{{spec}}}", r"\toprule"]
    lines.append(" & ".join(latex_escape(h) for h in headers) + r" \\")
    lines.append(r"\midrule")
    lines.extend(" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows)
    lines.extend([r"\bottomrule", r"\end{tabular}"])
    return "\n".join(lines)


def render_latex(report: Report, *, error_limit: int = 120) -> str:
    """Renders the report as LaTeX tables (needs the ``booktabs`` package)."""
    parts = [
        "% peftbench report; needs \\usepackage{booktabs}",
        "% " + _summary_line(report).replace("%", "\\%"),
        r"\begin{table}[ht]",
        r"\centering",
        r"\scriptsize",
        _latex_tabular(DISPLAY_HEADERS, display_rows(report.table), _RIGHT),
    ]
    for line in [*budget_lines(report.table), *stopped_notes(report.table)]:
        text = latex_escape(line)
        parts.append(r"\par\smallskip " + (rf"\textbf{{{text}}}" if _is_warning(line) else text) + r"\par")
    parts.extend([r"\caption{" + latex_escape(" ".join(NOTES[:4])) + "}", r"\end{table}"])
    if not report.failed.empty:
        parts.extend(
            [
                r"\begin{table}[ht]",
                r"\centering",
                r"\scriptsize",
                _latex_tabular(FAILED_HEADERS, _failed_rows(report.failed, error_limit)),
                r"\caption{Failed or cancelled runs (not included in the averages).}",
                r"\end{table}",
            ]
        )
    return "\n".join(parts) + "\n"


_HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 3px 7px; vertical-align: top; }
th { background: #f0f0f0; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.pareto td { background: #fff8e1; }
td.nowrap { white-space: nowrap; }
td.error { font-family: ui-monospace, monospace; white-space: pre-wrap; max-width: 60em; }
ul.notes { font-size: 13px; color: #444; }
p.budget { font-size: 13px; margin: 4px 0; }
p.warning { font-size: 13px; margin: 4px 0; padding: 4px 8px; background: #fff3cd; color: #6b4500;
  border-left: 4px solid #e0a800; }
p.stopped { font-size: 13px; margin: 2px 0; color: #444; }
figure { margin: 12px 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 2px; margin-right: 4px; }
"""


def _html_table(
    headers: Sequence[str],
    rows: list[list[str]],
    right: set[str],
    css_class: str,
    row_classes: list[str] | None = None,
    cell_class: dict[str, str] | None = None,
) -> str:
    cell_class = cell_class or {}
    out = [f'<table class="{css_class}">', "<thead><tr>"]
    out.extend(f"<th>{html.escape(h)}</th>" for h in headers)
    out.append("</tr></thead>")
    out.append("<tbody>")
    for i, row in enumerate(rows):
        klass = row_classes[i] if row_classes else ""
        out.append(f'<tr class="{klass}">' if klass else "<tr>")
        for header, cell in zip(headers, row, strict=True):
            names = " ".join(filter(None, ["num" if header in right else "", cell_class.get(header, "")]))
            attr = f' class="{names}"' if names else ""
            out.append(f"<td{attr}>{html.escape(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def render_html(report: Report, *, plots: dict[str, bytes] | None = None) -> str:
    """Renders the report as one self-contained HTML page (inline CSS, plots embedded as base64 PNG).

    Args:
        report: The report to render.
        plots: PNG images by name, as from :func:`peftbench.report_plots.render_plots`; ``None``
            draws them here, an empty dict leaves them out.
    """
    import base64

    if plots is None:
        from peftbench import report_plots

        plots = report_plots.render_plots(report.table)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>peftbench report</title>",
        f"<style>{_HTML_STYLE}</style></head><body>",
        "<h1>peftbench report</h1>",
        f"<p>{html.escape(_summary_line(report))} Generated {html.escape(generated)}.</p>",
        "<h2>Comparison</h2>",
    ]
    rows = display_rows(report.table)
    for line in budget_lines(report.table):
        parts.append(f'<p class="{"warning" if _is_warning(line) else "budget"}">{html.escape(line)}</p>')
    if rows:
        classes = ["pareto" if flag else "" for flag in report.table["pareto"].tolist()]
        parts.append(
            _html_table(DISPLAY_HEADERS, rows, _RIGHT, "comparison", classes, cell_class={"Budget": "nowrap"})
        )
    else:
        parts.append("<p>No successful runs to compare.</p>")
    parts.extend(f'<p class="stopped">{html.escape(note)}</p>' for note in stopped_notes(report.table))
    parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in NOTES) + "</ul>")
    if plots:
        parts.append("<h2>Plots</h2>")
        from peftbench.report_plots import PLOT_TITLES

        for name, png in plots.items():
            title = PLOT_TITLES.get(name, name)
            data = base64.b64encode(png).decode("ascii")
            parts.append(
                f'<figure id="plot-{html.escape(name)}">'
                f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}"></figure>'
            )
    parts.append("<h2>Failed or cancelled runs</h2>")
    if report.failed.empty:
        parts.append("<p>None.</p>")
    else:
        parts.append(
            _html_table(
                FAILED_HEADERS,
                _failed_rows(report.failed, None),
                set(),
                "failed",
                cell_class={"Error": "error"},
            )
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render(report: Report, fmt: str = "text", *, plots: dict[str, bytes] | None = None) -> str:
    """Renders a report in one of :data:`FORMATS`.

    Args:
        report: The report from :func:`build_report`.
        fmt: ``text``, ``markdown``, ``csv``, ``latex`` or ``html``.
        plots: Only for ``html``: see :func:`render_html`.

    Returns:
        The rendered document.

    Raises:
        ValueError: For an unknown format.
    """
    renderers: dict[str, Callable[[Report], str]] = {
        "text": render_text,
        "markdown": render_markdown,
        "csv": render_csv,
        "latex": render_latex,
    }
    if fmt == "html":
        return render_html(report, plots=plots)
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return renderers[fmt](report)


# --------------------------------------------------------------------------------------------------
# One sweep, for the harness
# --------------------------------------------------------------------------------------------------

SWEEP_HEADERS = (
    "Method",
    "Rank",
    "LR",
    "Seed",
    "Budget",
    "Steps",
    "Trainable",
    "%",
    "Peak memory",
    "Throughput",
    "Score",
    "Status",
)


def _steps_cell(steps: Any, budget_steps: Any, stopped: bool) -> str:
    """``120/150†``: optimizer steps taken, of the steps the budget works out to, marked if stopped early."""
    mark = STOPPED_MARK if stopped else ""
    if _missing(steps):
        return "-" + mark if mark else "-"
    if _missing(budget_steps):
        return f"{_steps_text(steps)}{mark}"
    return f"{_steps_text(steps)}/{_steps_text(budget_steps)}{mark}"


def _sweep_budget_warnings(runs: pd.DataFrame) -> list[str]:
    """A warning for each model and task whose runs (with a known budget) have different budgets."""
    lines = []
    known = runs[~((runs["_unit"] == "") & runs["_amount"].isna()).to_numpy()]
    for (model, task), sub in known.groupby(["model", "task"], sort=True):
        budgets = {
            (str(u), math.inf if math.isnan(a) else float(a)): budget_label(u, a)
            for u, a in zip(sub["_unit"].tolist(), sub["_amount"].tolist(), strict=True)
        }
        if len(budgets) > 1:
            listed = ", ".join(label for _, label in sorted(budgets.items()))
            lines.append(
                f"Warning: {model or '-'} / {task or '-'} mixes training budgets ({listed}); compare runs "
                "only within one budget."
            )
    return lines


def format_sweep_table(results_dir: str | os.PathLike[str], sweep_id: str) -> str:
    """Renders one sweep's runs as a compact plain-text table, for the end of a multirun.

    One line per run (method, rank, learning rate, seed, training budget, optimizer steps taken out
    of the budget's steps, e.g. ``120/150``, trainable parameters and their share of the model, peak
    memory, throughput, score, status), then the failed or cancelled runs with their error. A run
    that stopped before its budget has :data:`STOPPED_MARK` after its steps, explained in a note; a
    warning says when runs of one model and task have different budgets. Never raises on a missing
    or empty file: it says so in the returned text.

    Args:
        results_dir: Directory holding ``runs.csv``.
        sweep_id: The sweep whose runs to show.

    Returns:
        The table as text, ending with a newline.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RunsFileWarning)
            runs = load_runs(results_dir, columns=REPORT_COLUMNS)
    except FileNotFoundError as error:
        return f"Sweep {sweep_id}: {error}\n"
    runs = runs[(runs["sweep_id"] == str(sweep_id)).to_numpy()]
    if runs.empty:
        return f"Sweep {sweep_id}: no runs recorded in {_runs_path(results_dir)}\n"
    unit, amount, inferred = _budget_columns(runs)
    budget_steps = np.where(inferred, _floats(runs["train_steps"]), _floats(runs["budget_steps"]))
    runs = runs.assign(
        _order=np.arange(len(runs)),
        _unit=unit,
        _unit_order=np.where(unit == "", "\uffff", unit),  # an unknown budget sorts last
        _amount=amount,
        _budget_steps=budget_steps,
        _stopped=_flags(runs["stopped_early"]),
    )
    runs = runs.sort_values(
        ["method", "rank", "lr", "_unit_order", "_amount", "seed", "_order"],
        kind="mergesort",
        na_position="last",
    )
    rows = []
    for rec in runs.to_dict("records"):
        if rec["status"] != "success":  # a failed run's partial figures are not results
            rec.update(score=math.nan, train_tokens_per_s=math.nan, train_samples_per_s=math.nan)
        gpu, rss = rec["peak_gpu_mem_bytes"], rec["peak_rss_bytes"]
        memory = (
            _memory_cell(gpu, "GPU")
            if not _missing(gpu)
            else _memory_cell(rss, "RSS" if not _missing(rss) else "")
        )
        rows.append(
            [
                str(rec["method"]),
                "-" if _missing(rec["rank"]) else str(rec["rank"]),
                "-" if _missing(rec["lr"]) else f"{rec['lr']:g}",
                "-" if _missing(rec["seed"]) else str(rec["seed"]),
                budget_label(rec["_unit"], rec["_amount"]),
                _steps_cell(rec["train_steps"], rec["_budget_steps"], rec["_stopped"]),
                human_count(rec["trainable_params"]),
                _pct(rec["trainable_pct"]),
                memory,
                _rate(rec["train_tokens_per_s"], rec["train_samples_per_s"]),
                _score(rec["score"])
                + (f" {rec['metric']}" if rec["metric"] and not _missing(rec["score"]) else ""),
                str(rec["status"]),
            ]
        )
    counts = runs["status"].value_counts()
    summary = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in STATUSES)
    right = {"Rank", "LR", "Seed", "Steps", "Trainable", "%", "Peak memory", "Throughput", "Score"}
    parts = [f"Sweep {sweep_id}: {len(runs)} run(s): {summary}"]
    parts.extend(_sweep_budget_warnings(runs))
    parts.append(_text_grid(SWEEP_HEADERS, rows, right))
    stopped = runs[runs["_stopped"].to_numpy(dtype=bool)]
    if not stopped.empty:
        reasons: dict[str, int] = {}
        for reason in stopped["stop_reason"].astype("str").tolist():
            name = _reasons_text(reason) or "reason not recorded"
            reasons[name] = reasons.get(name, 0) + 1
        listed = ", ".join(f"{name}: {n}" for name, n in reasons.items())
        parts.append(f"{STOPPED_MARK} stopped before its budget: {len(stopped)} run(s) ({listed})")
    failed = failed_runs(runs)
    if not failed.empty:
        parts.append("Failed or cancelled:")
        for rec in failed.to_dict("records"):
            seed = "-" if _missing(rec["seed"]) else rec["seed"]
            parts.append(
                f"  {rec['run_id'] or '-'} {rec['method']} ({rec['setting']}, seed {seed}) "
                f"{rec['status']}: {_one_line(rec['error'], 200)}"
            )
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

_EXTENSIONS = {
    ".txt": "text",
    ".md": "markdown",
    ".csv": "csv",
    ".tex": "latex",
    ".html": "html",
    ".htm": "html",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peftbench-report",
        description="Compare PEFT methods from the runs recorded in RESULTS_DIR/runs.csv.",
    )
    parser.add_argument(
        "results_dir", nargs="?", default="results", help="results directory (default: results)"
    )
    parser.add_argument("--model", action="append", help="keep only this model (repeatable)")
    parser.add_argument("--task", action="append", help="keep only this task (repeatable)")
    parser.add_argument("--method", action="append", help="show only this method (repeatable)")
    parser.add_argument("--sweep", action="append", help="keep only this sweep id (repeatable)")
    parser.add_argument(
        "--sort",
        metavar="COLUMN",
        help="sort by a comparison column or alias (score, params, memory, throughput, delta, ...)",
    )
    parser.add_argument("--desc", action="store_true", help="sort in descending order")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="output format (default: from the --output extension, else text)",
    )
    parser.add_argument("--output", "-o", metavar="PATH", help="write here instead of standard output")
    parser.add_argument("--plots-dir", metavar="DIR", help="also write the plots as PNG files into DIR")
    parser.add_argument("--no-plots", action="store_true", help="leave the plots out of the HTML page")
    parser.add_argument("--baseline", default=BASELINE_METHOD, help="method to compare with (default: full)")
    parser.add_argument(
        "--include-search",
        action="store_true",
        help="also compare the trials of learning-rate searches (scored on the search split)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``peftbench-report`` command line.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit status: 0 on success, 1 when there is no runs file, 2 on a usage error.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    fmt = args.format
    if fmt is None:
        fmt = _EXTENSIONS.get(Path(args.output).suffix.lower(), "text") if args.output else "text"
    try:
        if args.sort is not None:
            resolve_sort_column(args.sort)
        report = build_report(
            args.results_dir,
            models=args.model,
            tasks=args.task,
            methods=args.method,
            sweeps=args.sweep,
            sort=args.sort,
            descending=args.desc,
            baseline_method=args.baseline,
            include_search=args.include_search,
        )
    except FileNotFoundError as error:
        print(f"peftbench-report: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"peftbench-report: {error}", file=sys.stderr)
        return 2

    plots: dict[str, bytes] | None = None
    if args.plots_dir or (fmt == "html" and not args.no_plots):
        from peftbench import report_plots

        plots = report_plots.render_plots(report.table)
        if args.plots_dir:
            for path in report_plots.save_plots(plots, args.plots_dir):
                print(f"wrote {path}", file=sys.stderr)
    if fmt == "html" and args.no_plots:
        plots = {}
    document = render(report, fmt, plots=plots)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(document, encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
        if fmt == "csv" and not report.failed.empty:
            failed_path = out.with_name(f"{out.stem}_failed.csv")
            failed_path.write_text(render_failed_csv(report), encoding="utf-8")
            print(f"wrote {failed_path} (failed or cancelled runs)", file=sys.stderr)
    else:
        sys.stdout.write(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
