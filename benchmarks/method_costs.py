"""Method cost ordering on the default model: peak memory, trainable parameters, optimizer state.

Runs full fine-tuning and LoRA (and any other --methods) on the default model and task through
peftbench, each in its own process so that peaks do not mix, and prints a table. It also builds
each method's model and takes one AdamW step to measure the optimizer state in bytes, which must
scale with the trainable count (AdamW keeps two float32 moments per trainable parameter: 8 bytes).

    python benchmarks/method_costs.py [--methods full lora] [--steps 30] [--device auto]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import compose_run


def optimizer_state_bytes(method: str) -> tuple[int, int]:
    """(trainable parameters, AdamW state bytes after one step) for ``method`` on the default model."""
    import torch

    from peftbench import runner
    from peftbench.record import RunRecord

    _, checked = compose_run([f"method={method}", "device=cpu", "wandb.mode=disabled"])
    runner.quiet_libraries(False)
    model, tokenizer = runner.build_model(checked, torch.device("cpu"), RunRecord())
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    batch = tokenizer(["a fine example", "a poor one"], return_tensors="pt", padding=True)
    model(**batch, labels=torch.tensor([1, 0])).loss.backward()
    optimizer.step()
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                if torch.is_tensor(t) and t.dim() > 0)
    return sum(p.numel() for p in params), state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["full", "lora"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            command = [sys.executable, "-m", "peftbench", f"method={method}", f"train.steps={args.steps}",
                       f"results_dir={tmp}", f"device={args.device}", "wandb.mode=disabled", "train.eval_size=200"]
            proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if proc.returncode:
                raise SystemExit(proc.stderr[-3000:])
        runs = {r["method"]: r for r in csv.DictReader(open(Path(tmp) / "runs.csv"))}
    for method in args.methods:
        trainable, state = optimizer_state_bytes(method)
        run = runs[method]
        memory = int(run["peak_gpu_mem_bytes"] or run["peak_rss_bytes"])
        rows.append((method, trainable, state, memory, "GPU" if run["peak_gpu_mem_bytes"] else "RSS",
                     float(run["train_samples_per_s"])))
    print(f"{'method':8} {'trainable':>12} {'optimizer state':>16} {'bytes/param':>11} {'peak memory':>14} {'samples/s':>10}")
    for method, trainable, state, memory, kind, speed in rows:
        print(f"{method:8} {trainable:12,} {state / 2**20:13.1f} MiB {state / trainable:11.2f} "
              f"{memory / 2**20:9.0f} MiB {kind} {speed:10.1f}")
    by_method = {r[0]: r for r in rows}
    if "full" in by_method and "lora" in by_method:
        full, lora = by_method["full"], by_method["lora"]
        print(f"full/lora peak memory: {full[3] / lora[3]:.2f}x (full above LoRA: {'yes' if full[3] > lora[3] else 'NO'}); "
              f"optimizer state ratio {full[2] / lora[2]:.0f}x vs trainable ratio {full[1] / lora[1]:.0f}x")


if __name__ == "__main__":
    main()
