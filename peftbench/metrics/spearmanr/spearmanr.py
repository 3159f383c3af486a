"""Spearman rank correlation as a local ``evaluate`` module (STS-B's GLUE metric), offline.

Pearson's r of the ranks, where tied values share the mean of the ranks they span; 0 when either
side is constant.
"""

import math

import datasets
import evaluate

_DESCRIPTION = "Spearman rank correlation between predicted and reference scores, in [-1, 1]."
_INPUTS = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): reference scores.
Returns:
    spearmanr (float): in [-1, 1].
"""


def ranks(values):
    """1-based ranks of ``values``; ties get the average of their positions."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            result[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return result


def _pearson(xs, ys):
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    var_x = sum((x - mean_x) ** 2 for x in xs)
    var_y = sum((y - mean_y) ** 2 for y in ys)
    return 0.0 if var_x == 0 or var_y == 0 else float(cov / math.sqrt(var_x * var_y))


class Spearmanr(evaluate.Metric):
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
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        return {"spearmanr": _pearson(ranks(list(predictions)), ranks(list(references)))}
