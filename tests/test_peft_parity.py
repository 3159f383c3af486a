"""LoRA against Hugging Face peft (a test-only reference): same counts and, with the same weights, the
same outputs, unmerged and merged, on every language-model family."""

from __future__ import annotations

import copy

import peft
import pytest
import torch

from peftbench.methods import get_method
from tests.tiny_models import FAMILIES

TARGETS = {"bert": ["query", "value"], "roberta": ["query", "value"], "gpt2": ["c_attn"],
           "llama": ["q_proj", "v_proj"], "t5": ["q", "v"]}


def _pair(family: str, rank: int = 4, alpha: float = 8.0, rslora: bool = False):
    tiny = FAMILIES[family]()
    base = tiny.model()
    spec = get_method("lora")
    ours = spec.apply(copy.deepcopy(base), spec.config_cls(rank=rank, alpha=alpha, use_rslora=rslora,
                                                           target_modules=TARGETS[family]))
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=TARGETS[family],
                             use_rslora=rslora, fan_in_fan_out=family == "gpt2")
    theirs = peft.get_peft_model(copy.deepcopy(base), config)
    return tiny, ours, theirs


def _copy_random_lora_weights(ours, theirs) -> int:
    """Puts the same random A and B into both models (B non-zero so the update matters)."""
    generator = torch.Generator().manual_seed(7)
    copied = 0
    with torch.no_grad():
        for name, param in theirs.named_parameters():
            if ".lora_A.default." not in name and ".lora_B.default." not in name:
                continue
            value = torch.randn(param.shape, generator=generator) * 0.1
            param.copy_(value)
            ours_name = name.removeprefix("base_model.model.").replace(".default.weight", "")
            ours.get_parameter(ours_name).copy_(value)
            copied += 1
    return copied


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("family", sorted(TARGETS))
@pytest.mark.parametrize("rslora", [False, True])
def test_lora_matches_peft(family, rslora):
    tiny, ours, theirs = _pair(family, rslora=rslora)
    assert _trainable(ours) == _trainable(theirs) > 0
    assert _copy_random_lora_weights(ours, theirs) > 0
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        expected = tiny.logits(theirs)
        torch.testing.assert_close(tiny.logits(ours), expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(expected, tiny.logits(FAMILIES[family]().model()), atol=1e-4)
        get_method("lora").merge(ours)
        merged_theirs = theirs.merge_and_unload()
        torch.testing.assert_close(tiny.logits(ours), tiny.logits(merged_theirs), atol=1e-5, rtol=1e-5)
