"""The GPU suite's CPU-side logic: arguments, skipping without CUDA, the results file, one section's
arithmetic on a tiny config on the CPU. The CUDA figures themselves need a GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO

SUITE = REPO / "benchmarks" / "gpu_suite.py"


def _env():
    # The shell script calls `python`: make it this interpreter.
    return {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_script_without_a_gpu_skips_every_section_and_writes_the_file(tmp_path):
    out = tmp_path / "gpu_results.json"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), "--skip-install", "--out", str(out)],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert results["cuda_available"] is False and results["date"] and results["torch"] == torch.__version__
    sections = [f["section"] for f in results["figures"]]
    assert sections == ["cuda_tests", "parity", "qlora_memory", "harness", "mfu", "memory"]
    assert all(f["status"] == "skipped" and f["detail"] == "no CUDA device on this machine" for f in results["figures"])
    assert "[parity] parity: skipped: no CUDA device on this machine" in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["--steps", "0"], "--steps must be a positive integer, got 0"),
    (["--only", "speed"], "invalid choice: 'speed'"),
    (["--methods", "lora", "vera"], "invalid choice: 'vera'"),
])
def test_bad_arguments_are_refused(args, message):
    proc = subprocess.run([sys.executable, str(SUITE), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr


def test_parity_section_runs_ours_and_peft_on_a_tiny_llama_on_the_cpu(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(SUITE), "--allow-cpu", "--device", "cpu", "--size", "tiny",
                           "--only", "parity", "qlora_memory", "--methods", "lora", "qlora", "--steps", "2",
                           "--warmup", "1", "--seq", "16", "--batch", "2", "--out", str(out)],
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    figures = {f["name"]: f for f in json.loads(out.read_text())["figures"]}
    ratio = figures["lora step time ours/peft"]
    assert ratio["status"] == "ok" and ratio["value"] > 0 and ratio["bar"] == "<= 1.0"
    assert ratio["detail"]["trainable_ours"] == ratio["detail"]["trainable_peft"]  # the same adapters both ways
    assert figures["lora peak memory ours/peft"]["status"] == "skipped"  # no CUDA memory statistics on a CPU
    if "qlora step time ours/peft" in figures:  # bitsandbytes is installed: QLoRA ran both ways
        qlora = figures["qlora step time ours/peft"]
        assert qlora["status"] == "ok" and qlora["detail"]["trainable_ours"] == qlora["detail"]["trainable_peft"]
    else:  # without bitsandbytes the suite says why QLoRA did not run
        assert figures["qlora"]["status"] in ("skipped", "failed")
