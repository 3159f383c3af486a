"""VeRA: frozen random low-rank matrices shared by all adapted layers, trainable scaling vectors.

Kopiczko, Blankevoort and Asano (2024, "VeRA: Vector-based Random Matrix Adaptation", eq. 2)
adapt a layer ``h = W0 x`` as ``h = W0 x + Lambda_b B Lambda_d A x``: ``A`` (``r x in``) and ``B``
(``out x r``) are random, frozen and shared by every adapted layer; only the diagonal scalings
``Lambda_d = diag(lambda_d)`` (``r``) and ``Lambda_b = diag(lambda_b)`` (``out``) are trained, per
layer. ``lambda_b`` starts at zero, so the model starts as the base model exactly, and ``lambda_d``
at ``d_initial`` (0.1 in the paper and in peft).

Layers of different shapes (Llama's ``q_proj`` and its narrower ``v_proj`` under grouped-query
attention) share one pair sized to the largest input and output widths; each layer uses the top-left
``r x in`` block of ``A`` and the ``out x r`` block of ``B``. This is how the paper shares "a single
pair of matrices across all layers" and what peft's ``VeraModel`` does, so layers of the same shape
share exactly the same matrices and the number of frozen values does not grow with depth.

``A`` and ``B`` are drawn once, in float32 on the CPU, from a ``torch.Generator`` seeded with
``projection_seed``: ``A`` first, then ``B``, each Kaiming-uniform with the fan-in of its own second
axis (``U(-b, b)``, ``b = sqrt(3) * sqrt(2) / sqrt(fan_in)``). That is peft's recipe, so the same
seed gives peft's matrices bit for bit (tested). They are buffers of one submodule,
``model.vera_shared`` (``A``, ``B``), in the state dict under the method's prefix ``vera_``: a
checkpoint reloads them exactly, whatever the seed or the random generator's future behaviour (peft's
``save_projection=True``, its default). The merge is exact: ``W0 += Lambda_b B Lambda_d A``.
"""

from __future__ import annotations

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
    linear_dims,
    match_modules,
    refuse_reapply,
    wrap_modules,
)
from .targets import default_targets


@dataclass
class VeraConfig:
    """Settings of VeRA.

    Attributes:
        rank: rank ``r`` of the shared random matrices (``A: r x in``, ``B: out x r``). VeRA's ranks
            are large because ``r`` costs only one trained value per layer: the paper uses 1024 on
            RoBERTa-base and GPT-2, 256 on RoBERTa-large; 256 is peft's default.
        d_initial: starting value of every ``lambda_d`` entry.
        dropout: dropout applied to the input of the VeRA path only.
        projection_seed: seed of the generator that draws ``A`` and ``B`` (peft's ``projection_prng_key``).
        target_modules: module names (each matching a module named so or ending in ``.<name>``) or
            one regular expression over full module names; ``None`` takes the family's defaults
            (those of LoRA, as in peft).
    """

    rank: int = 256
    d_initial: float = 0.1
    dropout: float = 0.0
    projection_seed: int = 0
    target_modules: Any = None

    def __post_init__(self) -> None:
        check_positive_int(self.rank, "rank (VeRA's r, for example 256 or 1024)")
        if isinstance(self.d_initial, bool) or not isinstance(self.d_initial, (int, float)):
            raise MethodConfigError(f"d_initial must be a number, got {self.d_initial!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise MethodConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.projection_seed, bool) or not isinstance(self.projection_seed, int) or self.projection_seed < 0:
            raise MethodConfigError(f"projection_seed must be a non-negative integer, got {self.projection_seed!r}")
        self.target_modules = check_targets(self.target_modules)


def _kaiming_uniform(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """``U(-b, b)`` with ``b = sqrt(3) * gain / sqrt(fan_in)``, ``gain = sqrt(2)``, ``fan_in = shape[1]``."""
    return nn.init.kaiming_uniform_(torch.empty(shape), a=0.0, generator=generator)


class VeraShared(nn.Module):
    """The frozen random pair every VeRA layer of a model reads.

    Args:
        rank: ``r``.
        max_in: the largest input width among the adapted layers.
        max_out: the largest output width among them.
        seed: seed of the CPU generator that draws ``A``, then ``B``.
        factory: ``device``/``dtype`` the buffers are stored in.

    Attributes:
        A: ``(r, max_in)`` buffer.
        B: ``(max_out, r)`` buffer.
    """

    def __init__(self, rank: int, max_in: int, max_out: int, seed: int, factory: dict[str, Any]) -> None:
        super().__init__()
        generator = torch.Generator(device="cpu").manual_seed(seed)
        self.register_buffer("A", _kaiming_uniform((rank, max_in), generator).to(**factory))
        self.register_buffer("B", _kaiming_uniform((max_out, rank), generator).to(**factory))

    def extra_repr(self) -> str:
        return f"r={self.A.shape[0]}, max_in={self.A.shape[1]}, max_out={self.B.shape[0]}"


class VeraLinear(LinearWrapper):
    """A linear layer with a VeRA update (Kopiczko et al. 2024, eq. 2).

    ``h = W0 x + b + lambda_b * (B_s (lambda_d * (A_s dropout(x))))`` with ``A_s = A[:, :in]`` and
    ``B_s = B[:out, :]`` the blocks of the shared pair this layer uses; ``lambda_b`` (``out``) starts at
    zero, ``lambda_d`` (``r``) at ``d_initial``. The base ``weight`` and ``bias`` keep their names; the
    layer adds only ``vera_lambda_b`` and ``vera_lambda_d``.

    Args:
        base: the ``nn.Linear`` (weight ``out x in``) or GPT-2 ``Conv1D`` (weight ``in x out``) to adapt.
        shared: the model's :class:`VeraShared` (held by reference, not registered here, so the state
            dict holds it once).
        config: the VeRA settings.
    """

    def __init__(self, base: nn.Module, shared: VeraShared, config: VeraConfig) -> None:
        super().__init__(base)
        self._shared = (shared,)  # a tuple: nn.Module would register a module attribute as a child
        self.vera_lambda_b = nn.Parameter(torch.zeros(self.out_features, **self.factory))
        self.vera_lambda_d = nn.Parameter(torch.full((config.rank,), float(config.d_initial), **self.factory))
        self.vera_dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()

    def projections(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's blocks of the shared pair: ``A_s (r, in)`` and ``B_s (out, r)``."""
        shared = self._shared[0]
        return shared.A[:, : self.in_features], shared.B[: self.out_features, :]

    def extra_matmul_elements(self) -> int:
        """Elements of the shared blocks one token is multiplied by unmerged (``A_s`` and ``B_s``):
        counted by the FLOPs estimate (:func:`peftbench.measure.matmul_parameters`) as frozen weights."""
        return 0 if self.merged else self.vera_lambda_d.numel() * (self.in_features + self.out_features)

    def delta_weight(self) -> torch.Tensor:
        """``Lambda_b B_s Lambda_d A_s`` laid out like ``self.weight``."""
        a, b = self.projections()
        return self.as_stored((self.vera_lambda_b[:, None] * b) @ (self.vera_lambda_d[:, None] * a))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(..., in)``. Returns: ``(..., out)``."""
        out = self.base_forward(x)
        if self.merged:
            return out
        a, b = self.projections()
        scaled = self.vera_lambda_d * F.linear(self.vera_dropout(x), a)
        return out + self.vera_lambda_b * F.linear(scaled, b)

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
        return f"in={self.in_features}, out={self.out_features}, r={self.vera_lambda_d.numel()}"


def apply(model: nn.Module, config: VeraConfig) -> nn.Module:
    """Wraps each targeted linear layer in :class:`VeraLinear`, adds ``model.vera_shared``, freezes the rest."""
    refuse_reapply(model, VeraLinear, "VeRA")
    targets = config.target_modules if config.target_modules is not None else default_targets(model, "vera")
    names = match_modules(model, targets, is_linear)
    dims = [linear_dims(model.get_submodule(n))[1:] for n in names]
    weight = model.get_submodule(names[0]).weight
    shared = VeraShared(
        config.rank,
        max(i for i, _ in dims),
        max(o for _, o in dims),
        config.projection_seed,
        {"device": weight.device, "dtype": weight.dtype},
    )
    wrap_modules(model, names, lambda _, base: VeraLinear(base, shared, config))
    model.vera_shared = shared
    return model


def merge(model: nn.Module) -> nn.Module:
    return each(model, VeraLinear, "merge")


def unmerge(model: nn.Module) -> nn.Module:
    return each(model, VeraLinear, "unmerge")


SPEC = MethodSpec(
    name="vera",
    config_cls=VeraConfig,
    apply=apply,
    param_prefix="vera_",
    merge=merge,
    unmerge=unmerge,
    description="VeRA (Kopiczko et al. 2024): frozen shared random A, B; trainable scaling vectors per layer",
)
