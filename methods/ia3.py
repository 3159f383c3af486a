"""(IA)^3: learned vectors that rescale keys, values and feed-forward activations.

Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
Learning", section 3.3: attention becomes ``softmax(Q (l_k * K)^T / sqrt(d_k)) (l_v * V)`` and the
position-wise feed-forward network becomes ``(l_ff * act(W_1 x)) W_2``, with ``l_k, l_v, l_ff``
initialised to ones. Here:

* ``l_k``/``l_v`` scale the *output* of the key and value projections (``target_modules``): a
  vector of the projection's output width. On grouped-query attention (Llama with fewer key/value
  heads) that is ``num_key_value_heads * head_dim``, read from the module's ``out_features``.
* ``l_ff`` scales the *input* of the feed-forward block's second linear (``feedforward_modules``):
  a vector of its input width (the FFN's inner width).
* GPT-2 computes queries, keys and values with one fused ``c_attn`` (output ``[q | k | v]``, width
  ``3 * hidden``). Modules listed in ``fused_qkv_modules`` get a vector of width ``2 * hidden`` that
  scales the key and value thirds only; the query third is not rescaled (the paper adds no query
  vector) and has no parameter, so the trainable count is honest.

Everything is exact at init (scaling by ones) and mergeable exactly: output scaling multiplies the
weight rows (and the bias) by ``l``, input scaling multiplies the weight columns; unmerging divides.

Default targets per family (``methods/targets.yaml``, key ``ia3``) follow the paper, and differ from
Hugging Face peft's defaults (``TRANSFORMERS_MODELS_TO_IA3_*_MODULES_MAPPING``) where peft differs:

* BERT / RoBERTa / XLM-R: peft targets ``["key", "value", "output.dense"]`` with feed-forward
  ``["output.dense"]``. As a suffix, ``output.dense`` also matches ``attention.output.dense``, the
  attention output projection, so peft adds an input-scaling vector there too, which the paper does
  not have. Ours selects only each layer's ``output.dense`` (the FFN's second linear) by a regex.
* GPT-2: peft scales the whole fused ``c_attn`` output, queries included (``3 * hidden`` values per
  layer); ours scales keys and values only (``2 * hidden``), as in the paper.
* ViT: peft has no IA3 default; ours is ``k_proj``, ``v_proj`` and ``mlp.fc2``.
* T5 (``k``, ``v``, ``wo``: self- and cross-attention, FFN) and Llama (``k_proj``, ``v_proj``,
  ``down_proj``) are the same as peft's.

Config semantics also differ from peft's: our ``target_modules`` are only the output-scaled modules
and ``feedforward_modules`` the input-scaled ones (the two are disjoint), whereas peft's
``target_modules`` lists both and ``feedforward_modules`` is a subset of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .base import (
    LinearWrapper,
    MethodConfigError,
    MethodSpec,
    check_targets,
    each,
    is_linear,
    linear_dims,
    match_modules,
    refuse_reapply,
    wrap_modules,
)
from .targets import default_targets

OUTPUT, INPUT, FUSED_KV = "output", "input", "fused_kv"


@dataclass
class IA3Config:
    """Settings of (IA)^3.

    Each field is module names (each matching a module named so or ending in ``.<name>``), one regular
    expression over full module names, an empty list for none, or ``None`` for the family's defaults.

    Attributes:
        target_modules: projections whose output is rescaled (the paper's keys and values).
        feedforward_modules: linears whose input is rescaled (the paper's second FFN linear).
        fused_qkv_modules: those of ``target_modules`` whose output is ``[q | k | v]`` of equal widths;
            only their key and value parts are rescaled. ``None``: the family's defaults, if any.
    """

    target_modules: Any = None
    feedforward_modules: Any = None
    fused_qkv_modules: Any = None

    def __post_init__(self) -> None:
        # An empty list is allowed here: none of that kind.
        for key in ("target_modules", "feedforward_modules", "fused_qkv_modules"):
            setattr(self, key, check_targets(getattr(self, key), key, allow_empty=True))


class IA3Linear(LinearWrapper):
    """A linear layer whose output or input is rescaled by a learned vector (Liu et al. 2022, sec. 3.3).

    * ``mode="output"``: ``y = l * (W x + b)``, ``l`` of width ``out`` (``l_k``, ``l_v``).
    * ``mode="fused_kv"``: ``y = [1, l] * (W x + b)``, ``l`` of width ``2 * out / 3``: the key and value
      parts of a fused ``[q | k | v]`` output.
    * ``mode="input"``: ``y = W (l * x) + b``, ``l`` of width ``in`` (``l_ff``).

    ``l`` (``ia3_l``) starts at ones. The base ``weight`` and ``bias`` keep their names, so the base
    model's state-dict keys are unchanged and only ``ia3_l`` keys are added.

    Args:
        base: the ``nn.Linear`` (weight ``out x in``) or GPT-2 ``Conv1D`` (weight ``in x out``) to wrap.
        mode: ``"output"``, ``"fused_kv"`` or ``"input"``.
    """

    def __init__(self, base: nn.Module, mode: str) -> None:
        super().__init__(base)
        in_features, out_features = self.in_features, self.out_features
        self.mode = mode
        if mode == INPUT:
            self.start, width = 0, in_features
        elif mode == OUTPUT:
            self.start, width = 0, out_features
        elif mode == FUSED_KV:
            if out_features % 3:
                raise MethodConfigError(
                    f"a fused q|k|v projection needs an output width divisible by 3, got {out_features}"
                )
            self.start, width = out_features // 3, out_features - out_features // 3
        else:
            raise ValueError(f"unknown IA3 mode {mode!r}")
        self.ia3_l = nn.Parameter(torch.ones(width, **self.factory))

    def output_scale(self) -> torch.Tensor:
        """The factor on the whole output, ``(out,)`` (ones on a fused projection's query part)."""
        if self.start == 0:
            return self.ia3_l
        return torch.cat([self.ia3_l.new_ones(self.start), self.ia3_l])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(..., in)``. Returns: ``(..., out)``."""
        if self.merged:
            return self.base_forward(x)
        if self.mode == INPUT:
            return self.base_forward(x * self.ia3_l)
        return self.base_forward(x) * self.output_scale()

    @torch.no_grad()
    def _rescale(self, factor: torch.Tensor) -> None:
        """Multiplies the base weight (and, for output scaling, the bias) by ``factor`` in place."""
        if self.mode == INPUT:  # columns of the out x in weight: rows of a Conv1D weight
            self.weight.mul_(factor[:, None] if self.fan_in_fan_out else factor[None, :])
            return
        scale = torch.cat([factor.new_ones(self.start), factor]) if self.start else factor
        self.weight.mul_(scale[None, :] if self.fan_in_fan_out else scale[:, None])
        if self.bias is not None:
            self.bias.mul_(scale)

    @torch.no_grad()
    def merge(self) -> None:
        """Folds ``l`` into the base weight. Refuses zeros in ``l``, which unmerge could not undo."""
        if self.merged:
            return
        if (self.ia3_l == 0).any():
            raise MethodConfigError(
                "cannot merge IA3: a scaling vector has zeros, so it could not be unmerged"
            )
        self._rescale(self.ia3_l)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Exact inverse of :meth:`merge` (up to floating-point rounding)."""
        if self.merged:
            self._rescale(1.0 / self.ia3_l)
            self.merged = False

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, mode={self.mode}, width={self.ia3_l.numel()}"


def _match(model: nn.Module, targets: Any, key: str) -> list[str]:
    if isinstance(targets, list) and not targets:
        return []
    return match_modules(model, targets, is_linear, key=key)


def resolve_targets(model: nn.Module, config: IA3Config) -> dict[str, str]:
    """Module name -> mode (``output``, ``fused_kv`` or ``input``) for ``model`` under ``config``.

    Raises:
        MethodConfigError: for unmatched names, a module selected twice, or nothing selected.
    """

    def family_default(key: str) -> Any:
        return default_targets(model, "ia3").get(key, [])

    kv_targets = config.target_modules if config.target_modules is not None else family_default("keys_values")
    ff_targets = (
        config.feedforward_modules
        if config.feedforward_modules is not None
        else family_default("feedforward")
    )
    kv = _match(model, kv_targets, "target_modules")
    ff = _match(model, ff_targets, "feedforward_modules")
    if config.fused_qkv_modules is not None:
        fused = _match(model, config.fused_qkv_modules, "fused_qkv_modules")
        stray = sorted(set(fused) - set(kv))
        if stray:
            raise MethodConfigError(
                f"fused_qkv_modules must be among target_modules; not targeted: {stray[:5]}"
            )
    else:  # the family's fused projections, wherever they are targeted
        try:
            fused_default = family_default("fused_qkv")
        except MethodConfigError:  # a family without defaults has no known fused projections
            fused_default = []
        fused = (
            [n for n in _match(model, fused_default, "fused_qkv_modules") if n in kv] if fused_default else []
        )
    both = sorted(set(kv) & set(ff))
    if both:
        raise MethodConfigError(
            f"modules selected both as target_modules (output scaling) and feedforward_modules (input "
            f"scaling): {both[:5]}"
        )
    if not kv and not ff:
        raise MethodConfigError(
            "IA3 selects no module: target_modules and feedforward_modules are both empty"
        )
    modes = {name: FUSED_KV if name in fused else OUTPUT for name in kv}
    modes.update({name: INPUT for name in ff})
    return modes


def apply(model: nn.Module, config: IA3Config) -> nn.Module:
    """Wraps each selected linear layer of ``model`` in :class:`IA3Linear` and freezes the rest."""
    refuse_reapply(model, IA3Linear, "IA3")
    modes = resolve_targets(model, config)
    for name, mode in modes.items():  # validate before touching the model
        out = linear_dims(model.get_submodule(name))[2]
        if mode == FUSED_KV and out % 3:
            raise MethodConfigError(f"fused_qkv module {name} has output width {out}, not divisible by 3")
    return wrap_modules(model, modes, lambda name, base: IA3Linear(base, modes[name]))


def merge(model: nn.Module) -> nn.Module:
    """Folds every IA3 vector into its base weight (all or none: checks every vector first)."""
    layers = [m for m in model.modules() if isinstance(m, IA3Linear) and not m.merged]
    if any((m.ia3_l == 0).any() for m in layers):
        raise MethodConfigError("cannot merge IA3: a scaling vector has zeros, so it could not be unmerged")
    for module in layers:
        module.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    return each(model, IA3Linear, "unmerge")


SPEC = MethodSpec(
    name="ia3",
    config_cls=IA3Config,
    apply=apply,
    param_prefix="ia3_",
    merge=merge,
    unmerge=unmerge,
    description="(IA)^3 (Liu et al. 2022): learned vectors rescaling keys, values and FFN activations",
)
