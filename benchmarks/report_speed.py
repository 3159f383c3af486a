"""Times the results report on a large, synthetic ``runs.csv``.

Usage::

    python benchmarks/report_speed.py [--rows 100000] [--keep DIR] [--target 5.0]

Generates ``--rows`` runs the way the harness writes them (``csv.DictWriter``, every column,
including a realistic ``config_json``, multi-line error messages on failed runs, the training
budget and about 3% of successful runs stopped early by early stopping), then times
the report: reading the file, aggregating, and rendering the text table. The HTML page with its
plots is timed separately. Exits with status 1 when the report takes longer than ``--target``
seconds.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peftbench.report import RUN_COLUMNS, build_report, load_runs, render  # noqa: E402

MODELS = {"minilm": 22_713_216, "roberta-base": 124_645_632}
TASKS = {"vader": "pearson", "sst2": "accuracy", "mnli": "accuracy"}
LRS = (1e-4, 3e-4, 1e-3)


def _method_grid() -> list[tuple[str, int | None, dict]]:
    grid: list[tuple[str, int | None, dict]] = [("full", None, {})]
    for r in (4, 8, 16, 32):
        grid.append(
            (
                "lora",
                r,
                {"alpha": 2.0 * r, "dropout": 0.0, "r": r, "target_modules": None, "use_rslora": False},
            )
        )
    for rf in (8, 16, 32):
        grid.append(("houlsby", None, {"non_linearity": "relu", "reduction_factor": rf}))
        grid.append(("pfeiffer", None, {"non_linearity": "relu", "reduction_factor": rf}))
    for length in (10, 20):
        grid.append(("prefix", None, {"num_virtual_tokens": length, "projection": True}))
    grid.append(("ia3", None, {"target_modules": None}))
    return grid


def _trainable(method: str, rank: int | None, settings: dict, total: int) -> int:
    if method == "full":
        return total
    if method == "lora":
        return 2 * 384 * rank * 12
    if method in ("houlsby", "pfeiffer"):
        factor = 2 if method == "houlsby" else 1
        return factor * 12 * 2 * 384 * (384 // settings["reduction_factor"])
    if method == "prefix":
        return settings["num_virtual_tokens"] * 384 * 24
    return 12 * 3 * 384


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Writes ``rows`` synthetic runs to ``path``.

    Args:
        path: The CSV file to write.
        rows: Number of runs.
        seed: Seed of the random generator.
    """
    rng = random.Random(seed)
    configs = [
        (model, task, method, rank, settings, lr)
        for model in MODELS
        for task in TASKS
        for method, rank, settings in _method_grid()
        for lr in LRS
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        # Ignore what the record lacks, so the benchmark also runs against an older record.
        writer = csv.DictWriter(handle, fieldnames=list(RUN_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for i in range(rows):
            model, task, method, rank, settings, lr = configs[i % len(configs)]
            run_seed = i // len(configs)
            total = MODELS[model]
            trainable = _trainable(method, rank, settings, total)
            total_all = total if method == "full" else total + trainable
            draw = rng.random()
            status = "success" if draw > 0.05 else ("failed" if draw > 0.01 else "cancelled")
            ok = status == "success"
            error = ""
            if status == "failed":
                error = (
                    'Traceback (most recent call last):\n  File "train.py", line 42, in step\n'
                    "torch.OutOfMemoryError: CUDA out of memory, tried to allocate 2.00 GiB"
                )
            elif status == "cancelled":
                error = "KeyboardInterrupt"
            budget_steps = 750  # 3 epochs of 8000 samples in batches of 32
            steps = budget_steps
            stop_reason = ""
            if not ok:
                steps = rng.randrange(1, budget_steps)
                stop_reason = status
            elif rng.random() < 0.03:
                steps = rng.randrange(budget_steps // 2, budget_steps)
                stop_reason = "early_stopping"
            config = {
                "model": {"name": model, "max_length": 128, "dtype": "float32"},
                "task": {"name": task, "metric": TASKS[task], "train_size": 8000, "eval_size": 2000},
                "method": {"name": method, **settings},
                "train": {
                    "lr": lr,
                    "epochs": 3,
                    "batch_size": 32,
                    "warmup_ratio": 0.06,
                    "weight_decay": 0.01,
                    "grad_clip": 1.0,
                    "scheduler": "linear",
                    "seed": run_seed,
                },
                "results_dir": "results",
                "sweep": f"sweep{i // 500:04d}",
                "device": "cuda:0",
                "wandb": {
                    "mode": "offline",
                    "project": "peftbench",
                    "entity": None,
                    "tags": ["bench", method],
                },
            }
            writer.writerow(
                {
                    "run_id": f"r{i:07d}",
                    "run_key": f"k{i % len(configs):05d}-{run_seed}",
                    "sweep_id": f"sweep{i // 500:04d}",
                    "status": status,
                    "error": error,
                    "started_at": f"2025-03-01T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}+00:00",
                    "finished_at": f"2025-03-01T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}+00:00",
                    "method": method,
                    "model": model,
                    "task": task,
                    "seed": run_seed,
                    "rank": "" if rank is None else rank,
                    "lr": lr,
                    "method_settings": json.dumps(settings, sort_keys=True, separators=(",", ":")),
                    "trainable_params": trainable,
                    "total_params": total_all,
                    "trainable_pct": 100.0 * trainable / total_all,
                    "peak_gpu_mem_bytes": int(2e9 + rng.random() * 1e9) if ok else "",
                    "peak_gpu_reserved_bytes": int(3e9) if ok else "",
                    "peak_rss_bytes": int(1.5e9 + rng.random() * 1e8),
                    "train_samples_per_s": round(100 + rng.random() * 50, 3) if ok else "",
                    "train_tokens_per_s": round(12000 + rng.random() * 6000, 3) if ok else "",
                    "train_time_s": round(60 + rng.random() * 30, 3) if ok else "",
                    "budget_unit": "epochs",
                    "budget": 3.0,
                    "budget_steps": budget_steps,
                    "train_steps": steps,
                    "train_samples": steps * 32,
                    "train_tokens": steps * 32 * 96,
                    "stopped_early": str(steps < budget_steps),
                    "stop_reason": stop_reason,
                    "schedule": "linear",
                    "warmup_ratio": 0.06,
                    "eval_samples_per_s": round(500 + rng.random() * 100, 3) if ok else "",
                    "score": round(0.8 + rng.random() * 0.1, 6) if ok else "",
                    "metric": TASKS[task],
                    "final_train_loss": round(0.2 + rng.random() * 0.2, 6) if ok else "",
                    "device": "cuda:0",
                    "device_name": "NVIDIA H200",
                    "num_threads": 16,
                    "python_version": "3.11.7",
                    "torch_version": "2.13.0",
                    "transformers_version": "5.0.0",
                    "git_sha": "0123456789abcdef0123456789abcdef01234567",
                    "git_dirty": "False",
                    "hostname": "bench-host",
                    "config_json": json.dumps(config, sort_keys=True, separators=(",", ":")),
                }
            )


def main(argv: list[str] | None = None) -> int:
    """Generates the file, times the report and prints the timings.

    Args:
        argv: Command-line arguments (see the module docstring).

    Returns:
        0 when the report met the target time, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="write runs.csv here and keep it")
    parser.add_argument("--target", type=float, default=5.0, help="seconds the report may take")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        directory = args.keep or Path(scratch)
        path = directory / "runs.csv"
        start = time.perf_counter()
        generate(path, args.rows)
        size_mb = path.stat().st_size / 1e6
        print(f"generated {args.rows} rows ({size_mb:.1f} MB) in {time.perf_counter() - start:.2f} s")

        start = time.perf_counter()
        report = build_report(directory)
        text = render(report, "text")
        report_s = time.perf_counter() - start
        print(
            f"report (read + aggregate + text table) on {args.rows} rows: {report_s:.2f} s "
            f"[{len(report.table)} settings, {len(report.failed)} failed/cancelled, {len(text)} chars]"
        )

        start = time.perf_counter()
        render(report, "html")
        print(f"html page with 3 plots: {time.perf_counter() - start:.2f} s")

        start = time.perf_counter()
        everything = load_runs(directory)
        print(
            f"load_runs with every column: {time.perf_counter() - start:.2f} s ({everything.shape[1]} columns)"
        )

    verdict = "within" if report_s < args.target else "OVER"
    print(f"{verdict} the {args.target:.1f} s target")
    return 0 if report_s < args.target else 1


if __name__ == "__main__":
    sys.exit(main())
