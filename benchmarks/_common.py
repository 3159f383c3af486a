"""Shared set-up for the benchmark scripts: compose a run config as the CLI would."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def compose_run(overrides: list[str]):
    """A validated run config from ``conf/`` with ``overrides``, as ``python -m peftbench`` builds it."""
    from hydra import compose, initialize_config_dir

    from peftbench.config import register_configs, validate

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return cfg, validate(cfg)
