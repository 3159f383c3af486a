"""Hydra callbacks: give a sweep one id across processes, and summarise it when it ends."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SWEEP_ID_ENV = "PEFTBENCH_SWEEP_ID"


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

        sweep_id = os.environ.get(SWEEP_ID_ENV, "")
        results_dir = Path(str(config.results_dir))
        print(f"\nSweep {sweep_id} ({results_dir / 'runs.csv'}):")
        print(format_sweep_table(results_dir, sweep_id))
        runs = load_runs(results_dir)
        mine = runs[runs["sweep_id"] == sweep_id] if len(runs) else runs
        bad = mine[mine["status"] != "success"] if len(mine) else mine
        if len(bad):
            names = ", ".join(f"{r.method} (run {r.run_id})" for r in bad.itertuples())
            print(f"peftbench: {len(bad)} of {len(mine)} runs did not succeed: {names}", file=sys.stderr)
            sys.exit(1)
