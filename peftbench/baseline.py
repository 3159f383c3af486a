"""The score a run must beat to have learned anything: the majority-class predictor's."""

from __future__ import annotations

from collections import Counter

from peftbench.tasks import TaskData


def majority_baseline(data: TaskData) -> float | None:
    """The task's metric of predicting the evaluation split's most frequent class for every example
    (for accuracy: that class's share; for F1 or MCC: the metric of that constant prediction).

    None for kinds other than classification, and for regression (``num_labels: 1``), where a
    constant prediction has no defined correlation.
    """
    task = data.kind.task
    if data.kind.name != "classification" or task is None or task.num_labels < 2:
        return None
    labels = [int(v) for v in data.eval["labels"]]
    if not labels:
        return None
    majority = Counter(labels).most_common(1)[0][0]
    return data.score([majority] * len(labels), labels)[0]
