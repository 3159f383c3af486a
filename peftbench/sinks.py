"""Where a finished run's record goes: the CSV first (it must never be lost), then JSON, then wandb."""

from __future__ import annotations

import json
import logging
import netrc
import os
import warnings
from pathlib import Path
from typing import Any

from peftbench.record import RunRecord, append_csv_row, write_json

log = logging.getLogger("peftbench")


def save_record(record: RunRecord, results_dir: Path, config: dict[str, Any], wandb_cfg: dict[str, Any]) -> None:
    """Writes the record to ``runs.csv``, ``runs/<run_id>.json`` and wandb, in that order.

    A failure of the JSON file or of wandb is reported as a warning and never loses the CSV row.
    """
    try:
        append_csv_row(results_dir / "runs.csv", record.to_row())
    except OSError:  # a filesystem without locks: keep the JSON file at least, then say so
        write_json(results_dir / "runs" / f"{record.run_id}.json", record)
        raise
    for sink, call in (("json", lambda: write_json(results_dir / "runs" / f"{record.run_id}.json", record)),
                       ("wandb", lambda: log_to_wandb(record, config, wandb_cfg, results_dir))):
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
    """One wandb run per benchmark run: flat config, the loss curve, the record as summary."""
    mode = wandb_mode(wandb_cfg.get("mode", "auto"))
    if mode == "disabled":
        return
    import wandb

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
        mode=mode,
        dir=str(wandb_dir),
        reinit="finish_previous",
        settings=wandb.Settings(silent=True, console="off"),
    )
    try:
        for step, loss in record.loss_curve:
            run.log({"train/loss": loss}, step=step)
        row = record.to_row()
        run.summary.update({k: v for k, v in row.items() if k != "config_json" and v != ""})
    finally:
        run.finish(exit_code=0 if record.status == "success" else 1)
