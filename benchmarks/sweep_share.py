"""Training share of the README's sweep: the sum of the runs' ``train_time_s`` over the sweep's wall time.

Runs ``python -m peftbench method=lora rank=2,4,8 -m`` (Hydra's basic launcher: one process, so the
per-process caches of :mod:`peftbench.cache` serve the second and third runs) into a temporary
``results_dir``, timing the whole command from launch to exit, and prints the share (target >= 0.80),
where the rest went (each run's stages from its ``stage_times_s``, and what no stage covers:
interpreter start-up, imports, Hydra, the sinks and the sweep's summary table), and whether every
column that a CPU run fills is filled.

    python benchmarks/sweep_share.py [--results-dir DIR] [--json out.json] [-- extra overrides]

Extra overrides go to every run (``-- train.steps=20`` for a quick check); the target applies to
the README's sweep as it is. Figures from a machine shared with other work are not comparable to a
quiet one's: say which it was.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SWEEP = ["method=lora", "rank=2,4,8"]
TARGET = 0.80
# Columns a successful CPU run of this sweep leaves empty because they do not apply: GPU memory, MFU
# and the other processes' GPU use (CUDA only), the reference loss (causal LMs only), the zero-shot
# score (train.eval_at_start only), compile time (train.compile only), git (outside a checkout).
# The stages that measure the trained model, after its training loop: what every run must spend
# whatever the start-up costs.
AFTER_TRAINING = ("evaluate", "latency", "record", "answers")
CPU_EMPTY = {"error", "peak_gpu_mem_bytes", "peak_gpu_reserved_bytes", "mfu", "stop_reason", "compile_time_s",
             "git_sha", "git_dirty", "git_source", "gpu_other_mem_bytes", "gpu_util_pct", "ref_loss_delta",
             "zero_shot_score"}


def run_sweep(results_dir: Path, extra: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    """Runs the sweep as a user would; returns its wall seconds and the finished process."""
    command = [sys.executable, "-m", "peftbench", *SWEEP, f"results_dir={results_dir}", *extra, "-m"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=results_dir.parent, env=env, capture_output=True, text=True)
    return time.perf_counter() - started, proc


def summarize(rows: list[dict[str, str]], wall_s: float) -> dict:
    """The share, the stages of each run and the time no stage covers, from the CSV rows."""
    train_s = sum(float(r["train_time_s"]) for r in rows if r["train_time_s"])
    stages = [json.loads(r["stage_times_s"]) if r["stage_times_s"] else {} for r in rows]
    in_stages = sum(sum(s.values()) for s in stages)
    unfilled = sorted({c for r in rows for c, v in r.items() if v == "" and c not in CPU_EMPTY})
    after_s = sum(s.get(k, 0.0) for s in stages for k in AFTER_TRAINING)
    return {
        "after_training_s": after_s,
        # The share if nothing but the training loops and the measurements after them took time (no
        # start-up, load, data or sinks): what these measurements alone allow.
        "ceiling": train_s / (train_s + after_s) if train_s + after_s > 0 else 0.0,
        "wall_s": wall_s, "train_s": train_s, "share": train_s / wall_s if wall_s > 0 else 0.0,
        "runs": len(rows), "statuses": [r["status"] for r in rows], "stage_times_s": stages,
        "outside_stages_s": wall_s - in_stages, "unfilled_columns": unfilled, "target": TARGET,
    }


def report(summary: dict) -> str:
    lines = [f"sweep {' '.join(SWEEP)} -m: {summary['runs']} runs ({', '.join(summary['statuses'])}), "
             f"wall {summary['wall_s']:.1f} s, training loops {summary['train_s']:.1f} s"]
    for i, stages in enumerate(summary["stage_times_s"], start=1):
        lines.append(f"run {i} stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    lines.append(f"outside any run's stages (start-up, imports, sinks, summary): {summary['outside_stages_s']:.1f} s")
    lines.append(f"measurements after training ({', '.join(AFTER_TRAINING)}): {summary['after_training_s']:.1f} s "
                 f"in all; with nothing else taking time the share would be {summary['ceiling']:.3f}")
    lines.append("columns left empty that a CPU run fills: " + (", ".join(summary["unfilled_columns"]) or "none"))
    share = summary["share"]
    lines.append(f"training share sum(train_time_s) / wall: {share:.3f}  "
                 f"(target >= {TARGET:.2f}: {'met' if share >= TARGET else 'NOT met'})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, help="where the sweep writes (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("extra", nargs="*", help="overrides for every run, after --")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = (args.results_dir or Path(tmp) / "results").resolve()
        results.mkdir(parents=True, exist_ok=True)
        wall_s, proc = run_sweep(results, ["force=true", *args.extra])
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
            print(f"the sweep failed (exit {proc.returncode})", file=sys.stderr)
            return 1
        rows = list(csv.DictReader(open(results / "runs.csv", encoding="utf-8")))
        rows = [r for r in rows if r["sweep_id"] == rows[-1]["sweep_id"]]  # this sweep's, in an older folder too
    summary = summarize(rows, wall_s)
    print(report(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
