"""The wandb sink: one wandb run per benchmark run, live from its start to its record.

The run's start is handed to the background thread (:class:`peftbench.live.InBackground`) after
the config is validated, before the model loads, so its wall time, system metrics (CPU, GPU,
memory) and crash status are the benchmark run's own, and the run does not wait for it. Training values stream at
``train.log_every``, evaluations as they happen; at the end the record goes to the summary.
Any wandb error is a warning, after which this run logs nothing more.
"""

from __future__ import annotations

import json
import netrc
import os
import warnings
from pathlib import Path
from typing import Any

from peftbench.record import CSV_COLUMNS, RunRecord


class WandbLogger:
    """A :class:`peftbench.live.RunLogger` writing to a wandb run; the wandb step is the optimizer step."""

    def __init__(self, run: Any, run_id: str) -> None:
        self.run, self.run_id = run, run_id
        self.live = True  # False after a wandb error: nothing more is sent but the finish

    @classmethod
    def start(cls, record: RunRecord, config: dict[str, Any], results_dir: Path) -> WandbLogger:
        """Starts the wandb run of ``record`` (named and grouped as before: group = sweep id, job
        type = method) and declares its metrics: ``train/tokens_seen`` (logged with every training
        row) is an alternative x axis to the optimizer step for the ``train/*`` curves."""
        import wandb

        wandb_cfg = config.get("wandb") or {}
        wandb_dir = Path(wandb_cfg.get("dir") or results_dir)
        wandb_dir.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=wandb_cfg.get("project", "peftbench"),
            entity=wandb_cfg.get("entity"),
            group=record.sweep_id or None,
            job_type=record.method or None,
            name=f"{record.method}-{record.run_id}",
            id=record.run_id,
            tags=list(wandb_cfg.get("tags") or []),
            config=flat_config(config, record),
            mode=wandb_mode(str(wandb_cfg.get("mode", "auto"))),
            dir=str(wandb_dir),
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off"),
        )
        run.define_metric("train/tokens_seen", summary="max")
        run.define_metric("train/loss", summary="min")
        run.define_metric("eval/*", summary="max")
        return cls(run, record.run_id)

    def _call(self, what: str, call: Any) -> None:
        if not self.live:
            return
        try:
            call()
        except Exception as err:  # never stop a run for its dashboard
            warnings.warn(f"peftbench: wandb failed ({what}) for run {self.run_id}; the run goes on without "
                          f"wandb: {type(err).__name__}: {err}", stacklevel=3)
            self.live = False

    def log_train(self, step: int, values: dict[str, float]) -> None:
        self._call("log", lambda: self.run.log({k: v for k, v in values.items() if v is not None}, step=step))

    def log_eval(self, step: int, values: dict[str, float]) -> None:
        self._call("log", lambda: self.run.log({f"eval/{k}": v for k, v in values.items()}, step=step))

    def finish(self, record: RunRecord) -> None:
        """The record's columns as the summary; the run ends failed unless the record succeeded
        (both are tried even after an earlier wandb error, so the run is not left running)."""
        if self.run is None:
            return
        self.live = True  # one more try after an earlier error: the record and the finish matter most
        self._call("summary", lambda: self.run.summary.update(summary_values(record)))
        self.live = True
        self._call("finish", lambda: self.run.finish(exit_code=0 if record.status == "success" else 1))
        self.run, self.live = None, False


def summary_values(record: RunRecord) -> dict[str, Any]:
    """The record's CSV columns with their own types (numbers stay numbers, as wandb's panels need),
    empty ones and the config (already the run's config) left out."""
    values = {name: getattr(record, name) for name in CSV_COLUMNS if name != "config_json"}
    return {name: value for name, value in values.items() if value is not None and value != ""}


def wandb_mode(requested: str) -> str:
    """``auto`` means online when this machine is logged in to wandb, else offline (no account needed)."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        hosts = netrc.netrc().hosts
    except (OSError, netrc.NetrcParseError):
        return "offline"
    return "online" if any("wandb" in host for host in hosts) else "offline"


def flat_config(config: dict[str, Any], record: RunRecord) -> dict[str, Any]:
    """wandb's config: the comparison keys on top (typed), then every setting as ``node.key``."""
    flat: dict[str, Any] = {
        "method": record.method, "model": record.model, "task": record.task, "seed": record.seed,
        "rank": record.rank, "lr": record.lr, "sweep_id": record.sweep_id, "run_key": record.run_key,
        "setting_key": record.setting_key, "budget_unit": record.budget_unit, "budget": record.budget,
        "warmup_ratio": record.warmup_ratio, "schedule": record.schedule,
    }
    for node in ("method", "model", "task", "train"):
        for key, value in (config.get(node) or {}).items():
            flat[f"{node}.{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else value
    for key in ("device", "results_dir"):
        flat[key] = config.get(key)
    return flat


def log_to_wandb(record: RunRecord, config: dict[str, Any], wandb_cfg: dict[str, Any], results_dir: Path) -> None:
    """A wandb run made after the fact for a finished record: flat config, the loss curve, the record
    as summary (the runner logs live instead, through :mod:`peftbench.live`)."""
    if wandb_mode(wandb_cfg.get("mode", "auto")) == "disabled":
        return
    logger = WandbLogger.start(record, {**config, "wandb": wandb_cfg}, results_dir)
    for step, loss in record.loss_curve:
        logger.log_train(step, {"train/loss": loss})
    logger.finish(record)
