"""Per-process caches, so that the runs of a sweep in one process spend their time training.

Hydra's basic launcher runs a sweep's jobs one after another in one process. Two things each run
used to redo are kept here, keyed by everything that determines them:

- **base weights**: the checkpoint's tensors as loaded (on the CPU), with the model's config and
  tokenizer. Each run gets a fresh model built by ``from_pretrained(None, state_dict=<a clone of
  the cached tensors>)``: the same transformers code path as loading from the folder, so the new
  head (the keys missing from the checkpoint) is initialised from the run's seed with the same
  random draws, and nothing a run trains can reach the cache or a later run.
- **tokenised tasks**: the splits of a task after :func:`peftbench.tasks.load_task`, for the same
  tokenizer (the model's cache key), task config, ``train.max_seq_length``, ``train.eval_size``
  and ``eval_on``. ``datasets.Dataset`` objects are immutable (a run's ``with_format`` and
  ``select`` return new ones), so runs share them.

Memory: the cache lives in the process, so a run's ``peak_rss_bytes`` includes the cached base
weights and tokenised splits. The first run of a process holds them too (its clone is taken while
its own model is alive), so every run of the process pays the same one extra copy of the base
weights: the column stays comparable across the runs of a sweep, and is that copy above what a run
in a fresh process without the cache would show. :func:`cached_bytes` reports the size.
GPU memory is not affected: the cache is on the CPU. Set ``PEFTBENCH_PROCESS_CACHE=off`` to run
without it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from peftbench.config import ModelConfig, TaskConfig, TrainConfig
from peftbench.task_kinds import get_kind
from peftbench.tasks import TaskData

ENV = "PEFTBENCH_PROCESS_CACHE"
OFF_VALUES = ("0", "off", "false", "no")


def enabled() -> bool:
    """Whether the caches are on (``PEFTBENCH_PROCESS_CACHE`` unset or anything but off/0/false/no)."""
    return os.environ.get(ENV, "on").strip().lower() not in OFF_VALUES


@dataclass
class BaseWeights:
    """What a model load produced, minus what each run must make anew.

    Attributes:
        model_class: the concrete transformers class (``BertForSequenceClassification``).
        config: the model config, as the first load resolved it.
        tokenizer: the tokenizer (pad token set); each run gets a deep copy.
        state_dict: checkpoint tensors as loaded, on the CPU, without the keys the load
            initialised (missing or mismatched: the task head).
        load_kwargs: the ``from_pretrained`` keyword arguments besides the weights.
    """

    model_class: type
    config: Any
    tokenizer: Any
    state_dict: dict[str, torch.Tensor]
    load_kwargs: dict[str, Any]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in {id(t): t for t in self.state_dict.values()}.values())

    def fresh_model(self) -> tuple[nn.Module, Any]:
        """A new model from the cached tensors (cloned: training never writes into the cache)."""
        weights = {k: v.clone() for k, v in self.state_dict.items()}
        model = self.model_class.from_pretrained(None, config=copy.deepcopy(self.config), state_dict=weights,
                                                 **self.load_kwargs)
        return model, copy.deepcopy(self.tokenizer)


_models: dict[str, BaseWeights] = {}
_tasks: dict[str, TaskData] = {}
_base_states: dict[str, Any] = {}


def clear() -> None:
    """Empties the caches (tests; or to give the memory back)."""
    _models.clear()
    _tasks.clear()
    _base_states.clear()


def base_states(key: str | None, compute: Callable[[], Any]) -> Any:
    """The pretrained model's states on the forgetting probe's reference text
    (:meth:`peftbench.forgetting.Probe.take_base`), computed once per process for ``key`` (see
    :func:`probe_key`) and shared by the runs after: they are read, never written. ``key=None`` (a
    model the weights cache does not hold) computes them anew."""
    if not enabled() or key is None:
        return compute()
    if key not in _base_states:
        _base_states[key] = compute()
    return _base_states[key]


def base_states_memo(run: Any, device: torch.device) -> Callable[[Callable[[], Any]], Any]:
    """The ``memo`` a run's forgetting probe takes (:meth:`~peftbench.forgetting.Probe.take_base`):
    :func:`base_states` keyed when it is called, after the load, once the weights cache holds the
    model. ``run``: the run's validated config (``model``, ``task``, ``forgetting``, ``seed``)."""
    return lambda compute: base_states(probe_key(run.model, run.task, run.forgetting, device, run.seed), compute)


def probe_key(cfg: ModelConfig, task: TaskConfig, forgetting: Any, device: torch.device, seed: int) -> str | None:
    """What decides the base model's reference states: its weights (:func:`model_key`, only when they
    come from the weights cache), the probe's settings and the device. A causal LM's reference loss
    reads its LM head, which a load may initialise from the seed: for those the seed is in the key."""
    key = model_key(cfg, task)
    if key not in _models:
        return None
    return _key(key, dataclasses.asdict(forgetting), str(device), seed if task.kind == "causal_lm" else None)


def cached_bytes() -> int:
    """Bytes of base weights held by the cache (the tokenised splits are small next to them)."""
    return sum(w.nbytes() for w in _models.values())


def _key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def model_key(cfg: ModelConfig, task: TaskConfig) -> str:
    """Everything that decides the loaded weights, config and tokenizer: the model config, the
    task's kind with what it passes to the config and the load (the head), and a local folder's
    files' sizes and modification times."""
    kind = get_kind(task.kind)
    return _key(dataclasses.asdict(cfg), task.kind, kind.config_overrides(task), kind.load_options(),
                _folder_stamp(cfg.name))


def _folder_stamp(name: str) -> Any:
    """Sizes and modification times of a local model folder's files (a changed folder reloads)."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return None
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())


def load_model(cfg: ModelConfig, task: TaskConfig,
               loader: Callable[[ModelConfig, TaskConfig], tuple[nn.Module, Any, dict[str, Any]]]
               ) -> tuple[nn.Module, Any]:
    """A fresh model and tokenizer, loaded by ``loader`` on the first call for this key and built
    from the cached tensors after.

    Args:
        cfg: the model config.
        task: the task config (its kind and labels decide the head).
        loader: :func:`peftbench.models.load_model_with_info`: returns the model, the tokenizer and
            ``{"new_keys": [...], "load_kwargs": {...}}``.
    """
    if not enabled():
        return loader(cfg, task)[:2]
    key = model_key(cfg, task)
    if key in _models:
        return _models[key].fresh_model()
    model, tokenizer, info = loader(cfg, task)
    if info.get("cacheable", True):
        new_keys = set(info["new_keys"])
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if k not in new_keys}
        _models[key] = BaseWeights(type(model), copy.deepcopy(model.config), copy.deepcopy(tokenizer), state,
                                   info["load_kwargs"])
    return model, tokenizer


def task_key(task: TaskConfig, model: str, train: TrainConfig, eval_on: str) -> str:
    """Everything that decides a tokenised task: its config, the tokenizer (the model's key), the
    truncation length, the evaluation cap, the scored split, and local data files' stamps."""
    files = {split: _file_stamp(path) for split, path in (task.data_files or {}).items() if path}
    return _key(dataclasses.asdict(task), model, train.max_seq_length, train.eval_size, eval_on, files)


def _file_stamp(path: str) -> Any:
    file = Path(path).expanduser()
    return (str(file.resolve()), file.stat().st_size, file.stat().st_mtime_ns) if file.is_file() else str(file)


def load_task(task: TaskConfig, model: ModelConfig, tokenizer: Any, train: TrainConfig, eval_on: str,
              loader: Callable[..., TaskData]) -> TaskData:
    """The tokenised task from the cache, else from ``loader`` (:func:`peftbench.tasks.load_task`)."""
    if not enabled():
        return loader(task, tokenizer, train, eval_on=eval_on)
    key = task_key(task, model_key(model, task), train, eval_on)
    if key not in _tasks:
        _tasks[key] = loader(task, tokenizer, train, eval_on=eval_on)
    cached = _tasks[key]
    return dataclasses.replace(cached, extra_metrics=list(cached.extra_metrics), extra_evals=dict(cached.extra_evals))
