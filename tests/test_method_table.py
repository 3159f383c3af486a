"""The same generic checks for every method on every tiny model family it supports."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file

from peftbench.methods import get_method
from peftbench.methods.base import is_method_param, method_state_dict
from peftbench.methods.targets import head_names
from tests.cases import all_cases
from tests.tiny_models import FAMILIES

CASES = [
    pytest.param(case, family, id=f"{case.method}-{family}",
                 marks=[pytest.mark.xfail(reason=case.xfail[family], strict=True)] if family in case.xfail else [])
    for case in all_cases()
    for family in case.families
]


MERGEABLE_CASES = [p for p in CASES if get_method(p.values[0].method).mergeable]


def _apply(case, family, seed=0):
    tiny = FAMILIES[family]()
    base = tiny.model(seed)
    spec = get_method(case.method)
    kwargs = case.config(family)
    model = spec.apply(copy.deepcopy(base), spec.config_cls(**kwargs))
    model.eval()
    return tiny, base, model, spec, kwargs


def _trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _steps(tiny, model, lr, n):
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(n):
        loss = tiny.loss(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def test_table_is_not_empty():
    assert len(CASES) >= 10


@pytest.mark.parametrize("case,family", CASES)
def test_output_finite_and_identity_at_init(case, family):
    tiny, base, model, _, _ = _apply(case, family)
    with torch.no_grad():
        out = tiny.logits(model)
        ref = tiny.logits(base)
    assert torch.isfinite(out).all()
    if case.identity_at_init:
        torch.testing.assert_close(out, ref, atol=case.init_atol, rtol=0)


@pytest.mark.parametrize("case,family", CASES)
def test_trainable_count_matches_closed_form(case, family):
    _, base, model, _, kwargs = _apply(case, family)
    assert _trainable(model) == case.expected_trainable(base, family, kwargs)


@pytest.mark.parametrize("case,family", CASES)
def test_only_method_parameters_change(case, family):
    tiny, _, model, spec, _ = _apply(case, family)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    _steps(tiny, model, case.lr, 3)
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert changed, "nothing changed after three optimizer steps"
    trainable = {k for k, v in model.named_parameters() if v.requires_grad}
    assert changed <= trainable
    assert trainable <= set(method_state_dict(model, spec))  # a checkpoint of the method holds what trains
    if spec.param_prefix is not None:
        assert all(is_method_param(k, spec.param_prefix) for k in trainable), sorted(trainable)[:5]


@pytest.mark.parametrize("case,family", MERGEABLE_CASES)
def test_merged_equals_unmerged(case, family):
    tiny, _, model, spec, _ = _apply(case, family)
    _steps(tiny, model, case.lr, 3)  # move away from the identity so the merge has work to do
    with torch.no_grad():
        unmerged = tiny.logits(model)
        spec.merge(model)
        merged = tiny.logits(model)
        spec.unmerge(model)
        restored = tiny.logits(model)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(restored, unmerged, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case,family", CASES)
def test_save_and_load_round_trip(case, family, tmp_path):
    tiny, _, model, spec, kwargs = _apply(case, family)
    _steps(tiny, model, case.lr, 3)
    state = {k: v.detach().contiguous().clone() for k, v in method_state_dict(model, spec).items()}
    save_file(state, tmp_path / "method.safetensors")

    _, _, fresh, _, _ = _apply(case, family)
    missing, unexpected = fresh.load_state_dict(load_file(tmp_path / "method.safetensors"), strict=False)
    assert not unexpected
    assert not any(k in state for k in missing)
    with torch.no_grad():
        torch.testing.assert_close(tiny.logits(fresh), tiny.logits(model), atol=0, rtol=0)


@pytest.mark.parametrize("case,family", CASES)
def test_loss_falls_on_a_batch_it_can_overfit(case, family, request):
    if family in case.cannot_overfit:
        request.applymarker(pytest.mark.xfail(reason=case.cannot_overfit[family], strict=True))
    tiny, _, model, _, _ = _apply(case, family)
    for head in head_names(model):  # as in real use, the task's fresh head trains too
        if hasattr(model, head):
            getattr(model, head).requires_grad_(True)
    losses = _steps(tiny, model, case.lr, 30)
    assert losses[-1] < 0.7 * losses[0], losses
