"""The ``peftbench`` console script: a sub-command (:mod:`peftbench.commands`), else a run or sweep."""

from __future__ import annotations

import sys

from peftbench.commands import run_subcommand


def main() -> None:
    """``peftbench report|best ...`` runs that command; anything else goes to the Hydra runner."""
    run_subcommand(sys.argv[1:])
    from peftbench.__main__ import main as run_benchmark  # Hydra and torch load only for a run

    run_benchmark()
