"""Bottleneck adapters: Houlsby et al. 2019 and Pfeiffer et al. 2021, two methods on one module.

Both methods wrap chosen output projections of a transformer (by module name, from
``methods/targets.yaml``) so that the projection's output ``h`` becomes ``h + up(act(down(h)))``:

* ``houlsby`` (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP", section 2.1 and
  figure 2): two adapters per layer, after the attention block's output projection and after the
  feed-forward block's output projection, each before the block's residual add and layer norm.
* ``pfeiffer`` (Pfeiffer et al. 2021, "AdapterFusion: Non-Destructive Task Composition for Transfer
  Learning", EACL): one adapter per layer, after the feed-forward block only.

Choices and differences from the papers and from AdapterHub's ``adapters`` library:

* Initialisation. Houlsby et al. draw both projections from a zero-mean normal with standard
  deviation 1e-2 truncated at two standard deviations ("near-identity initialisation"). We start the
  up-projection (weight and bias) at exactly zero, so the adapted model computes exactly the base
  model at init, and draw the down-projection like ``nn.Linear``'s default (Kaiming-uniform with
  ``a = sqrt(5)``, zero bias): the initialisation He et al. 2022 ("Towards a Unified View of
  Parameter-Efficient Transfer Learning") use for their adapters, and the one LoRA uses with its
  zero-initialised ``B`` (Hu et al. 2021, section 4.1; ``methods/lora.py``). A fixed std of 1e-2
  would make the bottleneck's activations, and so the early updates of ``up``, shrink with the
  hidden width; Kaiming scales with it.
* Non-linearity: ``relu`` by default for both methods (AdapterHub's Pfeiffer configuration uses relu;
  its Houlsby configuration uses swish, available here as ``non_linearity: swish``).
* Placement. The adapter sits right on the output projection, before the base model's dropout,
  residual add and layer norm. For ``pfeiffer`` this is a simplification: AdapterHub's Pfeiffer
  configuration also routes the block's own residual add and layer norm around the adapter
  (``original_ln_before``/``original_ln_after``); we place it like Houlsby's feed-forward adapter.
* Layer norms. Houlsby et al. also train the layer norms; here they stay frozen unless
  ``train_layer_norms`` is set. When set, every normalisation layer of the model (``LayerNorm`` and
  ``RMSNorm`` types, including T5's and Llama's) gets a trainable additive offset, initialised to
  zero, on each of its parameters. Training ``w0 + delta`` is training ``w`` itself (except that
  weight decay pulls ``delta``, not ``w``, towards zero), but the trained state lives under the
  method's prefix, so ``method_state_dict`` saves it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn
from torch.func import functional_call

from .base import (
    LinearWrapper,
    MethodConfigError,
    MethodSpec,
    check_positive_int,
    check_targets,
    is_linear,
    linear_dims,
    match_modules,
    refuse_reapply,
    replace_module,
    wrap_modules,
)
from .targets import default_targets

NON_LINEARITIES: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


@dataclass
class BottleneckConfig:
    """Settings shared by the bottleneck adapter methods.

    Attributes:
        reduction_factor: bottleneck width is ``hidden // reduction_factor``, where ``hidden`` is
            the output width of the wrapped projection. Ignored when ``bottleneck_size`` is set.
        bottleneck_size: explicit bottleneck width; overrides ``reduction_factor``.
        non_linearity: one of ``relu`` (default), ``gelu``, ``swish`` (= ``silu``), ``tanh``.
        train_layer_norms: also train the model's normalisation layers (see the module docstring).
        target_modules: module names (each matching a module named so or ending in ``.<name>``) or
            one regular expression over full module names; ``None`` takes the family's defaults.
    """

    reduction_factor: int = 16
    bottleneck_size: Optional[int] = None  # noqa: UP045 (OmegaConf reads Optional)
    non_linearity: str = "relu"
    train_layer_norms: bool = False
    target_modules: Any = None

    def __post_init__(self) -> None:
        check_positive_int(self.reduction_factor, "reduction_factor")
        if self.bottleneck_size is not None:
            check_positive_int(self.bottleneck_size, "bottleneck_size")
        if self.non_linearity not in NON_LINEARITIES:
            raise MethodConfigError(
                f"non_linearity must be one of {', '.join(NON_LINEARITIES)}, got {self.non_linearity!r}"
            )
        if not isinstance(self.train_layer_norms, bool):
            raise MethodConfigError(
                f"train_layer_norms must be true or false, got {self.train_layer_norms!r}"
            )
        self.target_modules = check_targets(self.target_modules)

    def bottleneck_for(self, hidden: int) -> int:
        """The bottleneck width for a projection with ``hidden`` output features."""
        return self.bottleneck_size if self.bottleneck_size is not None else hidden // self.reduction_factor


@dataclass
class HoulsbyConfig(BottleneckConfig):
    """Settings of Houlsby adapters (two per layer); fields as in :class:`BottleneckConfig`."""


@dataclass
class PfeifferConfig(BottleneckConfig):
    """Settings of Pfeiffer adapters (one per layer); fields as in :class:`BottleneckConfig`."""


class Bottleneck(nn.Module):
    """The adapter itself: ``h + up(act(down(h)))`` (Houlsby et al. 2019, section 2.1, figure 2).

    Args:
        hidden: width ``d`` of ``h``.
        bottleneck: width ``m`` of the bottleneck (``m << d``).
        non_linearity: key of :data:`NON_LINEARITIES`.
        factory: ``device``/``dtype`` keyword arguments for the new parameters.
    """

    def __init__(self, hidden: int, bottleneck: int, non_linearity: str, **factory: Any) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck, **factory)
        self.act = NON_LINEARITIES[non_linearity]()
        self.up = nn.Linear(bottleneck, hidden, **factory)
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
            self.down.bias.zero_()
            self.up.weight.zero_()  # exact identity at init (see the module docstring)
            self.up.bias.zero_()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Args: h: ``(..., d)``. Returns: ``(..., d)``."""
        return h + self.up(self.act(self.down(h)))


class AdapterLinear(LinearWrapper):
    """A linear projection followed by a bottleneck adapter on its output.

    ``y = h + up(act(down(h)))`` with ``h = W x + b``. The base ``weight`` and ``bias`` keep their
    names, so the base model's state-dict keys are unchanged; the adapter lives in a submodule named
    ``<prefix>adapter`` (``houlsby_adapter.down.weight``...).

    Args:
        base: the ``nn.Linear`` (weight ``out x in``) or GPT-2 ``Conv1D`` (weight ``in x out``) to wrap.
        bottleneck: bottleneck width.
        non_linearity: key of :data:`NON_LINEARITIES`.
        prefix: the method's parameter prefix (``houlsby_`` or ``pfeiffer_``).
    """

    def __init__(self, base: nn.Module, bottleneck: int, non_linearity: str, prefix: str) -> None:
        super().__init__(base)
        self.prefix = prefix
        self.adapter_name = f"{prefix}adapter"
        self.add_module(self.adapter_name, Bottleneck(self.out_features, bottleneck, non_linearity, **self.factory))

    @property
    def adapter(self) -> Bottleneck:
        return getattr(self, self.adapter_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(..., in)``. Returns: ``(..., out)``."""
        return self.adapter(self.base_forward(x))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bottleneck={self.adapter.down.out_features}"


class NormOffset(nn.Module):
    """A normalisation layer whose parameters are trained through zero-initialised offsets.

    The wrapped norm runs with ``weight + <prefix>ln_weight`` (and likewise for ``bias`` and any other
    parameter it has). The base parameters keep their names and stay frozen, so the base model's
    state-dict keys are unchanged and the trained part is found under the method's prefix. Any other
    attribute (``eps``, ``variance_epsilon``...) is read from the wrapped norm.

    Args:
        base: any normalisation module (``nn.LayerNorm``, T5's ``T5LayerNorm``, Llama's ``RMSNorm``...).
        prefix: the method's parameter prefix.
    """

    def __init__(self, base: nn.Module, prefix: str) -> None:
        super().__init__()
        self.param_names = [name for name, _ in base.named_parameters(recurse=False)]
        self.prefix = prefix
        for name in self.param_names:
            param = getattr(base, name)
            self.register_parameter(name, param)
            self.register_parameter(f"{prefix}ln_{name}", nn.Parameter(torch.zeros_like(param)))
        # The base norm is kept out of the module tree (its parameters are registered above under
        # their own names), so that its keys are not duplicated under ``<name>._norm.*``. Set last:
        # from here on, ``__getattr__`` falls back to it.
        self.__dict__["_norm"] = base

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if "_norm" not in self.__dict__:
                raise
            return getattr(self.__dict__["_norm"], name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the wrapped norm (input ``(..., d)``, output ``(..., d)``) with offset parameters."""
        params = {n: getattr(self, n) + getattr(self, f"{self.prefix}ln_{n}") for n in self.param_names}
        return functional_call(self.__dict__["_norm"], params, args, kwargs)

    def extra_repr(self) -> str:
        return f"{self.__dict__['_norm']!r}, trained through {self.prefix}ln_* offsets"


def is_norm(module: nn.Module) -> bool:
    """True for layer norms and RMS norms of any library (chosen by type: norms have no common name)."""
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        return True
    return type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def _apply(model: nn.Module, config: BottleneckConfig, method: str, prefix: str) -> nn.Module:
    refuse_reapply(model, (AdapterLinear, NormOffset), f"{method} adapters",
                   lambda m: getattr(m, "prefix", None) == prefix)
    targets = config.target_modules if config.target_modules is not None else default_targets(model, method)
    names = match_modules(model, targets, is_linear)
    widths = {}
    for name in names:  # validate everything before touching the model
        hidden = linear_dims(model.get_submodule(name))[2]
        widths[name] = config.bottleneck_for(hidden)
        if widths[name] < 1:
            raise MethodConfigError(
                f"{method}: reduction_factor={config.reduction_factor} leaves no bottleneck for {name} "
                f"(width {hidden}); lower reduction_factor or set bottleneck_size"
            )
    norms = [n for n, m in model.named_modules() if n and is_norm(m)] if config.train_layer_norms else []
    if config.train_layer_norms and not norms:
        raise MethodConfigError(
            f"{method}: train_layer_norms is set but {type(model).__name__} has no norm layers"
        )
    wrap_modules(model, names, lambda name, base: AdapterLinear(base, widths[name], config.non_linearity, prefix))
    for name in norms:
        replace_module(model, name, NormOffset(model.get_submodule(name), prefix))
    return model


def apply_houlsby(model: nn.Module, config: HoulsbyConfig) -> nn.Module:
    """Adds Houlsby adapters after the attention and feed-forward output projections; freezes the rest."""
    return _apply(model, config, "houlsby", HOULSBY_PREFIX)


def apply_pfeiffer(model: nn.Module, config: PfeifferConfig) -> nn.Module:
    """Adds Pfeiffer adapters after the feed-forward output projections; freezes the rest."""
    return _apply(model, config, "pfeiffer", PFEIFFER_PREFIX)


HOULSBY_PREFIX = "houlsby_"
PFEIFFER_PREFIX = "pfeiffer_"

HOULSBY_SPEC = MethodSpec(
    name="houlsby",
    config_cls=HoulsbyConfig,
    apply=apply_houlsby,
    param_prefix=HOULSBY_PREFIX,
    description="Houlsby adapters (Houlsby et al. 2019): bottleneck MLPs after attention and FFN outputs",
)

PFEIFFER_SPEC = MethodSpec(
    name="pfeiffer",
    config_cls=PfeifferConfig,
    apply=apply_pfeiffer,
    param_prefix=PFEIFFER_PREFIX,
    description="Pfeiffer adapters (Pfeiffer et al. 2021): one bottleneck MLP after each FFN output",
)
