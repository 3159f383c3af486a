"""The command line's overrides, checked before Hydra starts: unknown keys and values of the wrong type.

Each check returns a one-paragraph message naming the key and what it takes (the caller prints it and
exits with status 2), or None. Hydra would refuse most of these too, but with a traceback-like block
(a wrongly typed value) or by suggesting ``+key=value``, which adds the misspelt key beside the right
one and trains with the right one unchanged.
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from peftbench import methods
from peftbench.config import (
    ForgettingConfig,
    ModelConfig,
    RunConfig,
    SpectrumConfig,
    TaskConfig,
    TrainConfig,
    WandbConfig,
    method_schema,
)
from peftbench.resources import config_groups, shipped_config

# Top-level keys whose own keys we check before Hydra starts, for a message that lists the choices.
NESTED = {"train": TrainConfig, "wandb": WandbConfig, "forgetting": ForgettingConfig, "spectrum": SpectrumConfig}
# Config groups whose keys depend on the option chosen (method=houlsby has no rank): checked against
# the chosen option's schema, read from the shipped YAML (a user's --config-dir option is left to Hydra).
GROUP_NODES = ("method", "model", "task")
# Arguments that bring a user's own config groups: only with one of them can `+group=option` name a
# group we do not ship (`--config-dir myconf +experiment=mine`).
USER_CONFIG_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "hydra.searchpath", "+hydra.searchpath")


def global_groups() -> list[str]:
    """Config groups that set keys of other nodes (``budget=tokens`` sets ``train.*``) and are no key themselves."""
    return [g for g in config_groups() if g not in {f.name for f in fields(RunConfig)} | {"hydra"}]


def check_override_keys(args: list[str]) -> str | None:
    """An error message for a ``key=value`` argument whose key does not exist, else None.

    ``+key=value`` (Hydra's "add a key") is checked too where the node is one of ours: a typo such as
    ``+method.alpah=32`` would otherwise be added beside ``alpha`` and silently ignored. A new
    top-level ``+name=...`` is refused here too unless the arguments bring the user's own config
    groups (``--config-dir``), where it may name one of them.
    """
    top_keys = [f.name for f in fields(RunConfig)] + global_groups()
    own_groups = any(a.startswith(USER_CONFIG_FLAGS) for a in args)
    for arg in args:
        key = override_key(arg)
        if key is None:
            continue
        parts = key.split(".")
        if arg.startswith("+") and parts[0] not in top_keys and own_groups:
            continue  # `+group=option` may name a group of the user's own --config-dir
        if parts[0] not in top_keys:
            return _unknown(key, arg, top_keys, "top-level keys")
        if len(parts) != 2:
            continue
        if parts[0] in NESTED:
            allowed = [f.name for f in fields(NESTED[parts[0]])]
            if parts[1] not in allowed:
                return _unknown(key, arg, [f"{parts[0]}.{a}" for a in allowed], f"keys of {parts[0]}")
        if parts[0] in GROUP_NODES:
            for option in chosen_options(args, parts[0]):
                allowed = option_keys(parts[0], option)
                if allowed is not None and parts[1] not in allowed:
                    return _unknown(key, arg, [f"{parts[0]}.{a}" for a in allowed],
                                    f"keys of {parts[0]}={option}")
    return None


def override_key(arg: str) -> str | None:
    """The key a ``key=value`` (or ``+key=value``) argument sets; None for a flag, a deletion
    (``~key``), a group path (``hydra/launcher=...``, ``group@pkg=...``) or a ``hydra.`` key."""
    if arg.startswith(("-", "~")) or "=" not in arg:
        return None
    key = arg.split("=", 1)[0].lstrip("+")
    return None if "/" in key or "@" in key or key.split(".")[0] == "hydra" else key


def _unknown(key: str, arg: str, allowed: list[str], what: str) -> str:
    if "." in allowed[0]:  # a node's keys: the closest of its own names
        node = allowed[0].rsplit(".", 1)[0]
        close = [f"{node}.{c}" for c in difflib.get_close_matches(key.rsplit(".", 1)[-1],
                                                                [a.rsplit(".", 1)[-1] for a in allowed], n=1)]
    else:  # a top-level key, or a node's name mistyped (trian.steps)
        close = difflib.get_close_matches(key, allowed, n=1) or [
            f"{c}.{key.split('.', 1)[1]}" for c in difflib.get_close_matches(key.split(".")[0], allowed, n=1)
            if "." in key]
    hint = f" Did you mean {close[0]}?" if close else ""
    where = ("" if "." in allowed[0] else " Settings of the method, model and task go under their node, e.g. "
             "method.alpha=32, model.name=<hub id>, task.eval_split=test.")
    return f"peftbench: unknown config key {key!r} (in the argument {arg!r}).{hint} The {what} are: " \
           f"{', '.join(allowed)}.{where}"


def chosen_options(args: list[str], group: str) -> list[str]:
    """The options of ``group`` the arguments choose (``method=lora,ia3``: both), else the default."""
    chosen = [a.split("=", 1)[1] for a in args if a.lstrip("+").startswith(f"{group}=")]
    if not chosen:
        defaults = shipped_config("config.yaml").get("defaults", [])
        chosen = [str(d[group]) for d in defaults if isinstance(d, dict) and group in d][:1]
    value = chosen[-1] if chosen else ""
    if not re.fullmatch(r"[\w.-]+(,[\w.-]+)*", value):
        return []  # a sweep function (choice(...), glob(...)): Hydra checks each job
    return value.split(",")


def option_chain(group: str, option: str, depth: int = 0) -> list[dict] | None:
    """The YAML of an option of a group and of the options of the group its ``defaults`` build on,
    nearest first; None for an option that is not shipped (a user's own is left to Hydra)."""
    data = shipped_config(f"{group}/{option}.yaml")
    if data is None or depth > 5:
        return None
    chain = [data]
    for entry in data.get("defaults", []):
        if isinstance(entry, str) and entry != "_self_":
            inherited = option_chain(group, entry, depth + 1)
            if inherited is None:
                return None
            chain += inherited
    return chain


def option_schema(group: str, option: str) -> str | None:
    """The schema an option of a group builds on (``/schema/<group>@_here_``), through its
    ``defaults`` chain; None for an option that is not shipped or has no schema."""
    for data in option_chain(group, option) or []:
        for entry in data.get("defaults", []):
            if isinstance(entry, dict) and f"/schema/{group}@_here_" in entry:
                return str(entry[f"/schema/{group}@_here_"])
    return None


def option_keys(group: str, option: str) -> list[str] | None:
    """The keys an option of a group holds: its chain's YAML keys and its schema's; None for an
    option that is not shipped."""
    chain = option_chain(group, option)
    if chain is None:
        return None
    keys = [k for data in chain for k in data if k != "defaults"]
    if (schema := option_schema(group, option)) is not None:
        keys += list(ConfigStore.instance().load(f"schema/{group}/{schema}.yaml").node.keys())
    return list(dict.fromkeys(keys))


def typed_nodes(args: list[str], node: str) -> list[tuple[str, type]]:
    """``(label, dataclass)`` of each typed node a key under ``node`` lands in ("" for top-level keys);
    one per chosen option for ``method`` (``method=lora,houlsby``: both)."""
    if node == "":
        return [("", RunConfig)]
    if node in NESTED:
        return [(node, NESTED[node])]
    if node in ("model", "task"):
        return [(node, ModelConfig if node == "model" else TaskConfig)]
    if node != "method":
        return []
    found = []
    for option in chosen_options(args, "method"):
        schema = option_schema("method", option)
        if schema in methods.method_names():
            found.append((f"method={option}", method_schema(methods.get_method(schema))))
    return found


def describe_type(hint: Any) -> str:
    """What a field of this type takes, in a user's words."""
    args = typing.get_args(hint)
    optional = type(None) in args  # X | None
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    words = {int: "a whole number (for example 8)", float: "a number (for example 3e-4)",
             bool: "true or false", str: "a string"}.get(base)
    if words is None:
        origin = typing.get_origin(base)
        words = "a list in brackets ([a,b])" if origin in (list, tuple) else f"a value of type {base}"
    return words + (", or null" if optional else "")


def check_override_values(args: list[str]) -> str | None:
    """An error message for a ``key=value`` whose value does not fit the key's type (``train.lr=abc``,
    ``train.steps=1.5``, ``train.compile=maybe``), every value of a sweep (``rank=4,x``) included;
    else None. Range and interval sweeps, and keys below a node's own (``method.options.r``), are
    left to Hydra and to the config's own checks."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep

    parser = None
    for arg in args:
        key = override_key(arg)
        parts = key.split(".") if key is not None else []
        if not parts or len(parts) > 2:
            continue
        if len(parts) == 1 and parts[0] in config_groups():
            continue  # a group's option (model=nosuch): Hydra lists the options
        node, name = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
        hinted = [(label, cls, typing.get_type_hints(cls)) for label, cls in typed_nodes(args, node)]
        nodes = [(label, cls, hints[name]) for label, cls, hints in hinted if name in hints]
        if not nodes:
            continue
        parser = parser or OverridesParser.create()
        try:
            override = parser.parse_override(arg)
        except Exception:  # noqa: BLE001  (a syntax error: Hydra's parser says where)
            continue
        value = override.value()
        if override.is_sweep_override():
            if not isinstance(value, ChoiceSweep):
                continue
            values = value.list
        else:
            values = [value]
        for label, cls, hint in nodes:
            node_cfg = OmegaConf.structured(cls)
            for one in values:
                try:
                    node_cfg[name] = one
                except ValidationError:
                    where = f" (under {label})" if label.startswith("method=") else ""
                    return (f"peftbench: {key}={one} is refused: {key}{where} takes {describe_type(hint)}, "
                            f"and {one!r} is not one (in the argument {arg!r}). Nothing was run.")
    return None
