"""VeRA: refused settings, the shared frozen pair, exact reload, and parity with peft's VeraConfig
(the same random matrices from the same seed, the same counts, the same logits unmerged and merged)."""

from __future__ import annotations

import copy

import peft
import pytest
import torch

from peftbench.api import apply_method, count_parameters
from peftbench.methods import MethodConfigError, get_method
from peftbench.methods.base import method_state_dict
from peftbench.methods.vera import VeraConfig, VeraLinear
from tests.tiny_models import FAMILIES

SPEC = get_method("vera")
TARGETS = {"bert": ["query", "value"], "roberta": ["query", "value"], "gpt2": ["c_attn"],
           "llama": ["q_proj", "v_proj"], "t5": ["q", "v"]}


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"rank": 0}, "rank"),
        ({"rank": -2}, "rank"),
        ({"rank": 2.5}, "rank"),
        ({"dropout": 1.0}, "dropout"),
        ({"d_initial": "0.1"}, "d_initial"),
        ({"projection_seed": -1}, "projection_seed"),
        ({"target_modules": []}, "target_modules"),
    ],
)
def test_config_refuses_bad_settings(kwargs, key):
    with pytest.raises(MethodConfigError, match=key):
        VeraConfig(**kwargs)


def test_refuses_a_second_application_and_unmatched_targets():
    model = SPEC.apply(FAMILIES["bert"]().model(), VeraConfig(rank=4))
    with pytest.raises(MethodConfigError, match="already applied"):
        SPEC.apply(model, VeraConfig(rank=4))
    with pytest.raises(MethodConfigError, match="matched no module"):
        SPEC.apply(FAMILIES["bert"]().model(), VeraConfig(rank=4, target_modules=["nosuch"]))


def test_every_layer_reads_one_shared_pair_stored_once():
    model = SPEC.apply(FAMILIES["llama"]().model(), VeraConfig(rank=4))
    layers = [m for m in model.modules() if isinstance(m, VeraLinear)]
    assert len(layers) == 4
    a_ptrs = {layer.projections()[0].data_ptr() for layer in layers}
    b_ptrs = {layer.projections()[1].data_ptr() for layer in layers}
    assert a_ptrs == {model.vera_shared.A.data_ptr()} and b_ptrs == {model.vera_shared.B.data_ptr()}
    # Llama's v_proj (32 -> 16) reads the top 16 rows of the B its q_proj (32 -> 32) reads in full.
    assert model.vera_shared.B.shape == (32, 4) and {layer.projections()[1].shape[0] for layer in layers} == {16, 32}
    state = method_state_dict(model, SPEC)
    assert [k for k in state if "vera_shared" in k] == ["vera_shared.A", "vera_shared.B"]
    assert not any(p.requires_grad for p in model.vera_shared.buffers())


def test_a_checkpoint_reloads_the_random_pair_exactly():
    tiny = FAMILIES["gpt2"]()
    model = SPEC.apply(tiny.model(), VeraConfig(rank=4, projection_seed=1))
    with torch.no_grad():
        for layer in (m for m in model.modules() if isinstance(m, VeraLinear)):
            layer.vera_lambda_b.normal_()
        expected = tiny.logits(model)
    state = {k: v.clone() for k, v in method_state_dict(model, SPEC).items()}
    fresh = SPEC.apply(tiny.model(), VeraConfig(rank=4, projection_seed=2))  # other random matrices
    assert not torch.equal(fresh.vera_shared.A, model.vera_shared.A)
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    assert not unexpected and not any(k in state for k in missing)
    with torch.no_grad():
        torch.testing.assert_close(tiny.logits(fresh), expected, atol=0, rtol=0)


def test_deep_copy_of_an_adapted_model_keeps_one_shared_pair():
    tiny = FAMILIES["bert"]()
    model = SPEC.apply(tiny.model(), VeraConfig(rank=4))
    twin = copy.deepcopy(model)
    layers = [m for m in twin.modules() if isinstance(m, VeraLinear)]
    assert all(layer.projections()[0].data_ptr() == twin.vera_shared.A.data_ptr() for layer in layers)
    assert twin.vera_shared.A.data_ptr() != model.vera_shared.A.data_ptr()


def _pair(family: str, rank: int = 4, seed: int = 5):
    tiny = FAMILIES[family]()
    base = tiny.model()
    ours = SPEC.apply(copy.deepcopy(base), VeraConfig(rank=rank, projection_seed=seed, target_modules=TARGETS[family]))
    config = peft.VeraConfig(r=rank, projection_prng_key=seed, target_modules=TARGETS[family], vera_dropout=0.0,
                             fan_in_fan_out=family == "gpt2")
    theirs = peft.get_peft_model(copy.deepcopy(base), config)
    return tiny, base, ours, theirs


def _copy_random_lambdas(ours, theirs) -> int:
    """Puts the same random, non-zero lambda_b and lambda_d into both models."""
    generator = torch.Generator().manual_seed(11)
    copied = 0
    with torch.no_grad():
        for name, param in theirs.named_parameters():
            if ".vera_lambda_" not in name:
                continue
            value = torch.randn(param.shape, generator=generator) * 2.0
            param.copy_(value)
            ours.get_parameter(name.removeprefix("base_model.model.").replace(".default", "")).copy_(value)
            copied += 1
    return copied


@pytest.mark.filterwarnings("ignore::UserWarning")  # peft warns about fan_in_fan_out on GPT-2
@pytest.mark.parametrize("family", sorted(TARGETS))
def test_vera_matches_peft(family):
    tiny, base, ours, theirs = _pair(family)
    assert count_parameters(ours)[0] == theirs.get_nb_trainable_parameters()[0] > 0
    # The same seed draws the same frozen pair, bit for bit.
    assert torch.equal(ours.vera_shared.A, theirs.base_model.vera_A["default"])
    assert torch.equal(ours.vera_shared.B, theirs.base_model.vera_B["default"])
    with torch.no_grad():  # at init lambda_b = 0: both are the base model
        torch.testing.assert_close(tiny.logits(ours), tiny.logits(base), atol=0, rtol=0)
    assert _copy_random_lambdas(ours, theirs) == 2 * sum(isinstance(m, VeraLinear) for m in ours.modules())
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        expected = tiny.logits(theirs)
        assert (expected - tiny.logits(base)).abs().max() > 1e-4  # the update matters
        torch.testing.assert_close(tiny.logits(ours), expected, atol=1e-5, rtol=1e-5)
        SPEC.merge(ours)
        torch.testing.assert_close(tiny.logits(ours), tiny.logits(theirs.merge_and_unload()), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tiny.logits(ours), expected, atol=1e-5, rtol=1e-5)


def _roberta_base():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    with torch.device("meta"):  # roberta-base's shapes, no weights: counting needs no values
        return RobertaForSequenceClassification(RobertaConfig(num_labels=2))


@pytest.mark.parametrize("rank", [256, 1024])
def test_trainable_count_equals_peft_on_roberta_base(rank):
    ours = apply_method(_roberta_base(), "vera", rank=rank, target_modules=["query", "value"])
    theirs = peft.get_peft_model(_roberta_base(), peft.VeraConfig(r=rank, target_modules=["query", "value"],
                                                                  task_type="SEQ_CLS"))
    trainable = count_parameters(ours)[0]
    assert trainable == theirs.get_nb_trainable_parameters()[0]
    # 24 adapted layers x (768 + r), plus the classification head (dense 768 x 768 and out_proj 768 x 2).
    assert trainable == 24 * (768 + rank) + (768 * 768 + 768) + (768 * 2 + 2)
