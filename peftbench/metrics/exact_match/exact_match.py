"""Exact match as a local ``evaluate`` module, so generation tasks score offline.

The share of predictions equal to their reference after stripping surrounding whitespace (the
task's answer extraction has already been applied to both).
"""

from peftbench.metrics import base


class ExactMatch(base.PairedMetric, value_type="string", values="answers"):
    """Exact match: the share of predicted strings equal to their reference string.

    Settings:
        ignore_case (bool): compare case-insensitively (False by default).

    Returns:
        exact_match (float): in [0, 1].
    """

    def score(self, predictions, references, ignore_case=False):
        if not references:
            return {"exact_match": 0.0}

        def norm(text):
            text = (text or "").strip()
            return text.lower() if ignore_case else text

        hits = sum(norm(p) == norm(r) for p, r in zip(predictions, references, strict=True))
        return {"exact_match": float(hits / len(references))}
