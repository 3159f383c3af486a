"""Each method's defaults, read from its shipped config (``conf/method/<method>.yaml``), so that a
setting's label can show only what differs from them."""

from __future__ import annotations

import functools
import json
import math
from typing import Any

from peftbench.report.groups import setting_label
from peftbench.resources import config_group, shipped_config

DEFAULTS_LABEL = "defaults"
"""The short label of a setting that is exactly its method's defaults."""


def shipped_method_config(method: str) -> dict[str, Any]:
    """``conf/method/<method>.yaml`` as shipped, interpolations unresolved (``rank: ${rank}``);
    empty for a method without a config file."""
    return (shipped_config(f"method/{method}.yaml") if method else None) or {}


@functools.cache
def method_defaults(method: str) -> dict[str, Any]:
    """The keys of ``method=<method>`` as shipped, interpolations of top-level keys resolved
    (LoRA's ``rank: ${rank}`` is the default rank); empty for a method without a config file. A
    bridged method's label (``peft:loha``) has the bridge's defaults with its own peft type, which
    the label already names."""
    if method.startswith("peft:"):
        return {**method_defaults("peft"), "peft_type": method.partition(":")[2]}
    shipped = shipped_method_config(method)
    if not shipped:
        return {}
    top = shipped_config("config.yaml") or {}
    out = {}
    for key, value in shipped.items():
        if key == "defaults":
            continue
        if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
            value = top.get(value[2:-1])
        out[key] = value
    return out


@functools.cache
def _bridge_recipes() -> tuple[tuple[str, str, str], ...]:
    """``(name, peft type, options as JSON)`` of each shipped recipe of the peft bridge (``loha``...)."""
    recipes = []
    for name in config_group("method"):
        shipped = shipped_method_config(name)
        if name != "peft" and isinstance(shipped.get("peft_type"), str):
            recipes.append((name, shipped["peft_type"].lower(), json.dumps(shipped.get("options") or {}, sort_keys=True)))
    return tuple(recipes)


@functools.lru_cache(maxsize=4096)
def bridge_recipe(peft_type: str, method_settings: str | None) -> str | None:
    """The shipped recipe (``conf/method/loha.yaml``: ``method=loha``) whose peft type and options are
    the ones a bridged run recorded in ``method_settings``, so that advice names the setting that ran;
    None when no recipe has them (the run was ``method=peft method.peft_type=...`` with other options)."""
    try:
        settings = json.loads(method_settings or "{}")
    except ValueError:
        return None
    if not isinstance(settings, dict):
        return None
    options = json.dumps(settings.get("options") or {}, sort_keys=True)
    return next((name for name, kind, shipped in _bridge_recipes() if kind == peft_type.lower() and shipped == options),
                None)


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, (int, float)) and isinstance(default, (int, float)) and not isinstance(value, bool):
        return math.isclose(float(value), float(default), rel_tol=1e-9)
    return value == default


def short_setting_label(method: str, method_settings: str, lr: float | None) -> str:
    """Like :func:`~peftbench.report.groups.setting_label`, but only the settings (and learning rate)
    that differ from the method's defaults: ``rank=4``, or ``defaults`` when none does."""
    defaults = method_defaults(method)
    try:
        settings = json.loads(method_settings or "{}")
    except ValueError:
        return setting_label(method_settings, lr)
    if not isinstance(settings, dict):
        return setting_label(method_settings, lr)
    if isinstance(settings.get("peft_type"), str):  # peft types are case-insensitive (LOHA is loha)
        settings["peft_type"] = settings["peft_type"].lower()
    # A bridged run with a shipped recipe's options (``method=loha``) is labelled by that recipe and
    # what differs from it: ``method=loha``, ``method=loha lr=0.001``.
    recipe = bridge_recipe(method.partition(":")[2], method_settings) if method.startswith("peft:") else None
    if recipe:
        defaults = method_defaults(recipe)
    differing = {k: v for k, v in settings.items() if not (k in defaults and _same(v, defaults[k]))}
    if lr is not None and not (isinstance(lr, float) and math.isnan(lr)) and "lr" in defaults:
        lr = None if _same(float(lr), defaults["lr"]) else lr
    label = setting_label(json.dumps(differing), lr)
    if recipe:
        return f"method={recipe}" + ("" if label == "-" else f" {label}")
    return DEFAULTS_LABEL if label == "-" else label


def display_setting(rec: dict[str, Any]) -> str:
    """A comparison row's setting as the terminal table and the answers show it: what differs from the
    method's defaults (:func:`short_setting_label`), plus the tag that tells lookalike settings apart."""
    label = short_setting_label(str(rec["method"]), str(rec.get("method_settings") or ""), rec.get("lr"))
    full = str(rec.get("setting") or "")
    if "(config " in full:
        label += " " + full[full.index("(config "):]
    return label
