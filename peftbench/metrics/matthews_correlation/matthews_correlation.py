"""Matthews correlation coefficient as a local ``evaluate`` module (CoLA's GLUE metric), offline.

For K classes, from the confusion matrix C (rows: references, columns: predictions), with
``t_k`` references and ``p_k`` predictions of class k, ``c`` correct and ``s`` samples:
``MCC = (c*s - sum_k p_k*t_k) / sqrt((s^2 - sum_k p_k^2) * (s^2 - sum_k t_k^2))``; 0 when a
denominator term is 0 (a constant prediction or reference).
"""

import math
from collections import Counter

from peftbench.metrics import base


class MatthewsCorrelation(base.PairedMetric, value_type="int64", values="labels"):
    """Matthews correlation: a balanced measure of classification quality in [-1, 1].

    Returns:
        matthews_correlation (float): in [-1, 1]; 0 is no better than chance.
    """

    def score(self, predictions, references):
        samples = len(references)
        correct = sum(1 for p, r in zip(predictions, references, strict=True) if p == r)
        predicted, true = Counter(predictions), Counter(references)
        classes = set(predicted) | set(true)
        cross = sum(predicted[k] * true[k] for k in classes)
        pred_term = samples**2 - sum(v**2 for v in predicted.values())
        true_term = samples**2 - sum(v**2 for v in true.values())
        if pred_term == 0 or true_term == 0:
            return {"matthews_correlation": 0.0}
        return {"matthews_correlation": float((correct * samples - cross) / math.sqrt(pred_term * true_term))}
