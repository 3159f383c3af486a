"""Where the files peftbench ships live, in a source checkout and in an installed wheel alike.

The repository keeps ``conf/`` and ``methods/`` at its top level; they install as the packages
``peftbench.conf`` and ``peftbench.methods``. Every module that needs a shipped file asks here,
never a path relative to its own source file.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

CONFIG_PACKAGE = "peftbench.conf"
CONFIG_SEARCH_PATH = f"pkg://{CONFIG_PACKAGE}"  # how Hydra finds the shipped configs


@functools.cache
def conf_dir() -> Path:
    """The folder of the shipped Hydra configs (``config.yaml`` and the groups ``method/``, ...)."""
    return Path(str(resources.files(CONFIG_PACKAGE)))


def config_group(group: str) -> list[str]:
    """The option names of a config group (``method``, ``model``, ``hydra/launcher``...), sorted."""
    folder = conf_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def config_groups() -> list[str]:
    """The top-level config groups (``budget``, ``method``, ``model``, ``task``, ``hydra``)."""
    return sorted(p.name for p in conf_dir().iterdir() if p.is_dir() and not p.name.startswith("__"))


@functools.cache
def shipped_config(relative: str) -> dict | None:
    """A shipped config file (``config.yaml``, ``method/lora.yaml``) as written, interpolations
    unresolved (``rank: ${rank}``); None where no such file ships. Cached: callers must not change it."""
    import yaml

    path = conf_dir() / relative
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
