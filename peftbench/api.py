"""The public Python API: apply a registered method to any ``torch.nn.Module`` and count parameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from peftbench import methods
from peftbench.measure import parameter_numel
from peftbench.methods.base import method_state_dict
from peftbench.methods.targets import head_names


def apply_method(model: nn.Module, method: str, train_head: bool = True, **settings: Any) -> nn.Module:
    """Applies a PEFT method to ``model``: only the method's parameters (and the task head) train.

    Args:
        model: any ``torch.nn.Module``; transformers models get their family's default targets.
        method: a registered method name (``full``, ``lora``, ...).
        train_head: keep the task head a task adds (``classifier``, ``score``...) trainable, since it
            starts untrained; the head names per family are in ``methods/targets.yaml``.
        **settings: fields of the method's config dataclass, e.g. ``rank=8, target_modules=[...]``.

    Returns:
        The adapted model (the same object for methods that inject in place).

    Raises:
        methods.MethodConfigError: unknown method, unknown or invalid setting, target not found.
    """
    spec = methods.get_method(method)
    try:
        config = spec.config_cls(**settings)
    except TypeError as err:
        allowed = ", ".join(f.name for f in spec.config_cls.__dataclass_fields__.values()) or "none"
        raise methods.MethodConfigError(f"{method}: {err}; its settings are: {allowed}") from None
    heads = [model.get_submodule(h) for h in head_names(model) if hasattr(model, h)]
    model = spec.apply(model, config)
    if train_head:
        for head in heads:
            head.requires_grad_(True)
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Returns ``(trainable, total)`` parameter counts; a tied or shared tensor counts once, and a
    4-bit packed weight counts the elements it stands for (:func:`peftbench.measure.parameter_numel`)."""
    trainable = total = 0
    for param in model.parameters():  # parameters() yields each shared Parameter once
        total += parameter_numel(param)
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total


def method_state(model: nn.Module, method: str) -> dict[str, Any]:
    """What a checkpoint of the fine-tuned model must hold on top of the base model: the method's
    own tensors (every tensor for methods without a prefix, such as full fine-tuning) plus anything
    else that trained (the task head)."""
    state = method_state_dict(model, methods.get_method(method))
    trained = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad and name not in state}
    return {**state, **trained}


def is_mergeable(method: str, model: nn.Module | None = None) -> bool:
    """Whether ``method`` can be merged into the base weights: into this applied ``model`` if given
    (for the peft bridge that depends on the peft type), else in general."""
    return methods.get_method(method).merges(model)


def method_label(settings: Mapping[str, Any]) -> str:
    """How results label a run from its raw ``method`` settings: the method's label (``peft:loha``
    for the peft bridge), else its name; an unregistered name stays as typed."""
    name = str(settings.get("name", "") or "")
    try:
        return methods.get_method(name).run_label(settings)
    except methods.MethodConfigError:
        return name


def method_rank(settings: Mapping[str, Any]) -> tuple[str, Any] | None:
    """Where a run's rank is set under ``method.`` and its value, from its raw ``method`` settings:
    ``("rank", 8)`` for LoRA, ``("options.r", 4)`` for the peft bridge's LoHa; None for a method or
    peft type without a rank (IA3, peft's OFT) and for an unregistered name."""
    try:
        return methods.get_method(str(settings.get("name", "") or "")).run_rank(settings)
    except methods.MethodConfigError:
        return None


def used_method_settings(model: nn.Module, method: str,
                         given: Mapping[str, Any]) -> tuple[dict[str, Any], Any, list[str]]:
    """The applied method's settings as it uses them, for the keys ``given`` (the row's
    ``method_settings``), its rank as used, and one ``"key=given (used: value)"`` line for each given value it
    changed (peft adjusts OFT's ``oft_block_size=5`` to 4 on a 32-wide layer). A method that uses what it
    is given returns ``given``, its rank, and no lines. A key given as null (the defaults) stays null."""
    spec = methods.get_method(method)
    if spec.used_settings is None:
        return dict(given), (spec.run_rank(given) or (None, None))[1], []
    used = spec.used_settings(model)
    settings, changed = _overlay(given, used, "method.")
    return settings, (spec.run_rank(used) or (None, None))[1], changed


def _overlay(given: Mapping[str, Any], used: Mapping[str, Any], path: str) -> tuple[dict[str, Any], list[str]]:
    out, changed = {}, []
    for key, value in given.items():
        now = used.get(key, value)
        if isinstance(value, Mapping) and isinstance(now, Mapping):
            out[key], more = _overlay(value, now, f"{path}{key}.")
            changed += more
        elif value is None or _same(value, now):
            out[key] = value
        else:
            out[key] = now
            changed.append(f"{path}{key}={value!r} (used: {now!r})")
    return out, changed


def _same(given: Any, used: Any) -> bool:
    """Equal, or the same names in another order (peft keeps target_modules as a set)."""
    if isinstance(given, (list, tuple)) and isinstance(used, (list, tuple)):
        return sorted(map(repr, given)) == sorted(map(repr, used))
    if isinstance(given, bool) or isinstance(used, bool):
        return given is used
    return given == used  # 16 and 16.0 are one alpha


def step_hook(method: str) -> Callable[[nn.Module, int, int], None] | None:
    """The method's work after every optimizer step (``on_step(model, step, total_steps)``), if any."""
    return methods.get_method(method).on_step


def merge_method(model: nn.Module, method: str) -> nn.Module:
    """Folds a mergeable method's weights into the base weights (no extra inference cost)."""
    spec = methods.get_method(method)
    if spec.merge is None:
        why = f": {spec.not_mergeable_because}" if spec.not_mergeable_because else ""
        raise methods.MethodConfigError(f"method {method!r} cannot be merged into the base weights{why}")
    return spec.merge(model)


def unmerge_method(model: nn.Module, method: str) -> nn.Module:
    """Undoes :func:`merge_method`."""
    spec = methods.get_method(method)
    if spec.unmerge is None:
        raise methods.MethodConfigError(f"method {method!r} cannot be merged into the base weights")
    return spec.unmerge(model)
