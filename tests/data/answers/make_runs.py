"""Writes the fixed runs files of ``tests/test_report_answers.py``, in folders next to this script.

Run once (``python tests/data/answers/make_runs.py``); what it writes is committed. Every value is
fixed here, and rows are written as the harness writes them (``RunRecord.to_row``, ``append_csv_row``,
and ``runs/<run_id>.json`` for the runs whose evaluation curves and singular vectors the report reads).

* ``tied/``: MiniLM on VADER, 150 steps, 2 seeds each: ``full``; ``lora`` r=1, 4, 16 (r=4 and r=16 tied
  with the best, r=1 below), each LoRA run's JSON with its update spectrum (right singular vectors:
  r=4 and r=16 share their top directions, r=1's is another); ``pfeiffer`` at the majority-class
  baseline in both seeds (did not learn); ``ia3`` tied with the best but with one seed measured on a
  busy machine (contended). Evaluation curves every 50 steps.
* ``untied/``: ``full``, ``lora`` r=8 and ``ia3``, 2 seeds each, every setting clearly apart.
* ``single_seed/``: ``full``, ``lora`` r=8 and ``prefix`` (at the baseline), one seed each.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from peftbench.record import RunRecord, append_csv_row, write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
MIB = 2**20
BASELINE = 0.5535
SPECS = {  # method: (trainable params, peak RSS MiB, tokens/s, flops per token)
    "full": (22_713_602, 1400, 300.0, 6 * 22_000_000),
    "lora": (None, 1100, 520.0, 4 * 22_000_000),
    "ia3": (10_000, 1050, 600.0, 4 * 22_000_000),
    "pfeiffer": (150_000, 1080, 560.0, 4 * 22_000_000),
    "prefix": (120_000, 1090, 500.0, 4 * 22_000_000),
}


def _settings(method: str, rank: int | None) -> str:
    settings = {"alpha": 16.0, "dropout": 0.0, "rank": rank, "target_modules": None} if rank else {}
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


def _vectors(directions: np.ndarray) -> dict:
    q, _ = np.linalg.qr(directions)
    return {"shape": list(q.shape), "float16_base64": base64.b64encode(q.astype(np.float16).tobytes()).decode()}


def _spectrum(rank: int, shared: np.ndarray, other: np.ndarray, effective: float) -> list[dict]:
    k = min(rank, 8)
    basis = other[:, :1] if rank == 1 else shared[:, :k]
    return [{"name": f"bert.encoder.layer.{i}.attention.self.query.weight", "shape": [384, 384], "exact": True,
             "effective_rank": effective, "stable_rank": 1.0 + effective / 4, "singular_values": [1.0] * rank,
             "right_vectors": _vectors(basis)} for i in range(2)]


def write(folder: str, rows: list[tuple]) -> None:
    out = HERE / folder
    shutil.rmtree(out, ignore_errors=True)
    rng = np.random.default_rng(0)
    shared, other = np.linalg.qr(rng.standard_normal((384, 16)))[0], np.linalg.qr(rng.standard_normal((384, 1)))[0]
    for n, (method, rank, seed, score, drift, erank, cpu_util, curve) in enumerate(rows):
        params, rss, tokens_per_s, flops = SPECS[method]
        params = params or rank * 2 * 384 * 12 + 770
        setting = hashlib.sha256(f"{method}{rank}".encode()).hexdigest()[:16]
        record = RunRecord(
            run_id=f"{folder[:2]}{n:04d}", run_key=f"{setting}{seed}", setting_key=setting, sweep_id=f"sweep-{folder}",
            status="success", started_at="2026-12-01T10:00:00+00:00", finished_at="2026-12-01T10:01:00+00:00",
            method=method, model="sentence-transformers/all-MiniLM-L6-v2", task="vader", seed=seed, rank=rank,
            lr=5e-4 if method != "full" else 5e-5, method_settings=_settings(method, rank),
            trainable_params=params, total_params=22_713_602 + (params if method != "full" else 0),
            peak_rss_bytes=rss * MIB, train_samples_per_s=tokens_per_s / 4, train_tokens_per_s=tokens_per_s,
            train_time_s=30.0, budget_unit="steps", budget=150.0, budget_steps=150, train_steps=150,
            train_samples=4800, train_tokens=19200, stopped_early=False, score=score, metric="accuracy",
            best_score=score, best_step=150, train_flops_per_token=flops, device="cpu",
            update_effective_rank=erank, update_stable_rank=None if erank is None else 1.0 + erank / 4,
            representation_drift=drift, forgetting_reference="python_docs[256]", baseline_score=BASELINE,
            load_avg_1m_start=1.9, load_avg_1m_end=2.1, cpu_count=2, cpu_util=cpu_util, eval_on="eval",
        )
        record.eval_curve = [(step, value) for step, value in curve] if curve else [(150, score)]
        if method == "lora" and erank is not None:
            record.update_spectrum = _spectrum(rank, shared, other, erank)
        append_csv_row(out / "runs.csv", record.to_row())
        if curve or record.update_spectrum:
            write_json(out / "runs" / f"{record.run_id}.json", record)


def curve(*values: float) -> list[tuple[int, float]]:
    return [(50 * (i + 1), v) for i, v in enumerate(values)]


if __name__ == "__main__":
    write("tied", [  # method, rank, seed, score, drift, effective rank, cpu_util, eval curve
        ("full", None, 0, 0.919, 0.120, 40.5, 0.92, curve(0.80, 0.90, 0.919)),
        ("full", None, 1, 0.921, 0.130, 41.5, 0.91, curve(0.85, 0.91, 0.921)),
        ("lora", 1, 0, 0.880, 0.010, 1.0, 0.90, curve(0.70, 0.86, 0.880)),
        ("lora", 1, 1, 0.882, 0.011, 1.0, 0.90, curve(0.72, 0.85, 0.882)),
        ("lora", 4, 0, 0.915, 0.020, 2.9, 0.90, curve(0.75, 0.88, 0.915)),
        ("lora", 4, 1, 0.921, 0.022, 3.1, 0.90, curve(0.80, 0.89, 0.921)),
        ("lora", 16, 0, 0.917, 0.030, 6.0, 0.90, curve(0.76, 0.89, 0.917)),
        ("lora", 16, 1, 0.923, 0.032, 6.4, 0.90, curve(0.83, 0.90, 0.923)),
        ("pfeiffer", None, 0, BASELINE, 0.001, None, 0.90, curve(BASELINE, BASELINE, BASELINE)),
        ("pfeiffer", None, 1, BASELINE, 0.001, None, 0.90, curve(BASELINE, BASELINE, BASELINE)),
        ("ia3", None, 0, 0.910, 0.005, 30.0, 0.30, curve(0.70, 0.80, 0.910)),
        ("ia3", None, 1, 0.925, 0.006, 31.0, 0.90, curve(0.70, 0.84, 0.925)),
    ])
    write("untied", [
        ("full", None, 0, 0.920, 0.12, 40.0, 0.9, None), ("full", None, 1, 0.921, 0.13, 41.0, 0.9, None),
        ("lora", 8, 0, 0.800, 0.02, 5.0, 0.9, None), ("lora", 8, 1, 0.810, 0.02, 5.2, 0.9, None),
        ("ia3", None, 0, 0.700, 0.01, 30.0, 0.9, None), ("ia3", None, 1, 0.710, 0.01, 30.0, 0.9, None),
    ])
    write("single_seed", [
        ("full", None, 0, 0.920, 0.12, 40.0, 0.9, None), ("lora", 8, 0, 0.900, 0.02, 5.0, 0.9, None),
        ("prefix", None, 0, 0.556, 0.05, None, 0.9, None),
    ])
