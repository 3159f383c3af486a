"""Houlsby and Pfeiffer bottleneck adapters: placement, sizes, the adapter's formula, layer norms."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from peftbench.methods import get_method
from peftbench.methods.adapters import AdapterLinear, Bottleneck, NormOffset
from peftbench.methods.base import MethodConfigError, method_state_dict
from tests.tiny_models import FAMILIES

HOULSBY, PFEIFFER = get_method("houlsby"), get_method("pfeiffer")

# Per family: (layer index pattern, attention output projection, FFN output projection), by name.
LAYOUT = {
    "bert": (r"bert\.encoder\.layer\.(\d+)\.", "attention.output.dense", "output.dense"),
    "gpt2": (r"transformer\.h\.(\d+)\.", "attn.c_proj", "mlp.c_proj"),
    "llama": (r"model\.layers\.(\d+)\.", "self_attn.o_proj", "mlp.down_proj"),
    "vit": (r"vit\.layers\.(\d+)\.", "attention.o_proj", "mlp.fc2"),
}


def _apply(spec, family: str, **kwargs):
    tiny = FAMILIES[family]()
    model = spec.apply(tiny.model(), spec.config_cls(**kwargs))
    return tiny, model.eval()


def _adapters(model: nn.Module) -> dict[str, AdapterLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, AdapterLinear)}


@pytest.mark.parametrize("family", sorted(LAYOUT))
def test_houlsby_has_two_adapters_per_layer_and_pfeiffer_one(family):
    layer_re, attn_out, ffn_out = LAYOUT[family]
    for spec, expected in ((HOULSBY, {attn_out, ffn_out}), (PFEIFFER, {ffn_out})):
        _, model = _apply(spec, family)
        per_layer: dict[str, set[str]] = {}
        for name in _adapters(model):
            match = re.match(layer_re + "(.*)", name)
            assert match, f"{spec.name}: adapter outside a layer: {name}"
            per_layer.setdefault(match.group(1), set()).add(match.group(2))
        assert per_layer == {"0": expected, "1": expected}, spec.name


def test_t5_houlsby_adapts_self_and_cross_attention_and_ffn():
    _, model = _apply(HOULSBY, "t5")
    names = sorted(
        n.split(".", 2)[1] + ":" + n.rsplit(".", 2)[-2] + "." + n.rsplit(".", 1)[-1] for n in _adapters(model)
    )
    assert names.count("encoder:SelfAttention.o") == 2 and names.count("encoder:DenseReluDense.wo") == 2
    assert names.count("decoder:SelfAttention.o") == 2 and names.count("decoder:EncDecAttention.o") == 2
    assert names.count("decoder:DenseReluDense.wo") == 2 and len(names) == 10
    _, model = _apply(PFEIFFER, "t5")
    assert all(n.endswith("DenseReluDense.wo") for n in _adapters(model)) and len(_adapters(model)) == 4


@pytest.mark.parametrize(
    "kwargs, width",
    [
        ({}, 32 // 16),  # default reduction_factor 16
        ({"reduction_factor": 4}, 32 // 4),
        ({"bottleneck_size": 5}, 5),
        ({"reduction_factor": 4, "bottleneck_size": 5}, 5),  # an explicit size wins
    ],
)
def test_bottleneck_width_from_reduction_factor_or_explicit_size(kwargs, width):
    _, model = _apply(PFEIFFER, "bert", **kwargs)
    for module in _adapters(model).values():
        assert module.adapter.down.weight.shape == (width, 32)
        assert module.adapter.up.weight.shape == (32, width)


def test_a_reduction_factor_that_leaves_no_bottleneck_is_refused_before_changing_the_model():
    tiny = FAMILIES["bert"]()
    model = tiny.model()
    with pytest.raises(MethodConfigError, match="no bottleneck"):
        HOULSBY.apply(model, HOULSBY.config_cls(reduction_factor=64))
    assert not _adapters(model)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("family", ["bert", "gpt2"])  # nn.Linear and GPT-2's transposed Conv1D
@pytest.mark.parametrize(
    "non_linearity, act",
    [("relu", torch.relu), ("gelu", nn.functional.gelu), ("swish", nn.functional.silu), ("tanh", torch.tanh)],
)
def test_adapter_output_is_h_plus_up_act_down_h(family, non_linearity, act):
    tiny = FAMILIES[family]()
    base = tiny.model()
    _, model = _apply(HOULSBY, family, bottleneck_size=3, non_linearity=non_linearity)
    name, module = next(iter(_adapters(model).items()))
    original = base.get_submodule(name)
    with torch.no_grad():
        module.adapter.up.weight.normal_()
        module.adapter.up.bias.normal_()
        x = torch.randn(2, 5, module.in_features)
        h = original(x)
        down, up = module.adapter.down, module.adapter.up
        expected = h + act(h @ down.weight.T + down.bias) @ up.weight.T + up.bias
        torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(module(x), h, atol=1e-3)


def test_adapter_starts_as_identity_with_zero_up_projection():
    adapter = Bottleneck(32, 4, "relu")
    assert torch.equal(adapter.up.weight, torch.zeros(32, 4)) and torch.equal(
        adapter.up.bias, torch.zeros(32)
    )
    assert adapter.down.weight.abs().sum() > 0  # the down-projection is random, so gradients reach it later
    h = torch.randn(3, 32)
    assert torch.equal(adapter(h), h)


def test_base_state_dict_keys_are_kept_and_new_keys_carry_the_prefix():
    tiny = FAMILIES["gpt2"]()
    base_keys = set(tiny.model().state_dict())
    for spec in (HOULSBY, PFEIFFER):
        _, model = _apply(spec, "gpt2", train_layer_norms=True)
        keys = set(model.state_dict())
        assert base_keys <= keys
        new = keys - base_keys
        assert new and all(any(p.startswith(spec.param_prefix) for p in k.split(".")) for k in new)


def test_layer_norms_stay_frozen_by_default():
    _, model = _apply(HOULSBY, "bert")
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and not any(p.requires_grad for m in norms for p in m.parameters())
    assert not any(isinstance(m, NormOffset) for m in model.modules())


@pytest.mark.parametrize(
    "family, norm_params",
    [
        # bert: embeddings LayerNorm + 2 layers x 2 LayerNorms, each weight and bias of 32.
        ("bert", (1 + 2 * 2) * 2 * 32),
        # llama: 2 layers x 2 RMSNorms + the final norm, weight only.
        ("llama", (2 * 2 + 1) * 32),
        # t5: encoder 2 x 2 + final, decoder 2 x 3 + final T5LayerNorms, weight only.
        ("t5", (2 * 2 + 1 + 2 * 3 + 1) * 32),
    ],
)
def test_train_layer_norms_trains_every_norm_through_prefixed_offsets(family, norm_params, tmp_path):
    tiny = FAMILIES[family]()
    _, plain = _apply(PFEIFFER, family)
    _, model = _apply(PFEIFFER, family, train_layer_norms=True)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    extra = sum(p.numel() for p in trainable.values()) - sum(
        p.numel() for p in plain.parameters() if p.requires_grad
    )
    assert extra == norm_params
    assert all(".pfeiffer_" in "." + n for n in trainable)
    with torch.no_grad():  # still exactly the base model at init
        assert torch.equal(tiny.logits(model), tiny.logits(tiny.model()))

    norm_weights = {
        n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("pfeiffer_ln_weight")
    }
    base_weights = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    model.train()
    opt = torch.optim.AdamW(trainable.values(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        tiny.loss(model).backward()
        opt.step()
    model.eval()
    assert any(not torch.equal(p, norm_weights[n]) for n, p in model.named_parameters() if n in norm_weights)
    assert all(torch.equal(p, base_weights[n]) for n, p in model.named_parameters() if n in base_weights)

    # The trained norms are part of the method's saved state and come back on load.
    state = {k: v.detach().contiguous().clone() for k, v in method_state_dict(model, PFEIFFER).items()}
    assert any("pfeiffer_ln_" in k for k in state)
    save_file(state, tmp_path / "adapter.safetensors")
    _, fresh = _apply(PFEIFFER, family, train_layer_norms=True)
    fresh.load_state_dict(load_file(tmp_path / "adapter.safetensors"), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(tiny.logits(fresh), tiny.logits(model), atol=0, rtol=0)


def test_norm_offset_reads_the_wrapped_norms_attributes():
    _, model = _apply(HOULSBY, "bert", train_layer_norms=True)
    norm = model.bert.encoder.layer[0].output.LayerNorm
    assert isinstance(norm, NormOffset) and norm.eps == 1e-12 and norm.normalized_shape == (32,)


def test_train_layer_norms_needs_norm_layers():
    with pytest.raises(MethodConfigError, match="no norm layers"):
        _apply(PFEIFFER, "mlp", target_modules=["fc2"], train_layer_norms=True)


def test_houlsby_and_pfeiffer_prefixes_are_distinct_and_applying_twice_is_refused():
    assert HOULSBY.param_prefix == "houlsby_" and PFEIFFER.param_prefix == "pfeiffer_"
    assert not HOULSBY.mergeable and not PFEIFFER.mergeable
    _, model = _apply(HOULSBY, "llama")
    with pytest.raises(MethodConfigError, match="already applied"):
        HOULSBY.apply(model, HOULSBY.config_cls())


def test_a_plain_module_needs_explicit_targets():
    model = FAMILIES["mlp"]().model()
    with pytest.raises(MethodConfigError, match="no default target modules"):
        PFEIFFER.apply(copy.deepcopy(model), PFEIFFER.config_cls())
    PFEIFFER.apply(model, PFEIFFER.config_cls(target_modules=r"fc\d"))
    assert sorted(_adapters(model)) == ["fc1", "fc2"]


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"reduction_factor": 0}, "reduction_factor"),
        ({"reduction_factor": True}, "reduction_factor"),
        ({"bottleneck_size": 0}, "bottleneck_size"),
        ({"non_linearity": "softmax"}, "non_linearity"),
        ({"train_layer_norms": "yes"}, "train_layer_norms"),
        ({"target_modules": []}, "target_modules"),
    ],
)
def test_bad_settings_are_refused_with_the_key(kwargs, key):
    for spec in (HOULSBY, PFEIFFER):
        with pytest.raises(MethodConfigError, match=key):
            spec.config_cls(**kwargs)
