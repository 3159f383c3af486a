"""LoRA: low-rank adaptation of linear layers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import (
    LinearWrapper,
    MethodConfigError,
    MethodSpec,
    check_positive_int,
    check_targets,
    each,
    is_linear,
    match_modules,
    refuse_reapply,
    wrap_modules,
)
from .targets import default_targets


@dataclass
class LoraConfig:
    """Settings of LoRA.

    Attributes:
        rank: rank ``r`` of the update ``B @ A``.
        alpha: scaling numerator: the update is scaled by ``alpha / r`` (or ``alpha / sqrt(r)``).
        dropout: dropout applied to the input of the low-rank path only.
        target_modules: module names (each matching a module named so or ending in ``.<name>``) or
            one regular expression over full module names; ``None`` takes the family's defaults.
        use_rslora: scale by ``alpha / sqrt(r)`` (rank-stabilised LoRA, Kalajdzievski 2023).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: Any = None
    use_rslora: bool = False

    def __post_init__(self) -> None:
        check_positive_int(self.rank, "rank (LoRA's r, for example 2, 4, 8 or 16)")
        if not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise MethodConfigError(f"alpha must be a positive number, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise MethodConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        self.target_modules = check_targets(self.target_modules)

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)


class LoraLinear(LinearWrapper):
    """A linear layer with a trainable low-rank update (Hu et al. 2021, eq. 3).

    ``h = W0 x + b + (alpha / r) * B A dropout(x)`` with ``A: r x in``, ``B: out x r``. ``B`` starts at
    zero so the layer starts as the frozen base layer. The base ``weight`` and ``bias`` keep their
    names, so the base model's state-dict keys are unchanged and only ``lora_*`` keys are added.

    Args:
        base: the ``nn.Linear`` (weight ``out x in``) or GPT-2 ``Conv1D`` (weight ``in x out``) to adapt.
        config: the LoRA settings.
    """

    # The parameters are ``<prefix>A`` and ``<prefix>B``. Variants built on this layer (QLoRA, DoRA)
    # set their own prefix, since every registered method owns a prefix of its own.
    prefix = "lora_"

    def __init__(self, base: nn.Module, config: LoraConfig) -> None:
        super().__init__(base)
        A = nn.Parameter(torch.empty(config.rank, self.in_features, **self.factory))
        # Same init as the reference implementation: Kaiming-uniform A, zero B.
        nn.init.kaiming_uniform_(A, a=math.sqrt(5))
        self.register_parameter(self.prefix + "A", A)
        self.register_parameter(self.prefix + "B", nn.Parameter(torch.zeros(self.out_features, config.rank,
                                                                            **self.factory)))
        self.lora_dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.scaling = config.scaling

    @property
    def A(self) -> nn.Parameter:
        """The down-projection ``A``: ``(r, in)``."""
        return self._parameters[self.prefix + "A"]

    @property
    def B(self) -> nn.Parameter:
        """The up-projection ``B``: ``(out, r)``."""
        return self._parameters[self.prefix + "B"]

    def delta_weight(self) -> torch.Tensor:
        """``scaling * B @ A`` laid out like ``self.weight``."""
        return self.as_stored((self.B @ self.A) * self.scaling)

    def low_rank_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B A dropout(x)``, unscaled. Args: x: ``(..., in)``. Returns: ``(..., out)``."""
        return F.linear(F.linear(self.lora_dropout(x), self.A), self.B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(..., in)``. Returns: ``(..., out)``."""
        out = self.base_forward(x)
        if self.merged:
            return out
        return out + self.low_rank_forward(x) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.A.shape[0]}, scaling={self.scaling:g}"


def apply(model: nn.Module, config: LoraConfig) -> nn.Module:
    """Wraps each targeted linear layer of ``model`` in :class:`LoraLinear` and freezes the rest."""
    refuse_reapply(model, LoraLinear, "LoRA")
    targets = config.target_modules if config.target_modules is not None else default_targets(model, "lora")
    names = match_modules(model, targets, is_linear)
    return wrap_modules(model, names, lambda _, base: LoraLinear(base, config))


def merge(model: nn.Module) -> nn.Module:
    return each(model, LoraLinear, "merge")


def unmerge(model: nn.Module) -> nn.Module:
    return each(model, LoraLinear, "unmerge")


SPEC = MethodSpec(
    name="lora",
    config_cls=LoraConfig,
    apply=apply,
    param_prefix="lora_",
    merge=merge,
    unmerge=unmerge,
    description="LoRA (Hu et al. 2021): trainable low-rank updates B A on chosen linear layers",
)
