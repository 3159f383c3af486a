"""The public API: apply_method and count_parameters, on tiny models built from configs."""

from __future__ import annotations

import copy

import pytest
import torch

from peftbench import apply_method, count_parameters
from peftbench.methods import MethodConfigError
from tests.tiny_models import bert, gpt2, mlp


def _lora_closed_form(hidden: int, layers: int, rank: int, targets_per_layer: int = 2) -> int:
    return layers * targets_per_layer * rank * (hidden + hidden)


def _head_params(hidden: int, labels: int) -> int:
    # BERT's classifier: Linear(hidden, labels); the pooler belongs to the frozen base.
    return hidden * labels + labels


def test_lora_count_equals_closed_form_on_tiny_bert():
    tiny = bert()
    for rank in (2, 4, 8):
        model = apply_method(tiny.model(), "lora", rank=rank)
        trainable, total = count_parameters(model)
        assert trainable == _lora_closed_form(32, 2, rank) + _head_params(32, 2)
        assert total == sum(p.numel() for p in tiny.model().parameters()) + _lora_closed_form(32, 2, rank)


def test_lora_leaves_output_unchanged_at_init():
    tiny = bert()
    base = tiny.model()
    model = apply_method(copy.deepcopy(base), "lora", rank=8, target_modules=["query", "key", "value", "dense"])
    with torch.no_grad():
        torch.testing.assert_close(tiny.logits(model), tiny.logits(base), atol=0, rtol=0)


def test_only_lora_and_head_parameters_change_after_steps():
    tiny = bert()
    model = apply_method(tiny.model(), "lora", rank=4)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        loss = tiny.loss(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert changed
    assert all(".lora_" in k or k.startswith("classifier.") for k in changed), sorted(changed)
    assert any(k.startswith("classifier.") for k in changed)
    assert any(".lora_B" in k for k in changed)


def test_train_head_false_freezes_the_head():
    model = apply_method(bert().model(), "lora", rank=2, train_head=False)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("classifier."))


def test_full_trains_everything_and_tied_weights_count_once():
    model = apply_method(gpt2().model(), "full")
    trainable, total = count_parameters(model)
    unique = {id(p): p for p in model.parameters()}
    assert trainable == total == sum(p.numel() for p in unique.values())


def test_shared_module_and_tied_weights_counted_once():
    layer = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(layer, torch.nn.ReLU(), layer)
    assert count_parameters(model) == (20, 20)
    embedding, head = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False)
    head.weight = embedding.weight  # tied, as in language-model heads
    assert count_parameters(torch.nn.ModuleList([embedding, head])) == (40, 40)


def test_lora_on_a_plain_mlp_needs_targets_and_finds_them():
    with pytest.raises(MethodConfigError, match="no default target modules"):
        apply_method(mlp().model(), "lora", rank=2)
    model = apply_method(mlp().model(), "lora", rank=2, target_modules=["fc1"])
    assert count_parameters(model)[0] == 2 * (12 + 32)


def test_unmatched_target_names_the_model_modules():
    with pytest.raises(MethodConfigError, match=r"matched no module.*query.*value"):
        apply_method(bert().model(), "lora", rank=2, target_modules=["nosuch"])


def test_regex_targets():
    model = apply_method(bert().model(), "lora", rank=2, target_modules=r".*layer\.0\.attention\.self\.(query|key)")
    assert count_parameters(model)[0] == 2 * 2 * (32 + 32) + _head_params(32, 2)


def test_unknown_method_and_setting_are_clear_errors():
    with pytest.raises(MethodConfigError, match="registered methods are: .*full.*lora"):
        apply_method(bert().model(), "nosuch")
    with pytest.raises(MethodConfigError, match="its settings are: rank, alpha"):
        apply_method(bert().model(), "lora", r=8)
    with pytest.raises(MethodConfigError, match="rank"):
        apply_method(bert().model(), "lora", rank=0)


def test_rslora_scaling():
    model = apply_method(bert().model(), "lora", rank=4, alpha=8.0, use_rslora=True)
    layer = model.bert.encoder.layer[0].attention.self.query
    assert layer.scaling == pytest.approx(8.0 / 2.0)
