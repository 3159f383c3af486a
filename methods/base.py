"""The contract every PEFT method in ``methods/`` fulfils, and the registry that holds them.

A method is one module that defines a config dataclass (validated in ``__post_init__``) and an
``apply(model, config)`` function that injects its modules, freezes everything else and returns the
model. Mergeable methods also provide ``merge``/``unmerge``. This package knows nothing of the
peftbench harness: it takes a ``torch.nn.Module`` and gives one back.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

try:  # GPT-2 keeps its projections in a transposed "Conv1D" (weight shape: in x out).
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a dependency, but methods/ must not need it
    Conv1D = ()


def is_linear(module: nn.Module) -> bool:
    """A layer the linear-wrapping methods can adapt: ``nn.Linear`` or GPT-2's ``Conv1D``."""
    return isinstance(module, nn.Linear) or (bool(Conv1D) and isinstance(module, Conv1D))


def each(model: nn.Module, cls: type, action: str) -> nn.Module:
    """Calls ``action`` (``"merge"``, ``"unmerge"``) on every submodule of type ``cls``; returns ``model``."""
    for module in model.modules():
        if isinstance(module, cls):
            getattr(module, action)()
    return model


class MethodConfigError(ValueError):
    """A method was given a setting it cannot use (bad rank, unmatched target, ...)."""


@dataclass(frozen=True)
class MethodSpec:
    """One registered method.

    Attributes:
        name: the name users type (``method=lora``).
        config_cls: dataclass holding the method's settings; validates itself in ``__post_init__``.
        apply: ``apply(model, config) -> model``: injects the method and freezes the base model.
        param_prefix: prefix of the attribute names of the parameters the method adds (``lora_``);
            ``None`` for methods that add no parameters (full fine-tuning, BitFit).
        merge: folds the method's weights into the base weights in place, if the method can.
        unmerge: exact inverse of ``merge``.
        description: one line for listings and error messages.
        not_mergeable_because: for a method without ``merge`` that one might expect to merge, why
            it cannot (shown when a merge is asked for).
        state_dict: ``state_dict(model) -> {name: tensor}``: the entries of ``model.state_dict()`` the
            method adds, for methods whose state no single prefix names (the peft bridge); ``None``:
            the ``param_prefix`` entries (every entry for prefix-less methods).
        can_merge: ``can_merge(model) -> bool``: whether ``merge`` can fold *this* applied model, for
            methods whose mergeability depends on their settings; ``None``: always, if ``merge`` is set.
        on_step: ``on_step(model, step, total_steps)``: work the method does after every optimizer
            step, before the gradients are cleared (AdaLoRA's rank allocation); ``step`` counts from 1.
        label: ``label(settings) -> str``: how results label a run from its raw ``method`` settings
            (``peft:loha``); ``None``: the method's name.
        weight_updates: ``weight_updates(model) -> (updates, why_missing)``: the learned update
            ``W - W0`` of each weight matrix the applied method changes, as ``(name, out x in float32
            tensor on the CPU)`` under the base weight's own name, and why any changed weight has none
            (``""`` when none is missing); for methods whose layers no prefix names (the peft bridge).
            ``None``: the spectrum reads the update from the prefix and merging (peftbench/spectrum.py).
        rank: ``rank(settings) -> (key, value) | None``: where under ``method.`` the method's rank is set
            and its value in these raw settings (``("options.r", 4)`` for peft's LoHa), or None for a
            setting without a rank (peft's OFT, IA3); ``None``: ``("rank", settings["rank"])`` where the
            settings have a ``rank``.
        used_settings: ``used_settings(model) -> settings``: the settings as the applied method uses
            them, for a method that may change what it is given (peft adjusts an OFT block size that does
            not divide a layer's width); ``None``: it uses them as given.
    """

    name: str
    config_cls: type
    apply: Callable[[nn.Module, Any], nn.Module]
    param_prefix: str | None = None
    merge: Callable[[nn.Module], nn.Module] | None = None
    unmerge: Callable[[nn.Module], nn.Module] | None = None
    description: str = ""
    not_mergeable_because: str = ""
    state_dict: Callable[[nn.Module], dict[str, Any]] | None = None
    can_merge: Callable[[nn.Module], bool] | None = None
    on_step: Callable[[nn.Module, int, int], None] | None = None
    label: Callable[[Mapping[str, Any]], str] | None = None
    weight_updates: Callable[[nn.Module], tuple[list[tuple[str, torch.Tensor]], str]] | None = None
    rank: Callable[[Mapping[str, Any]], tuple[str, Any] | None] | None = None
    used_settings: Callable[[nn.Module], dict[str, Any]] | None = None

    @property
    def mergeable(self) -> bool:
        return self.merge is not None

    def merges(self, model: nn.Module | None = None) -> bool:
        """Whether ``merge`` applies: to ``model`` (an applied model) if given, else in general."""
        if self.merge is None:
            return False
        return model is None or self.can_merge is None or self.can_merge(model)

    def run_rank(self, settings: Mapping[str, Any]) -> tuple[str, Any] | None:
        """``(key under method., value)`` of the rank in these raw settings, or None without a rank."""
        if self.rank is not None:
            return self.rank(settings)
        return ("rank", settings["rank"]) if "rank" in settings else None

    def run_label(self, settings: Mapping[str, Any]) -> str:
        """The ``method`` column of a run with these raw settings."""
        return self.label(settings) if self.label is not None else self.name


_REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Adds a method to the registry, refusing a second method of the same name or prefix."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", spec.name):
        raise ValueError(f"method name {spec.name!r} must be lower-case letters, digits and '_'")
    if spec.name in _REGISTRY:
        raise ValueError(f"a method named {spec.name!r} is already registered")
    if spec.param_prefix is not None:
        for other in _REGISTRY.values():
            if other.param_prefix is None:
                continue
            if other.param_prefix.startswith(spec.param_prefix) or spec.param_prefix.startswith(
                other.param_prefix
            ):
                raise ValueError(
                    f"method {spec.name!r}: parameter prefix {spec.param_prefix!r} clashes with "
                    f"{other.param_prefix!r} of method {other.name!r}"
                )
    _REGISTRY[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    """Returns the registered method called ``name``, or raises a clear error listing the choices."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MethodConfigError(
            f"unknown method {name!r}; the registered methods are: {', '.join(sorted(_REGISTRY))}"
        ) from None


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def is_method_param(param_name: str, prefix: str) -> bool:
    """True if a parameter's qualified name has a component that starts with ``prefix``."""
    return any(part.startswith(prefix) for part in param_name.split("."))


def freeze_all(model: nn.Module) -> None:
    for param in model.parameters():
        param.requires_grad_(False)


def is_positive_int(value: Any) -> bool:
    """An int of at least 1 (a bool is not one)."""
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


def check_positive_int(value: Any, key: str) -> None:
    if not is_positive_int(value):
        raise MethodConfigError(f"{key} must be a positive integer, got {value!r}")


def check_targets(value: Any, key: str = "target_modules", allow_empty: bool = False) -> Any:
    """A ``*_modules`` setting as given: None, a regex string, or a list of module names (returned
    as a ``list``; an empty one only where ``allow_empty``)."""
    if value is None or isinstance(value, str):
        return value
    value = list(value)
    if (not value and not allow_empty) or not all(isinstance(t, str) for t in value):
        kind = "a list" if allow_empty else "a non-empty list"
        raise MethodConfigError(f"{key} must be a regex string or {kind} of module names, got {value!r}")
    return value


def linear_dims(base: nn.Module) -> tuple[bool, int, int]:
    """``(fan_in_fan_out, in_features, out_features)`` of an ``nn.Linear`` (weight ``out x in``) or a
    GPT-2 ``Conv1D`` (weight ``in x out``: fan_in_fan_out).

    An ``nn.Linear``'s widths are read from its ``in_features``/``out_features``, not its weight's
    shape, so subclasses that store the weight packed (bitsandbytes' 4-bit ``Linear4bit``) work too.
    """
    if isinstance(base, nn.Linear):
        return False, base.in_features, base.out_features
    in_features, out_features = base.weight.shape
    return True, in_features, out_features


class LinearWrapper(nn.Module):
    """Base of the layers that wrap one linear layer (LoRA, IA3, adapters, ...).

    It keeps the base layer's ``weight`` and ``bias`` under their own names, so the base model's
    state-dict keys are unchanged and a method only adds keys under its prefix. A subclass holds only
    its own idea: its parameters, its ``forward`` and, where it can, ``merge``/``unmerge``.

    Args:
        base: the ``nn.Linear`` (weight ``out x in``) or GPT-2 ``Conv1D`` (weight ``in x out``) to wrap.

    Attributes:
        fan_in_fan_out: the weight is stored ``in x out`` (GPT-2's ``Conv1D``).
        in_features, out_features: the layer's input and output widths.
        merged: the method's update is folded into ``weight`` (``forward`` then runs the base only).
    """

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.fan_in_fan_out, self.in_features, self.out_features = linear_dims(base)
        self.weight, self.bias = base.weight, base.bias
        self.merged = False

    @property
    def factory(self) -> dict[str, Any]:
        """``device`` and ``dtype`` for the method's new tensors: those of the base weight."""
        return {"device": self.weight.device, "dtype": self.weight.dtype}

    def base_weight(self) -> torch.Tensor:
        """The base weight as ``out x in`` (a view, whatever the storage layout)."""
        return self.weight.T if self.fan_in_fan_out else self.weight

    def as_stored(self, matrix: torch.Tensor) -> torch.Tensor:
        """An ``out x in`` matrix laid out like ``self.weight`` (transposed for ``Conv1D``)."""
        return matrix.T if self.fan_in_fan_out else matrix

    def base_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped layer itself: ``W0 x + b``. Args: x: ``(..., in)``. Returns: ``(..., out)``."""
        return F.linear(x, self.base_weight(), self.bias)


def refuse_reapply(
    model: nn.Module, layer: type | tuple[type, ...], method: str, same: Callable[[nn.Module], bool] | None = None
) -> None:
    """Raises if ``model`` already holds a ``layer`` (for which ``same`` holds): a method applies once."""
    if any(isinstance(m, layer) and (same is None or same(m)) for m in model.modules()):
        raise MethodConfigError(f"{method} is already applied to this model")


def wrap_modules(model: nn.Module, names: Iterable[str], make: Callable[[str, nn.Module], nn.Module]) -> nn.Module:
    """Freezes ``model``, then replaces each named module by ``make(name, module)``; returns ``model``.

    Callers validate everything first, so a refused setting leaves the model untouched.
    """
    freeze_all(model)
    for name in list(names):
        replace_module(model, name, make(name, model.get_submodule(name)))
    return model


def replace_module(model: nn.Module, qualified_name: str, new: nn.Module) -> None:
    """Swaps the submodule at ``qualified_name`` (e.g. ``encoder.layer.0.attention.self.query``)."""
    parent_name, _, child = qualified_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def match_modules(
    model: nn.Module,
    targets: str | Iterable[str],
    accept: Callable[[nn.Module], bool],
    key: str = "target_modules",
) -> list[str]:
    """Names of the modules that ``targets`` selects, by name (never by model class).

    Args:
        model: the model to search.
        targets: a regular expression matched against each full module name (a ``str``), or a list
            of names, each matching a module whose name equals it or ends with ``.<name>``.
        accept: which module types the method can wrap; matches of other types are an error.
        key: the config key named in error messages.

    Raises:
        MethodConfigError: if nothing matches, naming the model's candidate modules.
    """
    if isinstance(targets, str):
        pattern = re.compile(targets)

        def selected(name: str) -> bool:
            return pattern.fullmatch(name) is not None
    else:
        wanted = list(targets)

        def selected(name: str) -> bool:
            return any(name == t or name.endswith("." + t) for t in wanted)

    names = [name for name, module in model.named_modules() if name and selected(name)]
    wrong_type = [n for n in names if not accept(model.get_submodule(n))]
    names = [n for n in names if n not in wrong_type]
    if not names:
        candidates = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and accept(m)})
        hint = f" (matched only modules of a type it cannot wrap: {wrong_type[:5]})" if wrong_type else ""
        raise MethodConfigError(
            f"{key}={targets!r} matched no module of {type(model).__name__}{hint}. "
            f"Modules it can target in this model: {', '.join(candidates) or 'none'}."
        )
    return names


def method_state_dict(model: nn.Module, spec: MethodSpec) -> dict[str, Any]:
    """The state a method adds: what its ``state_dict`` hook says, else the ``<prefix>*`` entries, or
    every entry for prefix-less methods.

    Tensors shared between names (tied embeddings) appear once, under their first name.
    """
    if spec.state_dict is not None:
        return spec.state_dict(model)
    state = model.state_dict()
    if spec.param_prefix is not None:
        return {k: v for k, v in state.items() if is_method_param(k, spec.param_prefix)}
    seen: set[int] = set()
    unique = {}
    for key, value in state.items():
        if value.data_ptr() in seen and value.numel() > 0:
            continue
        seen.add(value.data_ptr())
        unique[key] = value
    return unique


# Forward pre-hooks (the methods that feed a model through its own call: prefix and prompt tuning).


def accepts(module: nn.Module, name: str) -> bool:
    """True if ``module.forward`` takes an argument called ``name``."""
    return name in inspect.signature(module.forward).parameters


def positional_names(module: nn.Module) -> list[str]:
    """The names of ``module.forward``'s arguments that can be passed by position, in order."""
    params = inspect.signature(module.forward).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def call_kwargs(module: nn.Module, positional: list[str], args: tuple, kwargs: dict) -> dict[str, Any]:
    """A call's arguments as keywords only, so a ``with_kwargs`` pre-hook can edit them by name.

    Args:
        module: the hooked module (named in errors).
        positional: :func:`positional_names` of the module, computed once when the hook is made.
        args, kwargs: what the pre-hook received.

    Returns:
        every argument by name; ``past_key_values`` (the name transformers 5 still accepts) is
        renamed to ``cache``.
    """
    if len(args) > len(positional):
        raise TypeError(
            f"{type(module).__name__} got {len(args)} positional arguments, expected at most {len(positional)}"
        )
    kwargs = {**dict(zip(positional[: len(args)], args, strict=True)), **kwargs}
    if "past_key_values" in kwargs:
        kwargs["cache"] = kwargs.pop("past_key_values")
    return kwargs


def prepend_ones(mask: torch.Tensor, n: int, method: str) -> torch.Tensor:
    """A 2-D attention mask (``batch x keys``) with ``n`` ones in front: ``(batch, n + keys)``.

    Raises:
        ValueError: for a mask of another rank (a 4-D mask cannot be extended without knowing its
            layout), naming ``method``.
    """
    if mask.ndim != 2:
        raise ValueError(f"{method} extends 2-D attention masks (batch x keys); got a {mask.ndim}-D mask")
    return torch.cat([torch.ones(mask.shape[0], n, dtype=mask.dtype, device=mask.device), mask], dim=1)
