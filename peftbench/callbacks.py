"""Hydra callbacks: give a sweep one id across processes, and summarise it when it ends."""

from __future__ import annotations

import json
import os
import shlex
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SWEEP_ID_ENV = "PEFTBENCH_SWEEP_ID"
SKIPPED_NOTE = "peftbench-skipped.json"  # left in a job's folder when its run was already done


class SweepSummary(Callback):
    """Prints the sweep's comparison table at the end of a multirun and exits nonzero on failures.

    At the start it sets ``PEFTBENCH_SWEEP_ID`` in the environment, which jobs in other processes
    (joblib workers, submitit jobs) inherit, so every row of the sweep carries the same ``sweep_id``.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_id = f"{Path(str(config.hydra.sweep.dir)).name}-{uuid.uuid4().hex[:6]}"
        os.environ[SWEEP_ID_ENV] = sweep_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from peftbench.report import format_sweep_table, load_runs
        from peftbench.sinks import wait_for_sinks

        wait_for_sinks()  # the runs' wandb records first: the sweep's table run comes after them

        sweep_id = os.environ.get(SWEEP_ID_ENV, "")
        results_dir = Path(str(config.results_dir))
        skipped = skipped_runs(Path(str(config.hydra.sweep.dir)))
        runs = load_runs(results_dir) if (results_dir / "runs.csv").exists() else None
        mine = runs[runs["sweep_id"] == sweep_id] if runs is not None and len(runs) else runs
        if skipped:
            total = len(skipped) + (len(mine) if mine is not None else 0)
            print(skipped_message(skipped, total, sweep_id))
        if mine is None or not len(mine):
            if not skipped:
                print(format_sweep_table(results_dir, sweep_id))
            return
        print(f"\nSweep {sweep_id} ({results_dir / 'runs.csv'}):")
        print(format_sweep_table(results_dir, sweep_id))
        if len(mine):
            log_sweep_table(mine, sweep_id, config, results_dir)
        bad = mine[mine["status"] != "success"] if len(mine) else mine
        search = is_search(config)
        if search and len(mine) > len(bad):
            print_best_of_search(results_dir, sweep_id, Path(str(config.hydra.sweep.dir)))
        if len(bad):
            names = ", ".join(f"{r.method} (run {r.run_id})" for r in bad.itertuples())
            print(f"peftbench: {len(bad)} of {len(mine)} runs did not succeed: {names}", file=sys.stderr)
            if not search or len(bad) == len(mine):  # a search expects some trials to diverge
                sys.exit(1)


def skipped_runs(sweep_dir: Path) -> list[dict[str, str]]:
    """The notes of this sweep's jobs that were skipped as already done, in job order."""
    notes = sorted(sweep_dir.glob(f"*/{SKIPPED_NOTE}"), key=lambda p: (len(p.parent.name), p.parent.name))
    return [json.loads(p.read_text(encoding="utf-8")) for p in notes]


def is_search(config: DictConfig) -> bool:
    """Whether this multirun is a hyperparameter search (the Optuna sweeper, ``hydra/sweeper=lr_search``)."""
    return "optuna" in str(config.hydra.sweeper.get("_target_", "")).lower()


def print_best_of_search(results_dir: Path, sweep_id: str, sweep_dir: Path) -> None:
    """Prints the search's best trial of each method and the command that reruns it over seeds."""
    from peftbench.best import best_settings, describe, rerun_command

    try:
        found = best_settings(results_dir, [sweep_id], sweep_dirs=[sweep_dir])
    except (OSError, ValueError) as err:
        print(f"peftbench: could not pick the search's best trial: {err}", file=sys.stderr)
        return
    print(f"\nBest of search {sweep_id}; rerun over seeds on the reported split with the command below, or "
          f"`python -m peftbench.best {shlex.quote(str(results_dir))} --search {sweep_id} --run`:")
    for best in found:
        print(describe(best))
        print(shlex.join(rerun_command(best)))


def log_sweep_table(runs: Any, sweep_id: str, config: DictConfig, results_dir: Path) -> None:
    """The sweep's comparison table as a wandb run of its group (unless wandb is disabled)."""
    from peftbench.sinks import wandb_mode

    wandb_cfg = config.get("wandb") or {}
    mode = wandb_mode(str(wandb_cfg.get("mode", "auto")))
    if mode == "disabled":
        return
    try:
        from peftbench.report.wandb_table import log_sweep_to_wandb

        log_sweep_to_wandb(runs, sweep_id, project=str(wandb_cfg.get("project", "peftbench")), mode=mode,
                           dir=str(wandb_cfg.get("dir") or results_dir))
    except Exception as err:  # the CSV already holds everything; wandb is a convenience here
        warnings.warn(f"peftbench: could not log the sweep table to wandb: {err}", stacklevel=2)


def skipped_message(skipped: list[dict[str, str]], total: int, sweep_id: str) -> str:
    """The end-of-sweep line about the jobs that were not run because their run is recorded: done in
    an earlier sweep, or by another job of this one (a job that differs from it only in a key its run
    does not read, such as the top-level ``rank`` for a method without a rank)."""
    here = [n["run_id"] for n in skipped if n.get("sweep_id") == sweep_id]
    before = [n["run_id"] for n in skipped if n.get("sweep_id") != sweep_id]
    parts = []
    if before:
        parts.append(f"{len(before)} of {total} runs already done in an earlier sweep: {', '.join(dict.fromkeys(before))}")
    if here:
        parts.append(f"{len(here)} of {total} jobs are the same run as another job of this sweep (they differ "
                     f"only in keys this run does not read, such as rank for a method without one), run once: "
                     f"{', '.join(dict.fromkeys(here))}")
    return "\npeftbench: " + "\npeftbench: ".join(parts)
