"""Compiled vs eager, and bf16 vs fp32 autocast, on the default benchmark (or any overrides).

Runs the same run (``python -m peftbench`` with the given overrides) as eager fp32, then with
``train.precision=bf16``, then with ``train.compile=true``, one after the other in this process
(the base weights and the tokenised task come from the per-process cache, so each variant's run
is the same work), and prints each variant's training throughput, score and compile time, and the
ratios to eager fp32. Each run's throughput leaves out its warm-up steps and any compile time.

    python benchmarks/compile_precision.py [--variants fp32 bf16 compiled] [--backend inductor] [overrides ...]

On CPU the inductor backend compiles C++ kernels with the system compiler on the first steps
(minutes on a small shared machine); ``--backend aot_eager`` checks tracing only (it is not
expected to be faster).
"""

from __future__ import annotations

import argparse
import json
import tempfile

from _common import compose_run

VARIANTS = {"fp32": [], "bf16": ["train.precision=bf16"], "compiled": ["train.compile=true"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--backend", default="inductor", help="train.compile_backend of the compiled variant")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("overrides", nargs="*", help="run overrides, e.g. train.steps=150 device=cuda")
    args = parser.parse_args()

    import torch

    from peftbench import runner

    rows = {}
    with tempfile.TemporaryDirectory() as results:
        for name in args.variants:
            extra = [*VARIANTS[name], *([f"train.compile_backend={args.backend}"] if name == "compiled" else [])]
            cfg, _ = compose_run([*args.overrides, *extra, f"results_dir={results}", "wandb.mode=disabled",
                                  "force=true"])
            record = runner.run(cfg)
            if record.status != "success":
                raise SystemExit(f"{name}: {record.error}")
            rows[name] = {"samples_per_s": record.train_samples_per_s, "score": record.score,
                          "precision": record.precision, "compile_time_s": record.compile_time_s,
                          "train_time_s": record.train_time_s, "stage_times_s": json.loads(record.stage_times_s)}
    print(f"device {record.device} ({record.device_name}), {torch.get_num_threads()} threads, "
          f"overrides {args.overrides or 'none (the default run)'}")
    base = rows.get("fp32")
    for name, row in rows.items():
        ratio = f", throughput x{row['samples_per_s'] / base['samples_per_s']:.3f} of fp32 eager" if base else ""
        compiled = f", compile {row['compile_time_s']:.1f} s" if row["compile_time_s"] is not None else ""
        print(f"{name:9} ran as {row['precision']}: {row['samples_per_s']:.1f} samples/s, score {row['score']:.4f}"
              f", training loop {row['train_time_s']:.1f} s{compiled}{ratio}")
    if base and "bf16" in rows:
        print(f"bf16/fp32 throughput ratio: {rows['bf16']['samples_per_s'] / base['samples_per_s']:.3f}, "
              f"score {rows['bf16']['score'] - base['score']:+.4f}")
    if base and "compiled" in rows:
        print(f"compiled/eager throughput ratio ({args.backend}): "
              f"{rows['compiled']['samples_per_s'] / base['samples_per_s']:.3f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
