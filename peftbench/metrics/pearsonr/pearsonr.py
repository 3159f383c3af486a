"""Pearson correlation as a local ``evaluate`` module (STS-B's GLUE metric, with Spearman), offline.

``r = cov(x, y) / (std(x) * std(y))`` over the predictions x and references y; 0 when either is
constant.
"""

from peftbench.metrics import base


class Pearsonr(base.PairedMetric):
    VALUE_TYPE = "float64"
    DESCRIPTION = "Pearson correlation between predicted and reference scores, in [-1, 1]."
    INPUTS = """
    Args:
        predictions (list of float): predicted scores.
        references (list of float): reference scores.
    Returns:
        pearsonr (float): in [-1, 1].
    """

    def score(self, predictions, references):
        return {"pearsonr": base.pearson(predictions, references)}
