"""F1 score as a local ``evaluate`` module, so tasks such as MRPC and QQP score offline.

Binary F1 of the positive class: ``2 * precision * recall / (precision + recall)``, 0 when there
is no true positive.
"""

from peftbench.metrics import base


class F1(base.PairedMetric, value_type="int64", values="labels"):
    """F1: the harmonic mean of precision and recall of the positive class (binary tasks).

    Settings:
        pos_label (int): the positive class, 1 by default.

    Returns:
        f1 (float): in [0, 1].
    """

    def score(self, predictions, references, pos_label=1):
        pairs = list(zip(predictions, references, strict=True))
        true_pos = sum(1 for p, r in pairs if p == pos_label and r == pos_label)
        false_pos = sum(1 for p, r in pairs if p == pos_label and r != pos_label)
        false_neg = sum(1 for p, r in pairs if p != pos_label and r == pos_label)
        denominator = 2 * true_pos + false_pos + false_neg
        return {"f1": float(2 * true_pos / denominator) if true_pos else 0.0}
