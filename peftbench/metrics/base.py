"""What every shipped metric shares: an ``evaluate.Metric`` over paired predictions and references.

A shipped metric declares its value type in its class line and its description in its docstring,
and writes only its formula in ``score``; the scaffold builds evaluate's ``MetricInfo`` and checks
that the two lists pair up.
Metric modules import this module (``from peftbench.metrics import base``), not its class, so that
``evaluate.load`` finds the metric's own class as the module's first ``evaluate.Metric``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import datasets
import evaluate

PYTHON_TYPES = {"int64": "int", "float64": "float", "string": "str"}


class PairedMetric(evaluate.Metric):
    """An evaluate metric of ``predictions`` against ``references`` of one value type.

    A metric declares itself in its class line and docstring::

        class Accuracy(base.PairedMetric, value_type="int64", values="labels"):
            \"\"\"Accuracy: the share of predictions equal to their reference.

            Returns:
                accuracy (float): in [0, 1].
            \"\"\"

    The docstring's first line is evaluate's description; the rest (settings, returns) follows the
    ``predictions``/``references`` arguments in its inputs description.

    Args (of the class line):
        value_type: the ``datasets.Value`` dtype of both columns (``int64``, ``float64``, ``string``).
        values: what the values are, for the inputs description (``labels``, ``scores``...).
    """

    value_type = "int64"
    values = "values"

    def __init_subclass__(cls, value_type: str = "int64", values: str = "values", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if value_type not in PYTHON_TYPES:
            raise ValueError(f"{cls.__name__}: value_type must be one of {', '.join(PYTHON_TYPES)}")
        cls.value_type, cls.values = value_type, values

    def _info(self) -> evaluate.MetricInfo:
        description, _, rest = inspect.cleandoc(type(self).__doc__ or "").partition("\n")
        kind = PYTHON_TYPES[self.value_type]
        inputs = (f"Args:\n    predictions (list of {kind}): predicted {self.values}.\n"
                  f"    references (list of {kind}): reference {self.values}.\n{rest.strip()}\n")
        value = datasets.Value(self.value_type)
        return evaluate.MetricInfo(
            description=description,
            citation="",
            inputs_description=inputs,
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
