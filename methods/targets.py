"""Per-family default targets, read from ``targets.yaml`` beside this file."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml
from torch import nn

from .base import MethodConfigError


@functools.cache
def _table() -> dict[str, dict[str, list[str]]]:
    return yaml.safe_load((Path(__file__).with_name("targets.yaml")).read_text())


def model_family(model: nn.Module) -> str | None:
    """The transformers ``model_type`` of ``model`` (``bert``, ``gpt2``...), or None for plain modules."""
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None)


def default_targets(model: nn.Module, method: str):
    """The module names ``method`` targets by default on ``model``'s family.

    Raises:
        MethodConfigError: if the family or the method has no defaults, asking for explicit targets.
    """
    family = model_family(model)
    table = _table()
    if family not in table or method not in table[family]:
        known = sorted(f for f, entry in table.items() if method in entry)
        raise MethodConfigError(
            f"{method}: no default target modules for model family {family!r} "
            f"({type(model).__name__}); set target_modules explicitly. Families with defaults: "
            f"{', '.join(known)}."
        )
    return table[family][method]


def head_names(model: nn.Module) -> list[str]:
    """Names of the task heads for ``model``'s family (empty for unknown families)."""
    return list(_table().get(model_family(model) or "", {}).get("heads", []))
