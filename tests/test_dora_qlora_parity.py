"""DoRA and QLoRA against Hugging Face peft (a test-only reference) on the tiny BERT, GPT-2, Llama and
T5 families: the same trainable counts and, from the same weights, the same outputs at init, with a
non-zero update, after the same optimizer steps, and (DoRA) merged.

DoRA is compared with ``peft.LoraConfig(use_dora=True)`` on the same full-precision base; QLoRA with
peft's LoRA on the same bitsandbytes 4-bit base (one quantized model, copied for both), so the two
see the very same packed weights.
"""

from __future__ import annotations

import copy

import peft
import pytest
import torch

from peftbench.methods import get_method
from peftbench.methods.dora import DoraLinear
from peftbench.methods.qlora import QLoraConfig, QLoraLinear, quantize_base
from tests.tiny_models import FAMILIES

TARGETS = {"bert": ["query", "value"], "gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"], "t5": ["q", "v"]}
RANK, ALPHA = 4, 8.0


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _peft_layer(theirs, name: str):
    return theirs.base_model.model.get_submodule(name)


def _copy_weights(ours, theirs, layer_type, random_b: bool, b_std: float = 0.1) -> int:
    """Gives each of our layers peft's A (and magnitude, for DoRA) and both the same B: zero, as at
    init, or random (so the update matters)."""
    generator = torch.Generator().manual_seed(7)
    copied = 0
    with torch.no_grad():
        for name, layer in ours.named_modules():
            if not isinstance(layer, layer_type):
                continue
            other = _peft_layer(theirs, name)
            layer.A.copy_(other.lora_A["default"].weight)
            b = torch.randn(layer.B.shape, generator=generator) * b_std if random_b else torch.zeros_like(layer.B)
            layer.B.copy_(b)
            other.lora_B["default"].weight.copy_(b)
            if isinstance(layer, DoraLinear):
                layer.dora_magnitude.copy_(other.lora_magnitude_vector["default"].weight)
            copied += 1
    return copied


def _close(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    """Equal up to ``rel`` of the largest expected value (the tiny models' logits are small, some
    about 1e-2, so a fixed absolute tolerance would mean little)."""
    scale = expected.abs().max().item()
    assert (actual - expected).abs().max().item() <= rel * scale, (actual, expected)


def _changed(actual: torch.Tensor, before: torch.Tensor) -> bool:
    return (actual - before).abs().max().item() > 1e-2 * before.abs().max().item()


def _steps(tiny, model, n: int = 3, lr: float = 1e-2) -> None:
    """AdamW steps in eval mode: the tiny models' own dropout off, so both sides compute the same."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    for _ in range(n):
        loss = tiny.loss(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _dora_pair(family: str):
    tiny = FAMILIES[family]()
    base = tiny.model()
    spec = get_method("dora")
    ours = spec.apply(copy.deepcopy(base), spec.config_cls(rank=RANK, alpha=ALPHA, target_modules=TARGETS[family]))
    config = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS[family],
                             use_dora=True, fan_in_fan_out=family == "gpt2")
    theirs = peft.get_peft_model(copy.deepcopy(base), config)
    return tiny, base, ours.eval(), theirs.eval()


@pytest.mark.parametrize("family", sorted(TARGETS))
def test_dora_matches_peft(family):
    tiny, base, ours, theirs = _dora_pair(family)
    assert _trainable(ours) == _trainable(theirs) > 0
    # Closed form: LoRA's r * (in + out) plus one magnitude per output, per adapted layer.
    layers = [m for m in ours.modules() if isinstance(m, DoraLinear)]
    assert _trainable(ours) == sum(RANK * (m.in_features + m.out_features) + m.out_features for m in layers)
    with torch.no_grad():
        reference = tiny.logits(base)
        assert _copy_weights(ours, theirs, DoraLinear, random_b=False) == len(layers) > 0
        _close(tiny.logits(ours), reference, 1e-6)  # B = 0: the base model
        _close(tiny.logits(theirs), reference, 1e-6)
        # A large B: DoRA renormalises the direction, so a small update barely moves the output.
        _copy_weights(ours, theirs, DoraLinear, random_b=True, b_std=1.0)
        expected = tiny.logits(theirs)
        _close(tiny.logits(ours), expected, 1e-5)
        assert _changed(expected, reference)
    # The same optimizer steps from the same weights: the gradients (norm detached) agree too.
    _steps(tiny, ours)
    _steps(tiny, theirs)
    with torch.no_grad():
        trained = tiny.logits(theirs)
        assert _changed(trained, expected)
        _close(tiny.logits(ours), trained, 1e-4)
        for layer in layers:
            peft_magnitude = _peft_layer(theirs, _name_of(ours, layer)).lora_magnitude_vector["default"].weight
            torch.testing.assert_close(layer.dora_magnitude, peft_magnitude, atol=1e-5, rtol=1e-5)
        get_method("dora").merge(ours)
        _close(tiny.logits(ours), trained, 1e-4)
        _close(tiny.logits(theirs.merge_and_unload()), tiny.logits(ours), 1e-4)


def _name_of(model, module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def _qlora_pair(family: str):
    """Our QLoRA and peft's LoRA on one bitsandbytes 4-bit copy of the tiny model."""
    tiny = FAMILIES[family]()
    config = QLoraConfig(rank=RANK, alpha=ALPHA, target_modules=TARGETS[family])
    quantized = quantize_base(tiny.model(), config).eval()
    quantized.is_loaded_in_4bit = True  # what transformers sets on a 4-bit model: peft's QLoRA path
    ours = get_method("qlora").apply(copy.deepcopy(quantized), config)
    peft_config = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS[family])
    theirs = peft.get_peft_model(copy.deepcopy(quantized), peft_config)
    return tiny, quantized, ours.eval(), theirs.eval()


@pytest.mark.parametrize("family", sorted(TARGETS))
def test_qlora_matches_peft_on_the_same_4bit_base(family):
    import bitsandbytes as bnb
    from peft.tuners.lora.bnb import Linear4bit as PeftLinear4bit

    tiny, quantized, ours, theirs = _qlora_pair(family)
    layers = [m for m in ours.modules() if isinstance(m, QLoraLinear)]
    assert layers and all(isinstance(_peft_layer(theirs, _name_of(ours, m)), PeftLinear4bit) for m in layers)
    assert all(isinstance(_peft_layer(theirs, _name_of(ours, m)).base_layer, bnb.nn.Linear4bit) for m in layers)
    assert _trainable(ours) == _trainable(theirs) == sum(RANK * (m.in_features + m.out_features) for m in layers)
    with torch.no_grad():
        reference = tiny.logits(quantized)
        _copy_weights(ours, theirs, QLoraLinear, random_b=False)
        torch.testing.assert_close(tiny.logits(ours), reference, atol=0, rtol=0)  # B = 0: the 4-bit base exactly
        _copy_weights(ours, theirs, QLoraLinear, random_b=True)
        expected = tiny.logits(theirs)
        _close(tiny.logits(ours), expected, 1e-5)
        assert _changed(expected, reference)
    _steps(tiny, ours)
    _steps(tiny, theirs)
    with torch.no_grad():
        trained = tiny.logits(theirs)
        assert _changed(trained, expected)
        _close(tiny.logits(ours), trained, 1e-4)
