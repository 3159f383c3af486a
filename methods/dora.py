"""DoRA: LoRA with the adapted weight split into a trainable magnitude and a direction."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import MethodSpec, each, is_linear, match_modules, refuse_reapply, wrap_modules
from .lora import LoraConfig, LoraLinear
from .targets import default_targets


@dataclass
class DoraConfig(LoraConfig):
    """Settings of DoRA: LoRA's (``rank``, ``alpha``, ``dropout``, ``target_modules``,
    ``use_rslora``), with the same meaning; the magnitude vectors need no setting of their own."""


class DoraLinear(LoraLinear):
    """A linear layer adapted by DoRA (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank
    Adaptation", eq. 5).

    ``W' = m * (W0 + s B A) / ||W0 + s B A||_c`` and ``h = W' x + b``, where ``||.||_c`` is the norm of
    each output row of the ``out x in`` weight (the paper's column norm of its ``d x k`` layout),
    ``s = alpha / r`` and ``m`` (``out``) is trainable, initialised to ``||W0||_c`` so that, with
    ``B = 0``, the layer starts as the base layer exactly. As the paper's section 4.3 recommends,
    the norm is treated as a constant in the backward pass (no gradient flows through it): the
    gradient reaches ``m``, ``A`` and ``B`` through ``m / ||.||_c`` and ``B A x`` only.

    Computed as ``h = (m / n) * (W0 x + s B A dropout(x)) + b`` with ``n = ||W0 + s B A||_c``, so no
    ``out x in`` matrix is formed in a step: ``n^2 = ||W0||_c^2 + 2 s <W0, B A>_c + s^2 ||B A||_c^2``,
    where ``||W0||_c^2`` is cached (recomputed whenever the base weight changes), the cross term is
    ``rowsum(B * (W0 A^T))`` and the last ``rowsum((B (A A^T)) * B)``.

    Parameters (prefix ``dora_``): ``dora_A`` (``r x in``), ``dora_B`` (``out x r``), ``dora_magnitude``
    (``out``); the base ``weight`` and ``bias`` keep their names.

    Args:
        base: the ``nn.Linear`` (weight ``out x in``) or GPT-2 ``Conv1D`` (weight ``in x out``) to adapt.
        config: the DoRA settings.
    """

    prefix = "dora_"

    def __init__(self, base: nn.Module, config: DoraConfig) -> None:
        super().__init__(base, config)
        self._base_norm_cache: tuple[tuple, torch.Tensor] | None = None
        self._merged_scale: torch.Tensor | None = None
        # ||W0||_c by the same arithmetic as weight_norm(), so that m / n is exactly 1 while B = 0.
        with torch.no_grad():
            norm = self._base_row_norms_sq().clamp_min(torch.finfo(torch.float32).tiny).sqrt()
        self.dora_magnitude = nn.Parameter(norm.to(**self.factory))

    def _base_row_norms_sq(self) -> torch.Tensor:
        """``||W0||_c^2`` (``out``), cached until the base weight changes (in place or replaced)."""
        weight = self.weight
        key = (id(weight), weight.data_ptr(), weight._version, weight.device, weight.dtype)
        if self._base_norm_cache is None or self._base_norm_cache[0] != key:
            self._base_norm_cache = (key, self.base_weight().float().pow(2).sum(dim=1))
        return self._base_norm_cache[1]

    @torch.no_grad()
    def weight_norm(self) -> torch.Tensor:
        """``||W0 + s B A||_c`` (``out``), without a gradient (section 4.3), in float32."""
        A, B, s = self.A.float(), self.B.float(), self.scaling
        cross = (B * (self.base_weight() @ self.A.T).float()).sum(dim=1)
        update = ((B @ (A @ A.T)) * B).sum(dim=1)
        squared = self._base_row_norms_sq() + (2 * s) * cross + (s * s) * update
        return squared.clamp_min(torch.finfo(torch.float32).tiny).sqrt()

    def magnitude_scale(self) -> torch.Tensor:
        """``m / ||W0 + s B A||_c`` (``out``); differentiable in ``m`` only."""
        return self.dora_magnitude / self.weight_norm().to(self.dora_magnitude.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(..., in)``. Returns: ``(..., out)``."""
        if self.merged:
            return self.base_forward(x)
        direction = torch.add(F.linear(x, self.base_weight()), self.low_rank_forward(x), alpha=self.scaling)
        scale = self.magnitude_scale()
        if self.bias is None:
            return direction * scale
        return torch.addcmul(self.bias, direction, scale)

    @torch.no_grad()
    def merge(self) -> None:
        """``W0 <- (m / n) * (W0 + s B A)``; the scale is kept so :meth:`unmerge` can invert it."""
        if not self.merged:
            scale = self.magnitude_scale()
            merged = (self.base_weight() + (self.B @ self.A) * self.scaling) * scale[:, None]
            self.weight.copy_(self.as_stored(merged))
            self._merged_scale = scale
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """``W0 <- W' / (m / n) - s B A``, with the ``m / n`` of the merge."""
        if self.merged:
            restored = self.base_weight() / self._merged_scale[:, None] - (self.B @ self.A) * self.scaling
            self.weight.copy_(self.as_stored(restored))
            self._merged_scale = None
            self.merged = False


def apply(model: nn.Module, config: DoraConfig) -> nn.Module:
    """Wraps each targeted linear layer of ``model`` in :class:`DoraLinear` and freezes the rest."""
    refuse_reapply(model, DoraLinear, "DoRA")
    targets = config.target_modules if config.target_modules is not None else default_targets(model, "dora")
    names = match_modules(model, targets, is_linear)
    return wrap_modules(model, names, lambda _, base: DoraLinear(base, config))


def merge(model: nn.Module) -> nn.Module:
    return each(model, DoraLinear, "merge")


def unmerge(model: nn.Module) -> nn.Module:
    return each(model, DoraLinear, "unmerge")


SPEC = MethodSpec(
    name="dora",
    config_cls=DoraConfig,
    apply=apply,
    param_prefix="dora_",
    merge=merge,
    unmerge=unmerge,
    description="DoRA (Liu et al. 2024): LoRA's update with a trainable magnitude per output of each layer",
)
