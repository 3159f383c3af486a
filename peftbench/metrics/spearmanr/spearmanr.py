"""Spearman rank correlation as a local ``evaluate`` module (STS-B's GLUE metric), offline.

Pearson's r of the ranks, where tied values share the mean of the ranks they span; 0 when either
side is constant.
"""

from peftbench.metrics import base


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


class Spearmanr(base.PairedMetric, value_type="float64", values="scores"):
    """Spearman rank correlation between predicted and reference scores, in [-1, 1].

    Returns:
        spearmanr (float): in [-1, 1].
    """

    def score(self, predictions, references):
        return {"spearmanr": base.pearson(ranks(predictions), ranks(references))}
