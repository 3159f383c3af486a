"""Statistics over settings: confidence intervals, the Welch test against the best setting, the Pareto front.

scipy is imported only when there is something to test, which keeps ``import peftbench.report`` light.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from peftbench.report.groups import COMPARE_KEYS

CI_LEVEL = 0.95
"""Confidence level of each setting's interval for its mean score (Student's t, n - 1 df)."""

ALPHA = 0.05
"""Significance level of the comparison with the best setting."""

SIGNIFICANCE_TEST = "two-sided Welch t-test"
"""How each setting is compared with the best setting of its model and task."""

METRIC_RANGES = {
    "accuracy": (0.0, 1.0),
    "exact_match": (0.0, 1.0),
    "f1": (0.0, 1.0),
    "rouge": (0.0, 1.0),
    "rouge1": (0.0, 1.0),
    "rouge2": (0.0, 1.0),
    "rougeL": (0.0, 1.0),
    "matthews_correlation": (-1.0, 1.0),
    "pearsonr": (-1.0, 1.0),
    "spearmanr": (-1.0, 1.0),
}
"""The possible values of each metric peftbench ships (``peftbench/metrics/<name>``, as each one's
docstring states them): a setting's confidence interval is clipped to its metric's range."""

VS_BEST = ("best", "tied", "worse", "n/a")
"""Values of the ``vs_best`` column: the best setting (highest mean among those with at least 2
seeds), not distinguishable from it, significantly below it, or not testable (fewer than 2 seeds)."""


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

    Where the table has a ``metric`` column, each interval is clipped to its metric's possible
    values (:data:`METRIC_RANGES`): with 2 seeds the t interval of an accuracy can reach past 0 and
    1. The test itself uses the unclipped mean, std and seeds.

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
    if "metric" in table.columns:
        bounds = np.array([METRIC_RANGES.get(m, (-math.inf, math.inf)) for m in table["metric"].astype("str")],
                          dtype="float64").reshape(-1, 2)
        low, high = np.maximum(low, bounds[:, 0]), np.minimum(high, bounds[:, 1])  # NaN stays NaN
    table["score_ci_low"] = low
    table["score_ci_high"] = high
    table["vs_best"] = verdict.astype(str)
    table["p_vs_best"] = p_value
    return table
