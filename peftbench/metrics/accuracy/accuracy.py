"""Accuracy as a local ``evaluate`` module, so tasks score offline.

Loaded with ``evaluate.load("<this folder>")``; computes the fraction of predictions equal to the
references, optionally weighted.
"""

from peftbench.metrics import base


class Accuracy(base.PairedMetric, value_type="int64", values="labels"):
    """Accuracy: the share of predictions equal to their reference, (sum of correct) / N.

    Settings:
        normalize (bool): return the fraction (True, default) or the number of correct predictions.
        sample_weight (list of float): optional weight per example.

    Returns:
        accuracy (float): in [0, 1] when normalized.
    """

    def score(self, predictions, references, normalize=True, sample_weight=None):
        weights = sample_weight if sample_weight is not None else [1.0] * len(predictions)
        correct = sum(w for p, r, w in zip(predictions, references, weights, strict=True) if p == r)
        total = sum(weights)
        return {"accuracy": float(correct / total) if normalize else float(correct)}
