"""Pearson correlation as a local ``evaluate`` module (STS-B's GLUE metric, with Spearman), offline.

``r = cov(x, y) / (std(x) * std(y))`` over the predictions x and references y; 0 when either is
constant.
"""

from peftbench.metrics import base


class Pearsonr(base.PairedMetric, value_type="float64", values="scores"):
    """Pearson correlation between predicted and reference scores, in [-1, 1].

    Returns:
        pearsonr (float): in [-1, 1].
    """

    def score(self, predictions, references):
        return {"pearsonr": base.pearson(predictions, references)}
