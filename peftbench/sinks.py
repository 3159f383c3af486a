"""Where a finished run's record goes: the CSV first (it must never be lost), then JSON, then wandb."""

from __future__ import annotations

import json
import logging
import netrc
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench.record import RunRecord, append_csv_row, write_json

if TYPE_CHECKING:
    from peftbench.live import RunLogger

log = logging.getLogger("peftbench")


def save_record(record: RunRecord, results_dir: Path, config: dict[str, Any], wandb_cfg: dict[str, Any],
                logger: RunLogger | None = None) -> None:
    """Writes the record to ``runs.csv``, ``runs/<run_id>.json`` and wandb, in that order.

    ``logger`` is the run's live logger (:func:`peftbench.live.start_logger`): the record goes to its
    wandb run's summary and the run is finished. Without one, a wandb run is made after the fact.
    A failure of the JSON file or of wandb is reported as a warning and never loses the CSV row.
    """
    append_csv_row(results_dir / "runs.csv", record.to_row())

    def to_wandb() -> None:
        if logger is not None:
            logger.finish(record)
        else:
            log_to_wandb(record, config, wandb_cfg, results_dir)

    for sink, call in (("json", lambda: write_json(results_dir / "runs" / f"{record.run_id}.json", record)),
                       ("wandb", to_wandb)):
        try:
            call()
        except Exception as err:  # a sink's failure must not lose the run
            warnings.warn(f"peftbench: could not write run {record.run_id} to {sink}: {err}", stacklevel=2)


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
    from peftbench.wandb_live import WandbLogger

    logger = WandbLogger.start(record, {**config, "wandb": wandb_cfg}, results_dir)
    for step, loss in record.loss_curve:
        logger.log_train(step, {"train/loss": loss})
    logger.finish(record)
