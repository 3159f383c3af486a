"""benchmarks/sweep_share.py's arithmetic on recorded rows (the sweep itself is run by hand)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import benchmark_module

sweep_share = benchmark_module("sweep_share")


def _row(train_s: float, stages: dict[str, float]) -> dict[str, str]:
    return {"status": "success", "train_time_s": str(train_s), "stage_times_s": json.dumps(stages), "score": "0.9",
            "error": ""}


def test_share_ceiling_and_time_outside_the_stages():
    rows = [_row(20.0, {"setup": 1.0, "load": 5.0, "data": 1.0, "train": 20.5, "evaluate": 1.5, "latency": 3.0,
                        "record": 0.0, "answers": 2.0}),
            _row(20.0, {"setup": 0.3, "load": 0.3, "data": 0.1, "train": 20.5, "evaluate": 1.5, "latency": 2.5,
                        "record": 0.0, "answers": 2.0})]
    summary = sweep_share.summarize(rows, wall_s=90.0)
    assert summary["share"] == pytest.approx(40.0 / 90.0)
    assert summary["after_training_s"] == pytest.approx(12.5)
    assert summary["ceiling"] == pytest.approx(40.0 / 52.5)
    assert summary["outside_stages_s"] == pytest.approx(90.0 - 32.0 - 29.2)
    assert summary["unfilled_columns"] == []
    text = sweep_share.report(summary)
    assert "with nothing else taking time the share would be 0.762" in text
    assert "target >= 0.80: NOT met" in text


def test_a_column_left_empty_is_named():
    row = {**_row(10.0, {"train": 10.0}), "infer_latency_ms": ""}
    assert sweep_share.summarize([row], wall_s=20.0)["unfilled_columns"] == ["infer_latency_ms"]
