"""Metrics shipped with peftbench as local ``evaluate`` modules, so the tasks score offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def shipped_metrics() -> list[str]:
    return sorted(p.name for p in HERE.iterdir() if (p / f"{p.name}.py").is_file())


def load_metric(name: str) -> Any:
    """``evaluate.load`` of a shipped metric by its folder (offline), or of any other name (hub)."""
    import evaluate

    local = HERE / name
    return evaluate.load(str(local) if (local / f"{name}.py").is_file() else name)
