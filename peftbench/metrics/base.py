"""What every shipped metric shares: an ``evaluate.Metric`` over paired predictions and references.

A shipped metric declares its value type, description and inputs, and writes only its formula in
``score``; the scaffold builds evaluate's ``MetricInfo`` and checks that the two lists pair up.
Metric modules import this module (``from peftbench.metrics import base``), not its class, so that
``evaluate.load`` finds the metric's own class as the module's first ``evaluate.Metric``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import datasets
import evaluate


class PairedMetric(evaluate.Metric):
    """An evaluate metric of ``predictions`` against ``references`` of one value type.

    Attributes:
        VALUE_TYPE: the ``datasets.Value`` dtype of both columns (``int64``, ``float64``, ``string``).
        DESCRIPTION: one line: what the metric measures.
        INPUTS: the Google-style ``Args``/``Returns`` of ``compute``.
    """

    VALUE_TYPE = "int64"
    DESCRIPTION = ""
    INPUTS = ""

    def _info(self) -> evaluate.MetricInfo:
        value = datasets.Value(self.VALUE_TYPE)
        return evaluate.MetricInfo(
            description=self.DESCRIPTION,
            citation="",
            inputs_description=self.INPUTS,
            features=datasets.Features({"predictions": value, "references": value}),
        )

    def _compute(self, predictions: Sequence, references: Sequence, **settings: Any) -> dict[str, float]:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        return self.score(list(predictions), list(references), **settings)

    def score(self, predictions: list, references: list, **settings: Any) -> dict[str, float]:
        """The metric's values from two lists of equal length."""
        raise NotImplementedError


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson's r of two equal-length sequences (0.0 if either is constant or empty)."""
    n = len(xs)
    if n == 0:
        return 0.0
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    var_x = sum((x - mean_x) ** 2 for x in xs)
    var_y = sum((y - mean_y) ** 2 for y in ys)
    if var_x == 0 or var_y == 0:
        return 0.0
    return float(cov / math.sqrt(var_x * var_y))
