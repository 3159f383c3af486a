"""What a setting is: the keys that group runs into settings, their labels and training budgets.

A setting is a model, task, method, rank, method settings, learning rate and training budget
(:data:`GROUP_KEYS`); its seeds are pooled. Settings are compared with each other only within one
model, task and budget (:data:`COMPARE_KEYS`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from peftbench.report.load import FLOAT_COLUMNS, INT_COLUMNS, REPORT_COLUMNS, to_bool

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


def floats(values: pd.Series) -> np.ndarray:
    """A column as float64 values, NaN where empty or not a number."""
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


def labels(settings: pd.Series, lrs: pd.Series) -> list[str]:
    """The :func:`setting_label` of each row (computed once per distinct settings and lr)."""
    cache: dict[tuple[str, float], str] = {}
    out = []
    for text, lr in zip(settings.tolist(), floats(lrs).tolist(), strict=True):
        key = (text, lr)
        if key not in cache:
            cache[key] = setting_label(text, lr)
        out.append(cache[key])
    return out


def ensure_run_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Adds empty the :data:`REPORT_COLUMNS` that a frame of runs lacks (an older file)."""
    missing = [name for name in REPORT_COLUMNS if name not in df.columns]
    if not missing:
        return df
    df = df.copy()
    for name in missing:
        df[name] = "success" if name == "status" else (np.nan if name in INT_COLUMNS + FLOAT_COLUMNS else "")
    return df


def flags(values: pd.Series) -> np.ndarray:
    """True where a boolean column holds true (missing, empty or anything else is False)."""
    if not isinstance(values.dtype, pd.BooleanDtype) and values.dtype != bool:
        values = to_bool(values.astype("str"))
    return values.fillna(False).to_numpy(dtype=bool)


def budget_columns(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    amount = floats(df["budget"])
    steps = floats(df["train_steps"])
    success = (df["status"].astype("str") == "success").to_numpy()
    inferred = (unit == "") & np.isnan(amount) & np.isfinite(steps) & success
    if inferred.any():
        unit = np.where(inferred, "steps", unit)
        amount = np.where(inferred, steps, amount)
    return unit, amount, inferred


def group_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The grouping keys (:data:`GROUP_KEYS`) of each run, plus ``_budget_inferred``."""
    frame = df.loc[:, ["model", "task", "method", "method_settings"]].reset_index(drop=True)
    for name in ("model", "task", "method", "method_settings"):
        if frame[name].dtype != "str":
            frame[name] = frame[name].astype("str")
    frame["rank"] = floats(df["rank"])
    frame["lr"] = floats(df["lr"])
    unit, amount, inferred = budget_columns(df)
    frame["budget_unit"] = pd.array(unit, dtype="str")
    frame["budget"] = amount
    key = df["setting_key"] if "setting_key" in df.columns else pd.Series([""] * len(df))
    frame["setting_key"] = pd.array(key.fillna("").astype("str").to_numpy(), dtype="str")
    frame = frame.loc[:, list(GROUP_KEYS)]
    frame["_budget_inferred"] = inferred
    return frame
