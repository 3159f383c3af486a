"""QLoRA: what is quantized, what the 4-bit weights cost, what is refused (bad settings, merging, a
missing bitsandbytes), and the runs through the CLI with the new model_weight_bytes column."""

from __future__ import annotations

import copy
import csv
import re
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from peftbench import methods
from peftbench.api import apply_method, count_parameters, is_mergeable, merge_method
from peftbench.config import register_configs, validate
from peftbench.errors import ConfigError
from peftbench.measure import model_weight_bytes, train_flops_per_token
from peftbench.methods.qlora import QLoraConfig, QLoraLinear, quantize_base
from tests.conftest import REPO, run_cli
from tests.tiny_models import FAMILIES

bnb = pytest.importorskip("bitsandbytes")
INSTALL = 'pip install "peftbench[qlora]"'


def _compose(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


def _qlora(family: str, **settings):
    tiny = FAMILIES[family]()
    base = tiny.model()
    return tiny, base, apply_method(copy.deepcopy(base), "qlora", **{"rank": 4, **settings})


def test_the_body_is_4bit_and_heads_embeddings_and_norms_stay_full_precision():
    _, base, model = _qlora("bert")
    kinds = {name: type(m) for name, m in model.named_modules()}
    body = [n for n, m in base.named_modules() if n.startswith("bert.") and isinstance(m, nn.Linear)]
    # 2 layers x (query, key, value, attention.output.dense, intermediate.dense, output.dense) + pooler.
    assert len(body) == 2 * 6 + 1
    assert all(kinds[n] is (QLoraLinear if n.endswith(("query", "value")) else bnb.nn.Linear4bit) for n in body)
    adapted = sorted(n for n, k in kinds.items() if k is QLoraLinear)
    assert adapted == [f"bert.encoder.layer.{i}.attention.self.{p}" for i in range(2) for p in ("query", "value")]
    assert all(model.get_submodule(n).weight.quant_state.quant_type == "nf4" for n in adapted)
    assert kinds["classifier"] is nn.Linear and model.classifier.weight.dtype == torch.float32
    assert model.classifier.weight.requires_grad  # the task head trains, as with LoRA
    assert model.bert.embeddings.word_embeddings.weight.dtype == torch.float32
    assert all(m.weight.dtype == torch.float32 for m in model.modules() if isinstance(m, nn.LayerNorm))
    assert model.bert.encoder.layer[0].attention.self.query.weight.dtype == torch.uint8  # packed 4-bit


def test_tied_lm_head_and_t5_ffn_output_stay_full_precision():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=4, n_positions=16))
    gpt2 = apply_method(gpt2, "qlora", rank=4)
    assert type(gpt2.lm_head) is nn.Linear and gpt2.lm_head.weight is gpt2.transformer.wte.weight
    assert isinstance(gpt2.transformer.h[0].mlp.c_fc, bnb.nn.Linear4bit)  # a Conv1D, quantized transposed
    _, _, t5 = _qlora("t5")
    wo = [m for n, m in t5.named_modules() if n.endswith("DenseReluDense.wo")]
    assert wo and all(type(m) is nn.Linear for m in wo)  # transformers keeps T5's `wo` in float32


def test_counts_and_flops_equal_loras_and_the_4bit_bytes_follow_the_closed_form():
    tiny = FAMILIES["llama"]()
    base = tiny.model()
    lora = apply_method(copy.deepcopy(base), "lora", rank=4)
    qlora = apply_method(copy.deepcopy(base), "qlora", rank=4)
    assert count_parameters(qlora) == count_parameters(lora)  # 4-bit weights count what they stand for
    assert train_flops_per_token(qlora) == train_flops_per_token(lora)
    # Each of the 14 body linears (7 per layer) goes from 4 bytes a weight to half a byte, plus per 64
    # weights one uint8 absmax, plus its quantization state's float offset, second-level absmax (one
    # float per 256 blocks) and code tables (16 + 256 floats); the head and embeddings are unchanged.
    sizes = [m.weight.numel() for n, m in base.named_modules() if isinstance(m, nn.Linear) and n.startswith("model.")]
    assert len(sizes) == 14
    saved = sum(4 * n - (n // 2 + n // 64 + 4 + 4 * -(-n // (64 * 256)) + 4 * (16 + 256)) for n in sizes)
    assert model_weight_bytes(lora) - model_weight_bytes(qlora) == saved


def test_model_weight_bytes_counts_packed_weights_and_their_quantization_state():
    for double_quant, expected in ((True, 5576), (False, 4928)):
        model = quantize_base(nn.Sequential(nn.Linear(128, 64)), QLoraConfig(double_quant=double_quant))
        assert isinstance(model[0], bnb.nn.Linear4bit)
        # 8192 weights at 4 bits: 4096 bytes; 128 blocks of 64; a 64-float bias (256 bytes); NF4's
        # 16-value code (64). Double quantization: 128 uint8 absmax + a float offset + 1 float absmax
        # of the second level + its 256-value code = 128 + 4 + 4 + 1024; without: 128 float absmax.
        assert model_weight_bytes(model) == expected
    shared = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    shared[1].weight = shared[0].weight
    assert model_weight_bytes(shared) == 4 * (64 + 8 + 8)  # the tied weight counts once


def test_apply_on_an_already_4bit_base_uses_its_weights():
    tiny = FAMILIES["gpt2"]()
    config = QLoraConfig(rank=4)
    quantized = quantize_base(tiny.model(), config)
    fp32 = tiny.model()
    torch.manual_seed(5)  # the same draws for LoRA's A
    on_4bit = methods.get_method("qlora").apply(copy.deepcopy(quantized), config)
    torch.manual_seed(5)
    on_fp32 = methods.get_method("qlora").apply(fp32, config)
    with torch.no_grad():
        for model in (on_4bit, on_fp32):
            for m in model.modules():
                if isinstance(m, QLoraLinear):
                    m.B.fill_(0.05)
        torch.testing.assert_close(tiny.logits(on_4bit), tiny.logits(on_fp32), atol=0, rtol=0)


@pytest.mark.parametrize("settings", [{"quant_type": "fp4"}, {"double_quant": False},
                                      {"compute_dtype": "bfloat16"}])
def test_settings_reach_the_4bit_layers(settings):
    tiny, _, model = _qlora("llama", **settings)
    layer = model.model.layers[0].self_attn.q_proj
    state = layer.weight.quant_state
    assert state.quant_type == settings.get("quant_type", "nf4")
    assert state.nested == settings.get("double_quant", True)
    assert layer.compute_dtype == getattr(torch, settings.get("compute_dtype", "float32"))
    with torch.no_grad():
        out = tiny.logits(model)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_quantize_modules_selects_and_a_full_precision_target_is_refused():
    _, _, model = _qlora("bert", quantize_modules=["query", "value"])
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) == 0  # all 4 are QLoraLinear
    assert sum(isinstance(m, QLoraLinear) for m in model.modules()) == 4
    assert isinstance(model.bert.encoder.layer[0].attention.self.key, nn.Linear)
    with pytest.raises(methods.MethodConfigError, match="leaves these target_modules in full precision"):
        _qlora("bert", quantize_modules=["query"])


def test_the_4bit_weights_survive_moves_and_copies():
    tiny, _, model = _qlora("bert")
    with torch.no_grad():
        before = tiny.logits(model)
        moved = model.to("cpu")
        copied = copy.deepcopy(moved)
        assert isinstance(copied.bert.encoder.layer[0].attention.self.query.weight, bnb.nn.Params4bit)
        torch.testing.assert_close(tiny.logits(moved), before, atol=0, rtol=0)
        torch.testing.assert_close(tiny.logits(copied), before, atol=0, rtol=0)


def test_merging_is_refused_with_the_reason():
    _, _, model = _qlora("bert")
    assert not is_mergeable("qlora")
    with pytest.raises(methods.MethodConfigError, match="stored in 4 bits.*measured unmerged"):
        merge_method(model, "qlora")
    with pytest.raises(methods.MethodConfigError, match="QLoRA cannot be merged"):
        model.bert.encoder.layer[0].attention.self.query.merge()


def test_an_unknown_quant_type_is_refused_naming_the_key():
    with pytest.raises(methods.MethodConfigError, match=r"quant_type='int3'.*nf4, fp4"):
        QLoraConfig(quant_type="int3")
    with pytest.raises(ConfigError, match=r"quant_type='int3'"):
        validate(_compose(["method=qlora", "method.quant_type=int3"]))
    with pytest.raises(ConfigError, match="compute_dtype='int8'"):
        validate(_compose(["method=qlora", "method.compute_dtype=int8"]))


def test_without_bitsandbytes_qlora_is_refused_before_loading(monkeypatch, tmp_path):
    from peftbench import runner

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now fails
    with pytest.raises(methods.MethodConfigError, match="method=qlora.*bitsandbytes.*" + re.escape(INSTALL)):
        QLoraConfig()
    with pytest.raises(ConfigError, match=re.escape(INSTALL)):
        validate(_compose(["method=qlora"]))
    loaded = []
    monkeypatch.setattr(runner, "load_model_with_info", lambda *a, **k: loaded.append(1))  # what the runner loads with
    record = runner.run(_compose(["method=qlora", f"results_dir={tmp_path}", "wandb.mode=disabled"]))
    assert record.status == "failed" and INSTALL in record.error
    assert not loaded and record.trainable_params is None and record.budget_steps is None


def test_the_methods_package_imports_without_bitsandbytes():
    code = ("import sys; sys.modules['bitsandbytes'] = None; import peftbench.methods as m; "
            "print(sorted(m.method_names()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "'qlora'" in proc.stdout and "'dora'" in proc.stdout


def test_cli_refuses_a_bad_quant_type_before_training(tmp_path):
    proc = run_cli(["method=qlora", "method.quant_type=int3", f"results_dir={tmp_path}", "wandb.mode=disabled"],
                   cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "quant_type='int3'" in proc.stderr and "nf4, fp4" in proc.stderr
    assert "[train]" not in proc.stderr


def test_lora_qlora_dora_through_the_cli(tiny_bert_dir, tmp_path):
    results = tmp_path / "results"
    proc = run_cli([f"model.name={tiny_bert_dir}", "method=lora,qlora,dora", "rank=4", f"results_dir={results}",
                    "wandb.mode=disabled", "train.steps=6", "train.batch_size=8", "train.eval_size=32",
                    "train.log_every=2", "train.measure_warmup_steps=1", "-m"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {r["method"]: r for r in csv.DictReader(open(results / "runs.csv"))}
    assert sorted(rows) == ["dora", "lora", "qlora"] and all(r["status"] == "success" for r in rows.values())
    count = {m: int(r["trainable_params"]) for m, r in rows.items()}
    assert count["qlora"] == count["lora"] == 2 * 2 * 4 * 64 + 66
    assert count["dora"] == count["lora"] + 2 * 2 * 32  # one magnitude per output of the 4 layers
    weight_bytes = {m: int(r["model_weight_bytes"]) for m, r in rows.items()}
    assert weight_bytes["qlora"] < weight_bytes["lora"] < weight_bytes["dora"]
    assert rows["qlora"]["infer_latency_ms"] and rows["qlora"]["infer_latency_merged_ms"] == ""
    assert rows["dora"]["infer_latency_merged_ms"] != ""


@pytest.mark.cuda
def test_qlora_on_cuda_matches_cpu_and_quantizes_on_the_gpu():
    tiny, base, on_cpu = _qlora("llama")
    on_gpu = copy.deepcopy(on_cpu).to("cuda")  # as the runner moves it: 4-bit weights travel packed
    layer = on_gpu.model.layers[0].self_attn.q_proj
    assert layer.weight.device.type == "cuda" and layer.weight.quant_state.absmax.device.type == "cuda"
    assert model_weight_bytes(on_gpu) == model_weight_bytes(on_cpu)
    inputs = {k: v.cuda() for k, v in tiny.inputs.items()}
    with torch.no_grad():
        torch.testing.assert_close(on_gpu(**inputs).logits.cpu(), tiny.logits(on_cpu), atol=1e-4, rtol=1e-4)
    loss = nn.functional.cross_entropy(on_gpu(**inputs).logits, tiny.labels.cuda())
    loss.backward()
    assert layer.B.grad is not None and layer.B.grad.abs().sum() > 0
    quantized_there = apply_method(copy.deepcopy(base).to("cuda"), "qlora", rank=4)  # quantized on the GPU
    torch.testing.assert_close(quantized_there.model.layers[0].self_attn.q_proj.base_weight().cpu(),
                               on_cpu.model.layers[0].self_attn.q_proj.base_weight(), atol=1e-6, rtol=0)


def test_an_evaluation_leaves_the_4bit_layer_as_training_uses_it():
    """bitsandbytes repacks a ``Linear4bit`` for CPU inference on AVX-512 BF16 processors (this
    project's CI machines among them) at the first forward without gradients, after which its input
    got no gradient; we turn that off (methods/qlora.py ``no_cpu_repacking``)."""
    from peftbench.methods.qlora import quantize_linear

    torch.manual_seed(0)
    layer = quantize_linear(nn.Linear(128, 96, bias=False), QLoraConfig())
    x = torch.randn(8, 128)
    before = layer(x.clone().requires_grad_(True)).detach()
    layer.eval()
    with torch.no_grad():
        evaluated = layer(x)
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
    torch.testing.assert_close(evaluated, before, atol=0, rtol=0)  # the same 4-bit matmul in both modes
    layer.train()
    inputs = x.clone().requires_grad_(True)
    layer(inputs).sum().backward()
    assert inputs.grad is not None and inputs.grad.abs().sum() > 0  # what reaches the adapters below it
    # A layer narrower than a 64-value block (the tiny test models') evaluates too.
    narrow = quantize_linear(nn.Linear(32, 32), QLoraConfig()).eval()
    with torch.no_grad():
        assert torch.isfinite(narrow(torch.randn(4, 32))).all()
