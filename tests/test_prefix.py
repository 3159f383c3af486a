"""Prefix tuning: the prefix reaches every attention layer, masks and positions are right, peft parity."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from peftbench.methods import MethodConfigError, get_method
from peftbench.methods.prefix import PrefixConfig, flatten_prefix, prefix_key_values
from tests.tiny_models import FAMILIES

SPEC = get_method("prefix")
FAMILY_NAMES = ["bert", "roberta", "gpt2", "llama", "t5"]
P = 4


def _prefixed(family: str, **kwargs):
    tiny = FAMILIES[family]()
    base = tiny.model()
    model = SPEC.apply(copy.deepcopy(base), PrefixConfig(num_virtual_tokens=P, **kwargs)).eval()
    return tiny, base, model


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True if ``a`` and ``b`` differ by more than float noise, relative to their scale."""
    return (a - b).abs().max().item() > 1e-3 * b.abs().max().item() + 1e-7


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"num_virtual_tokens": 0}, "num_virtual_tokens"),
        ({"num_virtual_tokens": True}, "num_virtual_tokens"),
        ({"reparameterize": "yes"}, "reparameterize"),
        ({"encoder_hidden_size": 8}, "encoder_hidden_size"),  # without reparameterize
        ({"reparameterize": True, "encoder_hidden_size": -1}, "encoder_hidden_size"),
    ],
)
def test_config_refuses_bad_settings(kwargs, key):
    with pytest.raises(MethodConfigError, match=key):
        PrefixConfig(**kwargs)


def test_refuses_models_without_config_and_second_application():
    with pytest.raises(MethodConfigError, match="config"):
        SPEC.apply(FAMILIES["mlp"]().model(), PrefixConfig())
    with pytest.raises(MethodConfigError, match="cache"):  # ViT's attention reads no cache
        SPEC.apply(FAMILIES["vit"]().model(), PrefixConfig())
    _, _, model = _prefixed("gpt2")
    with pytest.raises(MethodConfigError, match="already applied"):
        SPEC.apply(model, PrefixConfig())


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_prefix_of_every_layer_of_every_stack_changes_the_output(family):
    tiny, base, model = _prefixed(family)
    encoder = model.prefix_encoder
    with torch.no_grad():
        reference = tiny.logits(model)
        assert _differs(reference, tiny.logits(base))
        expected_stacks = {"t5": 2}.get(family, 1)
        assert len(encoder.layouts) == expected_stacks
        for layout in encoder.layouts:
            kv = layout.kv_heads * layout.head_dim
            for layer in range(layout.num_layers):
                start = layout.offset + layer * 2 * kv
                saved = encoder.prefix[:, start : start + 2 * kv].clone()
                encoder.prefix[:, start : start + 2 * kv] += torch.randn_like(saved)
                assert _differs(tiny.logits(model), reference), f"{layout.name or 'model'} layer {layer}"
                encoder.prefix[:, start : start + 2 * kv] = saved
        torch.testing.assert_close(tiny.logits(model), reference, atol=0, rtol=0)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_padded_row_matches_the_same_row_unpadded(family):
    """Prefix slots are attended (mask of ones in front), pad positions stay masked."""
    tiny, _, model = _prefixed(family)
    ids, mask = tiny.inputs["input_ids"], tiny.inputs["attention_mask"]
    row, real = 1, int(tiny.inputs["attention_mask"][1].sum())
    assert real < ids.shape[1]  # the tiny batch has a padded row
    with torch.no_grad():
        padded = tiny.logits(model)[row]
        alone = model(input_ids=ids[row : row + 1, :real], attention_mask=mask[row : row + 1, :real]).logits[
            0
        ]
        no_mask_alone = model(input_ids=ids[row : row + 1, :real]).logits[0]
        unmasked = model(input_ids=ids, attention_mask=torch.ones_like(mask)).logits[row]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-4)
    # A missing mask means "attend everything", prefix included.
    torch.testing.assert_close(no_mask_alone, alone, atol=1e-6, rtol=1e-5)
    if family in ("bert", "roberta", "t5"):  # bidirectional: the pads would be seen without the mask
        assert _differs(unmasked, padded)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_encoder_positions_are_not_shifted_by_the_prefix(family):
    tiny, base, model = _prefixed(family)
    seen = {}
    for name, m in (("base", base), ("prefixed", model)):
        m.base_model.embeddings.register_forward_hook(
            lambda mod, args, out, name=name: seen.__setitem__(name, out)
        )
        with torch.no_grad():
            tiny.logits(m)
    torch.testing.assert_close(seen["prefixed"], seen["base"], atol=0, rtol=0)


def test_decoder_positions_start_after_the_prefix_as_in_peft():
    tiny, _, gpt2 = _prefixed("gpt2")
    seen = []
    gpt2.transformer.wpe.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    _, _, llama = _prefixed("llama")
    llama.model.rotary_emb.register_forward_hook(
        lambda mod, args, kwargs, out: seen.append(kwargs["position_ids"]), with_kwargs=True
    )
    with torch.no_grad():
        gpt2(**tiny.inputs)
        llama(**tiny.inputs)
    expected = torch.arange(P, P + tiny.inputs["input_ids"].shape[1])
    assert [s.flatten().tolist() for s in seen] == [expected.tolist()] * 2


def test_llama_prefix_width_follows_grouped_query_attention():
    tiny, base, model = _prefixed("llama")
    cfg = base.config
    kv_heads, head_dim = cfg.num_key_value_heads, cfg.head_dim
    assert kv_heads < cfg.num_attention_heads  # the tiny Llama does use GQA
    assert model.prefix_encoder.prefix.shape == (P, cfg.num_hidden_layers * 2 * kv_heads * head_dim)
    (layers,) = prefix_key_values(model, batch_size=3).values()
    assert len(layers) == cfg.num_hidden_layers
    assert all(k.shape == v.shape == (3, kv_heads, P, head_dim) for k, v in layers)
    assert base.model.layers[0].self_attn.k_proj.out_features == kv_heads * head_dim
    seq = tiny.inputs["input_ids"].shape[1]
    with torch.no_grad():
        out = model.model(**tiny.inputs, use_cache=True)
    assert out.cache.layers[0].keys.shape == (4, kv_heads, P + seq, head_dim)


def test_t5_prefixes_self_attention_of_both_stacks_but_not_cross_attention():
    tiny, _, model = _prefixed("t5")
    ids, mask = tiny.inputs["input_ids"], tiny.inputs["attention_mask"]
    decoder_ids = ids[:, :3]
    with torch.no_grad():
        out = model.transformer(
            input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids, use_cache=True
        )
    cache = out.cache
    assert cache.self_attention_cache.layers[0].keys.shape[-2] == P + decoder_ids.shape[1]
    assert cache.cross_attention_cache.layers[0].keys.shape[-2] == ids.shape[1]
    names = [layout.name for layout in model.prefix_encoder.layouts]
    assert names == ["transformer.encoder", "transformer.decoder"]
    cfg = model.config
    assert [layout.num_layers for layout in model.prefix_encoder.layouts] == [
        cfg.num_layers,
        cfg.num_decoder_layers,
    ]


@pytest.mark.parametrize("family", ["bert", "llama", "t5"])
def test_flattened_prefix_equals_the_reparameterized_one(family):
    tiny, base, model = _prefixed(family, reparameterize=True, encoder_hidden_size=24)
    with torch.no_grad():
        model.prefix_encoder.mlp[2].weight.mul_(3.0)  # make the MLP matter more than at init
        before = tiny.logits(model)
        flatten_prefix(model)
        after = tiny.logits(model)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=1e-5)
    assert not hasattr(model.prefix_encoder, "mlp")
    state = {k: v for k, v in model.state_dict().items() if k.startswith("prefix_encoder.")}
    assert list(state) == ["prefix_encoder.prefix"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["prefix_encoder.prefix"]
    plain = SPEC.apply(copy.deepcopy(base), PrefixConfig(num_virtual_tokens=P)).eval()
    missing, unexpected = plain.load_state_dict(state, strict=False)
    assert not unexpected and "prefix_encoder.prefix" not in missing
    with torch.no_grad():
        torch.testing.assert_close(tiny.logits(plain), after, atol=0, rtol=0)


def test_deep_copy_of_a_prefixed_model_uses_its_own_prefix():
    tiny, _, model = _prefixed("t5")
    twin = copy.deepcopy(model)
    with torch.no_grad():
        reference = tiny.logits(model)
        twin.prefix_encoder.prefix.zero_()
        assert _differs(tiny.logits(twin), reference)
        torch.testing.assert_close(tiny.logits(model), reference, atol=0, rtol=0)


def _tiny_causal_lm(family: str) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if family == "gpt2":
        cfg = GPT2Config(
            vocab_size=64,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=32,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=1,
        )
        return GPT2LMHeadModel(cfg).eval()
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        max_position_embeddings=32,
        pad_token_id=0,
    )
    return LlamaForCausalLM(cfg).eval()


def _lm_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(1, 64, (3, 6), generator=g)
    mask = torch.ones_like(ids)
    ids[1, -2:], mask[1, -2:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft still passes `past_key_values`
@pytest.mark.parametrize("projection", [False, True], ids=["plain", "projection"])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_parity_with_peft_prefix_tuning(family, projection):
    from peft import PrefixTuningConfig, get_peft_model

    base = _tiny_causal_lm(family)
    peft_model = get_peft_model(
        copy.deepcopy(base),
        PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P, prefix_projection=projection),
    ).eval()
    ours = SPEC.apply(
        copy.deepcopy(base), PrefixConfig(num_virtual_tokens=P, reparameterize=projection)
    ).eval()

    def trainable(m):
        return sum(p.numel() for p in m.parameters() if p.requires_grad)

    assert trainable(ours) == trainable(peft_model)
    theirs = peft_model.prompt_encoder["default"]
    with torch.no_grad():
        if projection:
            ours.prefix_encoder.embedding.copy_(theirs.embedding.weight)
            ours.prefix_encoder.mlp[0].load_state_dict(theirs.transform[0].state_dict())
            ours.prefix_encoder.mlp[2].load_state_dict(theirs.transform[2].state_dict())
        else:
            ours.prefix_encoder.prefix.copy_(theirs.embedding.weight)
        inputs = _lm_inputs()
        expected = peft_model(**inputs).logits
        got = ours(**inputs).logits
        assert _differs(got, base(**inputs).logits)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_incremental_decoding_reuses_the_returned_cache():
    from transformers import DynamicCache

    base = _tiny_causal_lm("gpt2")
    model = SPEC.apply(base, PrefixConfig(num_virtual_tokens=P)).eval()
    ids = _lm_inputs()["input_ids"][:1]
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -1]
        first = model(input_ids=ids[:, :-1], cache=DynamicCache(), use_cache=True)  # empty cache: filled
        assert first.cache.get_seq_length() == P + ids.shape[1] - 1
        step = model(input_ids=ids[:, -1:], cache=first.cache, attention_mask=torch.ones_like(ids)).logits[
            :, -1
        ]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_is_refused_rather_than_dropping_the_prefix():
    tiny, _, model = _prefixed("llama")
    model.activation_checkpointing_enable()
    model.train()
    with pytest.raises(RuntimeError, match="gradient checkpointing"):
        tiny.logits(model)


def test_four_dimensional_masks_are_refused():
    tiny, _, model = _prefixed("gpt2")
    mask = torch.ones(4, 1, 7, 7)
    with pytest.raises(ValueError, match="2-D"):
        model(input_ids=tiny.inputs["input_ids"], attention_mask=mask)
