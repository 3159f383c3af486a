"""The GPU suite's CPU-side logic: arguments, skipping without CUDA, the results file, one section's
arithmetic on a tiny config on the CPU. The CUDA figures themselves need a GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, benchmark_module

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
    # What the figures ran on, for a machine whose packages come partly from carried wheels.
    packages = results["packages"]
    assert packages["torch"] == torch.__version__ and packages["hydra-core"] and packages["datasets"]
    assert set(packages) == set(benchmark_module("gpu_suite").PACKAGES)
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


@pytest.mark.parametrize("method", ["lora", "ia3", "dora", "qlora"])
def test_each_parity_method_adapts_the_same_modules_ours_and_peft(method):
    """The suite compares like with like: ours and peft's adapt the same modules of the Llama config
    (equal trainable counts, the same adapted module names). IA3's two configs spell that
    differently (methods/ia3.py), which once made the suite's IA3 figure fail."""
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
    pytest.importorskip("peft")
    gpu_suite = benchmark_module("gpu_suite")
    cpu = torch.device("cpu")
    ours, theirs = (gpu_suite.build_model(impl, method, "tiny", cpu) for impl in ("ours", "peft"))

    def trainable(model):
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    def adapted(model):  # the module paths that hold a trainable tensor of the method
        paths = set()
        for name, p in model.named_parameters():
            if p.requires_grad:
                parts = name.removeprefix("base_model.model.").split(".")
                at = next(i for i, part in enumerate(parts) if part.startswith(("ia3_", "lora_", "dora_", "qlora_")))
                paths.add(".".join(parts[:at]))
        return paths

    assert trainable(ours) == trainable(theirs) > 0
    assert adapted(ours) == adapted(theirs) and len(adapted(ours)) >= 4


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


def test_a_slimmed_wheel_drops_only_the_chosen_files_and_still_installs(tmp_path):
    """gpu_deps.py cuts bitsandbytes and the MiniLM package down for the GPU machine: the dropped
    files leave the archive and its RECORD, a note says what went, and pip installs the result."""
    import re
    import zipfile

    gpu_deps = benchmark_module("gpu_deps")
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo/__init__.py", "X = 1\n")
        zf.writestr("demo/big_cuda118.so", b"\0" * 1000)
        zf.writestr("demo-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
        zf.writestr("demo-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("demo-1.0.dist-info/RECORD", "demo/__init__.py,,\ndemo/big_cuda118.so,,\n")
    assert gpu_deps.slim(wheel, re.compile(r"big_cuda118\.so$")) == ["demo/big_cuda118.so"]
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        record = zf.read("demo-1.0.dist-info/RECORD").decode()
        note = zf.read("demo-1.0.dist-info/PEFTBENCH-SLIMMED").decode()
    assert "demo/big_cuda118.so" not in names and "demo/__init__.py" in names
    assert "big_cuda118" not in record and re.search(r"^demo/__init__\.py,sha256=\S+,6$", record, re.M)
    assert "demo/big_cuda118.so" in note
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target",
                           str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (target / "demo" / "__init__.py").read_text() == "X = 1\n" and not (target / "demo" / "big_cuda118.so").exists()


def test_the_cuda_tests_section_runs_the_files_that_hold_cuda_tests():
    gpu_suite = benchmark_module("gpu_suite")
    files = {p.name for p in gpu_suite.cuda_test_files()}
    assert {"test_measure.py", "test_qlora.py", "test_sweeps.py"} <= files
    assert "test_wandb_live.py" not in files  # no CUDA test there: its imports need not work on the GPU machine


def test_the_script_refuses_a_deps_folder_without_wheels(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), "--deps", str(tmp_path)],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 2 and "has no wheels/ folder" in proc.stderr


def test_a_measurement_past_the_budget_is_stopped_and_every_figure_is_saved_as_it_comes(tmp_path, monkeypatch):
    """A hanging compile or test must not cost the figures measured before it: each process is
    stopped GRACE_S past the budget, and the results file is rewritten after every figure."""
    gpu_suite = benchmark_module("gpu_suite")
    monkeypatch.setattr(gpu_suite, "GRACE_S", 0.5)
    out = tmp_path / "r.json"
    suite = gpu_suite.Suite(gpu_suite.parse_args(["--budget-s", "0", "--out", str(out)]))
    suite.header = {"suite": "test"}
    proc = suite.call([sys.executable, "-c", "import time; time.sleep(30)"])
    assert proc.returncode == 124 and "past the suite's budget" in proc.stderr
    suite.figure("harness", "one figure", 1.0, "x", ">= 0.97", True)
    saved = json.loads(out.read_text())
    assert saved["complete"] is False and [f["name"] for f in saved["figures"]] == ["one figure"]
