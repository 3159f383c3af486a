"""ROUGE-1, ROUGE-2 and ROUGE-L F-measures as a local ``evaluate`` module, offline.

Text is lower-cased and split into runs of letters and digits. ROUGE-N counts clipped n-gram
overlaps; ROUGE-L uses the longest common subsequence of tokens. Each example's F1 is averaged
over the examples. ``rougeL`` comes first in the result, so it is the task's score.
"""

import re
from collections import Counter

from peftbench.metrics import base


def tokens(text):
    """Lower-cased alphanumeric tokens of ``text``."""
    return re.findall(r"[a-z0-9]+", (text or "").lower())


def f_measure(overlap, predicted, reference):
    if overlap == 0 or predicted == 0 or reference == 0:
        return 0.0
    precision, recall = overlap / predicted, overlap / reference
    return 2 * precision * recall / (precision + recall)


def rouge_n(pred, ref, n):
    pred_grams = Counter(tuple(pred[i : i + n]) for i in range(len(pred) - n + 1))
    ref_grams = Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
    overlap = sum((pred_grams & ref_grams).values())
    return f_measure(overlap, sum(pred_grams.values()), sum(ref_grams.values()))


def lcs_length(a, b):
    """Length of the longest common subsequence of two token lists (dynamic programming)."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


class Rouge(base.PairedMetric, value_type="string", values="texts"):
    """ROUGE (Lin 2004): n-gram and longest-common-subsequence overlap F-measures, averaged.

    Returns:
        rougeL, rouge1, rouge2 (float): mean F-measures in [0, 1].
    """

    def score(self, predictions, references):
        totals = {"rougeL": 0.0, "rouge1": 0.0, "rouge2": 0.0}
        for prediction, reference in zip(predictions, references, strict=True):
            pred, ref = tokens(prediction), tokens(reference)
            totals["rougeL"] += f_measure(lcs_length(pred, ref), len(pred), len(ref))
            totals["rouge1"] += rouge_n(pred, ref, 1)
            totals["rouge2"] += rouge_n(pred, ref, 2)
        count = max(1, len(references))
        return {name: float(value / count) for name, value in totals.items()}
