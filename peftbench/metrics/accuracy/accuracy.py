"""Accuracy as a local ``evaluate`` module, so tasks score offline.

Loaded with ``evaluate.load("<this folder>")``; computes the fraction of predictions equal to the
references, optionally weighted.
"""

import datasets
import evaluate

_DESCRIPTION = "Accuracy: the share of predictions equal to their reference, (sum of correct) / N."
_INPUTS = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
    normalize (bool): return the fraction (True, default) or the number of correct predictions.
    sample_weight (list of float): optional weight per example.
Returns:
    accuracy (float): in [0, 1] when normalized.
"""


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        weights = sample_weight if sample_weight is not None else [1.0] * len(predictions)
        correct = sum(w for p, r, w in zip(predictions, references, weights, strict=True) if p == r)
        total = sum(weights)
        return {"accuracy": float(correct / total) if normalize else float(correct)}
