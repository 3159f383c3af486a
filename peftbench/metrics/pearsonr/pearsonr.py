"""Pearson correlation as a local ``evaluate`` module (STS-B's GLUE metric, with Spearman), offline.

``r = cov(x, y) / (std(x) * std(y))`` over the predictions x and references y; 0 when either is
constant.
"""

import math

import datasets
import evaluate

_DESCRIPTION = "Pearson correlation between predicted and reference scores, in [-1, 1]."
_INPUTS = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): reference scores.
Returns:
    pearsonr (float): in [-1, 1].
"""


def pearson(xs, ys):
    """Pearson's r of two equal-length sequences (0.0 if either is constant)."""
    n = len(xs)
    if n != len(ys):
        raise ValueError(f"{n} predictions for {len(ys)} references")
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    var_x = sum((x - mean_x) ** 2 for x in xs)
    var_y = sum((y - mean_y) ** 2 for y in ys)
    if var_x == 0 or var_y == 0:
        return 0.0
    return float(cov / math.sqrt(var_x * var_y))


class Pearsonr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        return {"pearsonr": pearson(list(predictions), list(references))}
