"""DoRA's own promises: the norm it computes without forming W0 + s B A is that matrix's row norm,
the norm gets no gradient (the paper's section 4.3), and the cached base norms follow the base weight."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from peftbench.methods.dora import DoraConfig, DoraLinear
from tests.tiny_models import FAMILIES


def _layer(conv1d: bool = False, seed: int = 0) -> DoraLinear:
    torch.manual_seed(seed)
    if conv1d:
        from transformers.pytorch_utils import Conv1D

        base = Conv1D(12, 16)  # in 16, out 12, weight stored 16 x 12
        nn.init.normal_(base.weight, std=0.3)
        nn.init.normal_(base.bias, std=0.1)
    else:
        base = nn.Linear(16, 12)
    base.requires_grad_(False)  # frozen, as apply() leaves it
    layer = DoraLinear(base, DoraConfig(rank=3, alpha=6.0))
    with torch.no_grad():
        layer.B.normal_(std=0.5)
        layer.dora_magnitude.mul_(torch.linspace(0.5, 1.5, 12))
    return layer


def _direct(layer: DoraLinear) -> torch.Tensor:
    """``W0 + s B A`` (``out x in``), formed explicitly."""
    return layer.base_weight() + layer.scaling * (layer.B @ layer.A)


@pytest.mark.parametrize("conv1d", [False, True], ids=["linear", "conv1d"])
def test_weight_norm_is_the_row_norm_of_the_adapted_weight(conv1d):
    layer = _layer(conv1d)
    torch.testing.assert_close(layer.weight_norm(), _direct(layer).norm(dim=1).detach(), atol=1e-6, rtol=1e-5)
    x = torch.randn(5, 16)
    expected = nn.functional.linear(x, (layer.dora_magnitude / _direct(layer).norm(dim=1))[:, None] * _direct(layer),
                                    layer.bias)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_the_norm_gets_no_gradient():
    layer = _layer()
    x, g = torch.randn(5, 16), torch.randn(5, 12)
    (layer(x) * g).sum().backward()
    ours = {name: p.grad.clone() for name, p in layer.named_parameters() if p.requires_grad}

    def reference(detach: bool):
        params = {n: p.detach().clone().requires_grad_(True) for n, p in layer.named_parameters() if p.requires_grad}
        w = layer.base_weight().detach() + layer.scaling * (params["dora_B"] @ params["dora_A"])
        norm = w.norm(dim=1)
        out = nn.functional.linear(x, (params["dora_magnitude"] / (norm.detach() if detach else norm))[:, None] * w,
                                   layer.bias.detach())
        (out * g).sum().backward()
        return {n: p.grad for n, p in params.items()}

    detached, through_norm = reference(True), reference(False)
    for name in ours:
        torch.testing.assert_close(ours[name], detached[name], atol=1e-5, rtol=1e-4)
    # The test can tell: with the gradient through the norm, A's and B's gradients differ.
    assert not torch.allclose(through_norm["dora_B"], detached["dora_B"], atol=1e-4)


def test_cached_base_norms_follow_a_changed_base_weight():
    tiny = FAMILIES["llama"]()
    first, second = tiny.model(seed=0), tiny.model(seed=1)
    config = DoraConfig(rank=4, alpha=8.0)
    from peftbench.methods import get_method

    spec = get_method("dora")
    model = spec.apply(copy.deepcopy(first), config)
    with torch.no_grad():
        tiny.logits(model)  # fills the caches with the first base's norms
        model.load_state_dict(second.state_dict(), strict=False)  # a new base under the same adapters
        fresh = spec.apply(copy.deepcopy(second), config)
        fresh.load_state_dict({k: v for k, v in model.state_dict().items() if "dora_" in k}, strict=False)
        torch.testing.assert_close(tiny.logits(model), tiny.logits(fresh), atol=1e-6, rtol=1e-6)
        moved = copy.deepcopy(model).to(torch.float64)  # a new dtype: the caches are rebuilt too
        assert torch.isfinite(tiny.logits(moved)).all()


def test_merge_and_unmerge_restore_the_base_weight():
    layer = _layer(conv1d=True)
    original = layer.weight.detach().clone()
    x = torch.randn(4, 16)
    with torch.no_grad():
        adapted = _direct(layer)
        expected = layer.as_stored((layer.dora_magnitude / adapted.norm(dim=1))[:, None] * adapted)
        unmerged = layer(x)
        layer.merge()
        assert layer.merged
        torch.testing.assert_close(layer.weight, expected, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(layer(x), unmerged, atol=1e-5, rtol=1e-5)
        layer.unmerge()
        assert not layer.merged
        torch.testing.assert_close(layer.weight, original, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(layer(x), unmerged, atol=1e-5, rtol=1e-5)
