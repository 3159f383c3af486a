"""(IA)^3 against Hugging Face peft's IA3 (a test-only reference), and IA3's own promises."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import IA3Config as PeftIA3Config
from peft import get_peft_model
from torch import nn

from peftbench.methods import get_method
from peftbench.methods.base import MethodConfigError
from peftbench.methods.ia3 import IA3Config, IA3Linear
from tests.tiny_models import FAMILIES

# Our defaults, written as peft targets (peft's target_modules include the feed-forward modules).
PEFT_TARGETS = {
    "bert": (r".*\.(key|value|layer\.\d+\.output\.dense)", r".*\.layer\.\d+\.output\.dense"),
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
}
SPEC = get_method("ia3")


def _ours(family: str, **kwargs):
    tiny = FAMILIES[family]()
    model = SPEC.apply(tiny.model(), IA3Config(**kwargs))
    return tiny, model.eval()


def _peft(family: str, target_modules=None, feedforward_modules=None):
    tiny = FAMILIES[family]()
    config = PeftIA3Config(target_modules=target_modules, feedforward_modules=feedforward_modules)
    return get_peft_model(tiny.model(), config).eval()


def _peft_vectors(peft_model) -> dict[str, nn.Parameter]:
    """Our module name -> peft's ``ia3_l`` parameter of the same module."""
    out = {}
    for name, param in peft_model.named_parameters():
        if ".ia3_l." in name:
            module = name.split(".ia3_l.")[0].removeprefix("base_model.model.")
            out[module] = param
    return out


def _outputs(tiny, model: nn.Module) -> torch.Tensor:
    """Last hidden states ``(batch, seq, hidden)`` (order 1, unlike a fresh head's tiny logits) and logits.

    Returns: ``(batch * seq * hidden + batch * classes,)``.
    """
    out = model(**tiny.inputs, output_hidden_states=True)
    return torch.cat([out.hidden_states[-1].flatten(), out.logits.flatten()])


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("family", sorted(PEFT_TARGETS))
def test_trainable_count_matches_peft_with_the_same_targets(family):
    _, ours = _ours(family)
    reference = _peft(family, *PEFT_TARGETS[family])
    assert _count(ours) == _count(reference) > 0


@pytest.mark.parametrize("family", sorted(PEFT_TARGETS))
def test_outputs_match_peft_with_the_same_random_vectors(family):
    tiny, ours = _ours(family)
    reference = _peft(family, *PEFT_TARGETS[family])
    vectors = _peft_vectors(reference)
    ours_layers = {n: m for n, m in ours.named_modules() if isinstance(m, IA3Linear)}
    assert sorted(vectors) == sorted(ours_layers)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in vectors.items():
            param.copy_(0.5 + torch.rand(param.shape, generator=g))  # non-trivial, away from ones
            ours_layers[name].ia3_l.copy_(param.flatten())
        expected = _outputs(tiny, reference)
        got = _outputs(tiny, ours)
        base = _outputs(tiny, tiny.model())
        assert not torch.allclose(got, base, atol=1e-2), "the random vectors should change the output"
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        SPEC.merge(ours)  # the merged model matches peft too
        torch.testing.assert_close(_outputs(tiny, ours), expected, atol=1e-5, rtol=0)


def test_bert_defaults_leave_the_attention_output_projection_alone():
    _, ours = _ours("bert")
    for i in range(2):
        layer = ours.bert.encoder.layer[i]
        assert type(layer.attention.output.dense) is nn.Linear
        assert isinstance(layer.output.dense, IA3Linear) and layer.output.dense.mode == "input"
        assert layer.output.dense.ia3_l.shape == (64,)  # the FFN's inner width
        assert layer.attention.self.key.mode == layer.attention.self.value.mode == "output"
    # peft's default for BERT (``output.dense`` as a suffix) also scales the attention output
    # projection's input: one 32-wide vector per layer more than the paper (documented difference).
    peft_default = _peft("bert")
    assert any("attention.output.dense.ia3_l" in n for n, _ in peft_default.named_parameters())
    assert _count(peft_default) == _count(ours) + 2 * 32


def test_llama_key_value_vectors_have_the_grouped_key_value_width():
    _, ours = _ours("llama")
    attn = ours.model.layers[0].self_attn
    assert attn.k_proj.ia3_l.shape == attn.v_proj.ia3_l.shape == (2 * 8,)  # 2 kv heads x head_dim 8
    assert type(attn.q_proj) is nn.Linear and type(attn.o_proj) is nn.Linear
    assert ours.model.layers[0].mlp.down_proj.ia3_l.shape == (48,)


def test_gpt2_scales_keys_and_values_of_the_fused_projection_only():
    tiny, ours = _ours("gpt2")
    c_attn = ours.transformer.h[0].attn.c_attn
    assert c_attn.mode == "fused_kv" and c_attn.ia3_l.shape == (2 * 32,)
    with torch.no_grad():
        c_attn.ia3_l.uniform_(0.5, 1.5)
        x = torch.randn(3, 32)
        base_out = x @ c_attn.weight + c_attn.bias
        out = c_attn(x)
    torch.testing.assert_close(out[:, :32], base_out[:, :32], atol=0, rtol=0)  # queries untouched
    torch.testing.assert_close(out[:, 32:], base_out[:, 32:] * c_attn.ia3_l, atol=1e-6, rtol=1e-6)
    # peft's default scales the whole c_attn output, queries included: 32 more values per layer.
    peft_default = _peft("gpt2")
    assert _count(peft_default) == _count(ours) + 2 * 32


def test_gpt2_matches_peft_when_peft_query_scales_stay_at_one():
    tiny, ours = _ours("gpt2")
    reference = _peft("gpt2")
    vectors = _peft_vectors(reference)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, module in ours.named_modules():
            if isinstance(module, IA3Linear):
                module.ia3_l.copy_(0.5 + torch.rand(module.ia3_l.shape, generator=g))
                ref = vectors[name].view(-1)
                ref.copy_(module.output_scale() if module.mode != "input" else module.ia3_l)
        torch.testing.assert_close(_outputs(tiny, ours), _outputs(tiny, reference), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_merge_then_unmerge_restores_the_base_weights(family):
    _, ours = _ours(family)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with torch.no_grad():
        for module in ours.modules():
            if isinstance(module, IA3Linear):
                module.ia3_l.uniform_(0.5, 1.5)
    SPEC.merge(ours)
    changed = [k for k, v in ours.state_dict().items() if "ia3_l" not in k and not torch.equal(v, before[k])]
    assert changed, "merging should change base weights"
    SPEC.unmerge(ours)
    for key, value in ours.state_dict().items():
        if "ia3_l" not in key:
            torch.testing.assert_close(value, before[key], atol=1e-6, rtol=1e-6)


def test_merge_refuses_a_zero_scale_and_leaves_weights_untouched():
    _, ours = _ours("bert")
    key = ours.bert.encoder.layer[0].attention.self.key
    weight = key.weight.clone()
    with torch.no_grad():
        key.ia3_l[3] = 0.0
    with pytest.raises(MethodConfigError, match="zeros"):
        SPEC.merge(ours)
    assert torch.equal(key.weight, weight) and not key.merged


def test_identity_at_init_is_exact_and_vectors_start_at_one():
    tiny, ours = _ours("t5")
    vectors = [m.ia3_l for m in ours.modules() if isinstance(m, IA3Linear)]
    assert vectors and all(torch.equal(v, torch.ones_like(v)) for v in vectors)
    with torch.no_grad():
        assert torch.equal(tiny.logits(ours), tiny.logits(tiny.model()))


def test_explicit_targets_regex_and_empty_feedforward():
    _, ours = _ours("bert", target_modules=r".*\.self\.value", feedforward_modules=[])
    wrapped = [n for n, m in ours.named_modules() if isinstance(m, IA3Linear)]
    assert wrapped == [f"bert.encoder.layer.{i}.attention.self.value" for i in range(2)]
    assert _count(ours) == 2 * 32


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_modules": ["key"], "feedforward_modules": ["key"]}, "both"),
        ({"target_modules": [], "feedforward_modules": []}, "selects no module"),
        ({"fused_qkv_modules": ["query"]}, "among target_modules"),
        ({"target_modules": ["no_such_module"]}, "matched no module"),
        ({"target_modules": [3]}, "list of module names"),
    ],
)
def test_bad_targets_are_refused(kwargs, message):
    tiny = FAMILIES["bert"]()
    model = tiny.model()
    with pytest.raises(MethodConfigError, match=message):
        SPEC.apply(model, IA3Config(**kwargs))
    assert not any(isinstance(m, IA3Linear) for m in model.modules())


def test_a_plain_module_needs_explicit_targets():
    model = FAMILIES["mlp"]().model()
    with pytest.raises(MethodConfigError, match="no default target modules"):
        SPEC.apply(copy.deepcopy(model), IA3Config())
    SPEC.apply(model, IA3Config(target_modules=["fc1"], feedforward_modules=["fc2"]))
    assert model.fc1.ia3_l.shape == (32,) and model.fc2.ia3_l.shape == (32,)


def test_applying_twice_is_refused():
    _, ours = _ours("llama")
    with pytest.raises(MethodConfigError, match="already applied"):
        SPEC.apply(ours, IA3Config())
