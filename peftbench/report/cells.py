"""How values read to people: byte and parameter counts, scores, ratios, rates and training budgets.

Every function takes one value (or two) and returns the text of one cell; a missing value
(None, NaN, ``pd.NA``) is ``"-"``. This room imports nothing else of the report.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

STOPPED_MARK = "†"
"""Appended to the score of a setting of which at least one seed stopped before its budget."""


def missing(value: Any) -> bool:
    """Whether a value is missing: None, ``pd.NA`` or NaN."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def human_bytes(value: Any) -> str:
    """Formats a byte count with binary units, e.g. ``1.50 GiB``; "-" when missing."""
    if missing(value):
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" or size >= 999.5 else f"{size:.3g} {unit}"
        size /= 1024
    return f"{size:.3g} TiB"  # pragma: no cover - the loop always returns


def human_count(value: Any) -> str:
    """Formats a count with SI-style suffixes, e.g. ``125M`` or ``8.19k``; "-" when missing."""
    if missing(value):
        return "-"
    number = float(value)
    for threshold, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= threshold:
            return f"{number / threshold:.3g}{suffix}"
    return f"{number:.0f}"


def pct_text(value: Any) -> str:
    """A share in percent: ``0.65%``, ``0.041%``; "-" when missing."""
    if missing(value):
        return "-"
    value = float(value)
    if value == 0 or value >= 0.1:
        return f"{value:.2f}%"
    return f"{value:.2g}%"


def score_text(value: Any) -> str:
    """A score with four decimals; "-" when missing."""
    return "-" if missing(value) else f"{float(value):.4f}"


def ratio_text(value: Any) -> str:
    """A ratio to the baseline, e.g. ``1.44×``; "-" when missing."""
    return "-" if missing(value) else f"{float(value):.3g}×"


def delta_text(value: Any) -> str:
    """A signed score difference, e.g. ``-0.0088``; "-" when missing."""
    return "-" if missing(value) else f"{float(value):+.4f}"


def rate_text(tokens: Any, samples: Any) -> str:
    """Training throughput in tokens per second, else in samples per second; "-" when neither is known."""
    if not missing(tokens):
        return f"{human_count(tokens)} tok/s"
    if not missing(samples):
        return f"{human_count(samples)} samples/s"
    return "-"


def ci_cell(low: Any, high: Any) -> str:
    """A confidence interval, e.g. ``[0.8342, 0.8514]``; "n/a" when missing."""
    if missing(low) or missing(high):
        return "n/a"
    return f"[{float(low):.4f}, {float(high):.4f}]"


def vs_best_cell(verdict: Any, p_value: Any) -> str:
    """The comparison with the best setting, with its p-value where there is one: ``worse (p=0.048)``."""
    verdict = str(verdict) if not missing(verdict) and str(verdict) else "n/a"
    if verdict in ("tied", "worse") and not missing(p_value):
        return f"{verdict} (p={_p(p_value)})"
    return verdict


def _p(value: Any) -> str:
    return f"{float(value):.2g}"


def score_cell(mean: Any, std: Any) -> str:
    """Mean ± standard deviation over seeds; the mean alone for one seed."""
    if missing(mean):
        return "-"
    if missing(std):
        return score_text(mean)
    return f"{float(mean):.4f} ± {float(std):.4f}"


def memory_cell(value: Any, kind: str) -> str:
    """A byte count and what was measured, e.g. ``1.01 GiB GPU``."""
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
    unit = "" if missing(unit) else str(unit).strip()
    if missing(amount) or not math.isfinite(float(amount)):
        return f"? {unit}" if unit else "?"
    amount = float(amount)
    text = _compact_exact(amount) if unit == "tokens" else _number(amount)
    if not unit:
        return f"{text} ?"
    if amount == 1 and unit.endswith("s"):
        unit = unit[:-1]
    return f"{text} {unit}"


def steps_text(value: Any) -> str:
    """An optimizer step count, with one decimal when it is a mean that is not whole."""
    value = float(value)
    return _number(value) if value == int(value) else f"{value:,.1f}"


def reasons_text(reasons: Any) -> str:
    """Stop reasons (``early_stopping,failed``) for people (``early stopping, failed``)."""
    names = [r.strip().replace("_", " ") for r in str(reasons or "").split(",") if r.strip()]
    return ", ".join(names)


def one_line(text: str, limit: int | None) -> str:
    """Text on one line, cut to ``limit`` characters with an ellipsis; "-" when empty."""
    line = " ".join(str(text).split())
    if limit is not None and len(line) > limit:
        line = line[: limit - 1] + "…"
    return line or "-"
