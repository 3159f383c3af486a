"""What makes two runs one run: a run's identity (``run_key``) and the resume check that reads it.

A run's key is a hash of its resolved config, with the method's settings written as the method's
config class writes them (:func:`canonical_config`) and the keys that change nothing it computes left
out (:data:`NOT_IN_RUN_KEY`). ``runs.csv`` rows with the same key are the same run: a sweep that is run
again skips them (:func:`already_done`) unless ``force=true``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench import distributed, methods

# Keys that do not change what a run computes, left out of its identity (run_key). The top-level
# `rank` is there too: methods with a rank carry its resolved value in their own node, and for the
# others (full fine-tuning) it changes nothing.
NOT_IN_RUN_KEY = ("results_dir", "wandb", "verbose", "force", "rank", "hydra", "forgetting", "spectrum")


def already_done(cfg: DictConfig) -> dict[str, str] | None:
    """The latest recorded successful row with this config's run_key (the one the report counts),
    unless ``force=true``."""
    if cfg.get("force"):
        return None
    key = run_key(canonical_config(OmegaConf.to_container(cfg, resolve=True)), distributed.world_from_env()[0])
    path = Path(str(cfg.results_dir)) / "runs.csv"
    if not path.exists():
        return None
    latest = None
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("run_key") == key and row.get("status") == "success":
                latest = row
    return latest


def run_key(config: dict[str, Any], world_size: int = 1) -> str:
    """A stable identity of what a run computes: the resolved config, seed included, minus paths.

    A run on several processes adds its world size and ``train.strategy``; on one process the
    strategy changes nothing and is left out, so one-process keys are those of the runs recorded
    before distributed runs existed (resume still finds them).
    """
    kept = {k: v for k, v in config.items() if k not in NOT_IN_RUN_KEY}
    if isinstance(kept.get("train"), dict):
        kept["train"] = {k: v for k, v in kept["train"].items() if k != "strategy"}
    if world_size > 1:
        kept["distributed"] = {"world_size": world_size, "strategy": (config.get("train") or {}).get("strategy", "ddp")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def canonical_config(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved ``config`` with the method's settings as its config class writes them when it validates
    them (the peft bridge's ``method.peft_type=LOHA`` is ``loha``), so spellings of one run share one
    ``run_key``, one row and one resume. Only settings the class changes are rewritten; a method node
    that does not validate is left as given (:func:`validate` refuses it by name, and the run is
    recorded as failed)."""
    method = config.get("method")
    if not isinstance(method, dict):
        return config
    try:
        spec = methods.get_method(str(method.get("name", "")))
        names = [f.name for f in dataclasses.fields(spec.config_cls) if f.name in method]
        checked = spec.config_cls(**{k: method[k] for k in names})
    except (TypeError, ValueError, ImportError):  # MethodConfigError is a ValueError
        return config
    written = {k: getattr(checked, k) for k in names}
    changed = {k: v for k, v in written.items() if _as_json(v) != _as_json(method[k])}
    return {**config, "method": {**method, **changed}} if changed else config


def _as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
