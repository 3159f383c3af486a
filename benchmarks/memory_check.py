"""Memory correctness: peftbench's reported peak against an independent reading of the same run.

On CPU the independent reading is the operating system's maximum resident set size of a separate
process that runs only that workload (one `python -m peftbench` run), read with GNU time
(`/usr/bin/time -v`, Debian package `time`) or, without it, from `getrusage(RUSAGE_CHILDREN)`.
On CUDA, the run's `peak_gpu_mem_bytes` is compared with `torch.cuda.memory_stats()`'s
`allocated_bytes.all.peak` read in the same process (see --cuda). Target: within 5%.

    python benchmarks/memory_check.py [--method lora] [--steps 40] [peftbench overrides ...]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def run_workload(results: Path, overrides: list[str]) -> tuple[int, str]:
    """Runs one peftbench run in a fresh process; returns (OS max RSS in bytes, how it was read)."""
    command = [sys.executable, "-m", "peftbench", f"results_dir={results}", "wandb.mode=disabled", *overrides]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if Path("/usr/bin/time").exists():
        proc = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, env=env)
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        if proc.returncode == 0 and match:
            return int(match.group(1)) * 1024, "/usr/bin/time -v"
        raise SystemExit(f"workload failed:\n{proc.stderr[-3000:]}")
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"workload failed:\n{proc.stderr[-3000:]}")
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, "getrusage(RUSAGE_CHILDREN)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lora")
    parser.add_argument("--steps", type=int, default=40)
    args, extra = parser.parse_known_args()
    overrides = [f"method={args.method}", f"train.steps={args.steps}", "device=cpu", *extra]
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp)
        os_peak, how = run_workload(results, overrides)
        (row,) = list(csv.DictReader(open(results / "runs.csv")))
    ours = int(row["peak_rss_bytes"])
    ratio = ours / os_peak
    print(f"workload: python -m peftbench {' '.join(overrides)}")
    print(f"peftbench peak_rss_bytes: {ours / 2**20:.1f} MiB")
    print(f"OS maximum RSS ({how}): {os_peak / 2**20:.1f} MiB")
    print(f"ratio peftbench / OS: {ratio:.3f}  (target within 5%: {'met' if abs(ratio - 1) <= 0.05 else 'NOT met'})")


if __name__ == "__main__":
    main()
