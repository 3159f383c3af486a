"""Writes the golden test's fixed runs file, ``runs.csv`` next to this script.

Run once to create the fixture (``python tests/data/report_golden/make_runs.py``); the file it
writes is committed, and ``tests/test_report_golden.py`` renders it. Every value is fixed here (run
ids, times, hashes), so the file is the same on every run of this script. The rows are written the
way the harness writes them: a :class:`peftbench.record.RunRecord` flattened by ``to_row`` and
appended by ``append_csv_row``.

What the file holds:

* sweep ``multirun-2026-11-20-1a2b3c``, ``minilm`` / ``vader`` (pearson) on a GPU:
  150 steps: ``full`` (3 seeds), ``lora`` r=8 (3 seeds, one stopped early by early stopping, plus a
  failed seed with a multi-line error holding characters Markdown and LaTeX escape), ``lora``
  r=16 (2 seeds), ``ia3`` (3 seeds, plus a cancelled one), ``ia3`` with a larger batch (same label,
  another ``setting_key``: 2 seeds), ``houlsby`` (1 seed);
  300 steps: ``full`` and ``lora`` r=8 (2 seeds each);
* sweep ``multirun-2026-11-21-4d5e6f``, ``minilm`` / ``sst2`` (accuracy) on a CPU (RSS only):
  500,000 tokens: ``full`` and ``lora`` r=8 (2 seeds each), ``prefix`` (1 seed); and a ``houlsby`` run
  recorded without a budget (as an older harness wrote it);
* search ``multirun-2026-11-22-7a8b9c``: three ``lora`` trials scored on the search split
  (``eval_on=search``).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from peftbench.record import RunRecord, append_csv_row  # noqa: E402

HERE = Path(__file__).resolve().parent
MINILM_PARAMS = 22_713_216
GIB = 1024**3
MIB = 1024**2

SWEEP_A = "multirun-2026-11-20-1a2b3c"
SWEEP_B = "multirun-2026-11-21-4d5e6f"
SEARCH = "multirun-2026-11-22-7a8b9c"

_number = iter(range(1, 10_000))


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()[:12]


def _lora(r: int) -> str:
    return json.dumps({"alpha": 2.0 * r, "dropout": 0.0, "r": r, "target_modules": None, "use_rslora": False},
                      sort_keys=True, separators=(",", ":"))


def run(
    *,
    sweep: str,
    method: str,
    seed: int,
    lr: float,
    task: str = "vader",
    rank: int | None = None,
    settings: str = "{}",
    trainable: int = MINILM_PARAMS,
    budget_unit: str = "steps",
    budget: float = 150.0,
    budget_steps: int = 150,
    score: float | None = 0.5,
    batch_size: int = 16,
    status: str = "success",
    error: str = "",
    **extra: Any,
) -> RunRecord:
    """One run with plausible figures; ``extra`` overrides any other field."""
    n = next(_number)
    total = MINILM_PARAMS if method == "full" else MINILM_PARAMS + trainable
    metric = "pearson" if task == "vader" else "accuracy"
    eval_on = extra.get("eval_on", "eval")
    setting = (method, task, rank, settings, lr, budget_unit, budget, batch_size, eval_on)
    config = {"method": {"name": method}, "task": {"name": task, "eval_on": eval_on},
              "train": {"batch_size": batch_size, "lr": lr}, "seed": seed}
    done = status == "success"
    steps = budget_steps if done else 40
    record = RunRecord(
        run_id=f"golden{n:04d}",
        run_key=_hash(*setting, seed),
        setting_key=_hash(*setting),
        sweep_id=sweep,
        status=status,
        error=error,
        started_at=f"2026-11-{20 + (n // 40):02d}T{8 + (n % 12):02d}:{(7 * n) % 60:02d}:00+00:00",
        finished_at=f"2026-11-{20 + (n // 40):02d}T{8 + (n % 12):02d}:{(7 * n + 3) % 60:02d}:30+00:00",
        method=method,
        model="minilm",
        task=task,
        seed=seed,
        rank=rank,
        lr=lr,
        method_settings=settings,
        trainable_params=trainable,
        total_params=total,
        trainable_pct=100.0 * trainable / total,
        peak_gpu_mem_bytes=int((1.0 + trainable / MINILM_PARAMS) * GIB) + 4096 * n,
        peak_gpu_reserved_bytes=int((1.5 + trainable / MINILM_PARAMS) * GIB),
        peak_rss_bytes=int(2.25 * GIB) + 8192 * n,
        train_samples_per_s=(180.0 if method == "full" else 260.0) + 1.5 * seed,
        train_tokens_per_s=(11_520.0 if method == "full" else 16_640.0) + 96.0 * seed,
        train_time_s=steps * batch_size / 200.0,
        budget_unit=budget_unit,
        budget=budget,
        budget_steps=budget_steps,
        train_steps=steps,
        train_samples=steps * batch_size,
        train_tokens=steps * batch_size * 64,
        stopped_early=False if done else None,
        stop_reason="" if done else status,
        schedule="linear",
        warmup_ratio=0.06,
        eval_samples_per_s=900.0 + seed,
        score=score if done else None,
        metric=metric,
        metrics_json=json.dumps({metric: score}) if done and score is not None else "",
        eval_on="eval",
        scored_on="eval",
        best_score=None if score is None or not done else score + 0.004,
        best_step=budget_steps - 50 if done else None,
        final_train_loss=0.31 - 0.01 * seed if done else None,
        train_flops_per_token=6 * total if method == "full" else 4 * total + 2 * trainable,
        achieved_flops_per_s=2.5e13 + 1e11 * seed,
        mfu=0.0253 + 0.0001 * seed,
        infer_latency_ms=4.75 + 0.01 * seed,
        infer_latency_merged_ms=4.5 if method in ("lora", "ia3") else None,
        checkpoint_bytes=4 * trainable + 2048,
        device="cuda:0",
        device_name="NVIDIA H200",
        num_threads=16,
        python_version="3.11.7",
        torch_version="2.13.0",
        transformers_version="5.0.0",
        git_sha="a8c749c",
        git_dirty=False,
        hostname="bench-01",
        package_versions=json.dumps({"numpy": "2.3.0", "pandas": "3.0.0"}),
        config_json=json.dumps(config, sort_keys=True),
    )
    for name, value in extra.items():
        setattr(record, name, value)
    return record


def records() -> list[RunRecord]:
    rows: list[RunRecord] = []
    a = {"sweep": SWEEP_A}
    for seed, score in enumerate([0.8512, 0.8547, 0.8490]):
        rows.append(run(**a, method="full", seed=seed, lr=2e-5, score=score))
    for seed, score in enumerate([0.8421, 0.8466, 0.8398]):
        stopped = seed == 2
        rows.append(run(**a, method="lora", seed=seed, lr=1e-3, rank=8, settings=_lora(8), trainable=147_456,
                        score=score, **({"train_steps": 120, "train_samples": 1920, "train_tokens": 122_880, "stopped_early": True,
                                            "stop_reason": "early_stopping"}
                                        if stopped else {})))
    rows.append(run(**a, method="lora", seed=3, lr=1e-3, rank=8, settings=_lora(8), trainable=147_456,
                    status="failed",
                    error='torch.OutOfMemoryError: CUDA out of memory | tried to allocate 2.00 GiB & 50% "free"\n'
                          "  File \"peftbench/runner.py\", line 201, in train_step_x"))
    for seed, score in enumerate([0.8502, 0.8539]):
        rows.append(run(**a, method="lora", seed=seed, lr=1e-3, rank=16, settings=_lora(16), trainable=294_912,
                        score=score))
    for seed, score in enumerate([0.8301, 0.8299, 0.8312]):
        rows.append(run(**a, method="ia3", seed=seed, lr=3e-3, settings='{"target_modules":null}', trainable=9_216,
                        score=score))
    rows.append(run(**a, method="ia3", seed=3, lr=3e-3, settings='{"target_modules":null}', trainable=9_216,
                    status="cancelled", error="KeyboardInterrupt"))
    for seed, score in enumerate([0.8255, 0.8270]):
        rows.append(run(**a, method="ia3", seed=seed, lr=3e-3, settings='{"target_modules":null}', trainable=9_216,
                        score=score, batch_size=32))
    rows.append(run(**a, method="houlsby", seed=0, lr=1e-4, settings='{"non_linearity":"relu","reduction_factor":16}',
                    trainable=894_528, score=0.8444))
    for seed, score in enumerate([0.8603, 0.8611]):
        rows.append(run(**a, method="full", seed=seed, lr=2e-5, score=score, budget=300.0, budget_steps=300))
    for seed, score in enumerate([0.8580, 0.8472]):
        rows.append(run(**a, method="lora", seed=seed, lr=1e-3, rank=8, settings=_lora(8), trainable=147_456,
                        score=score, budget=300.0, budget_steps=300))

    cpu = {"peak_gpu_mem_bytes": None, "peak_gpu_reserved_bytes": None, "device": "cpu", "device_name": "",
           "mfu": None}
    b = {"sweep": SWEEP_B, "task": "sst2", "budget_unit": "tokens", "budget": 500_000.0, "budget_steps": 489}
    for seed, score in enumerate([0.9106, 0.9140]):
        rows.append(run(**b, method="full", seed=seed, lr=2e-5, score=score, **cpu))
    for seed, score in enumerate([0.9037, 0.9071]):
        rows.append(run(**b, method="lora", seed=seed, lr=1e-3, rank=8, settings=_lora(8), trainable=147_456,
                        score=score, **cpu))
    rows.append(run(**b, method="prefix", seed=0, lr=3e-3, settings='{"num_virtual_tokens":20,"projection":true}',
                    trainable=184_320, score=0.8819, **cpu))
    # A row as an older harness wrote it, without a budget: the report takes its 489 steps as its budget.
    legacy = run(**b, method="houlsby", seed=0, lr=1e-4, settings='{"non_linearity":"relu","reduction_factor":16}',
                 trainable=894_528, score=0.8977, **cpu)
    legacy.budget_unit, legacy.budget, legacy.budget_steps, legacy.stopped_early = "", None, None, None
    rows.append(legacy)

    for lr, score in ((3e-4, 0.8391), (1e-3, 0.8457), (3e-3, 0.8102)):
        rows.append(run(sweep=SEARCH, method="lora", seed=0, lr=lr, rank=8, settings=_lora(8), trainable=147_456,
                        score=score, eval_on="search", scored_on="search"))
    return rows


def main() -> None:
    path = HERE / "runs.csv"
    path.unlink(missing_ok=True)
    for record in records():
        append_csv_row(path, record.to_row())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
