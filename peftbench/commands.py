"""The ``peftbench`` command: the Hydra runner, and the commands that read what it recorded.

    peftbench [key=value ...] [-m]       one run, or a sweep with -m (the same as python -m peftbench)
    peftbench report [RESULTS_DIR] ...   the comparison report (the same as peftbench-report)
    peftbench best [RESULTS_DIR] ...     each search's best setting and its rerun (python -m peftbench.best)

A bare word is never a Hydra override (those are ``key=value``, ``+key=value``, ``~key`` or a flag),
so ``report`` and ``best`` as the first argument cannot shadow a run's arguments. This module
imports neither Hydra nor torch: the report stays as quick to start as ``peftbench-report``. The
console script is :func:`peftbench.console.main`; ``python -m peftbench`` hands over here first.
"""

from __future__ import annotations

import difflib
import importlib
import re
import sys
from collections.abc import Sequence

SUBCOMMANDS = {"report": "peftbench.report.cli", "best": "peftbench.best"}
"""Each sub-command's module; its ``main(argv, prog)`` runs it and returns the exit status."""


def run_subcommand(argv: Sequence[str]) -> None:
    """Runs and exits when ``argv`` (without the program name) starts with a sub-command; else returns."""
    if not argv:
        return
    if argv[0] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[argv[0]])
        sys.exit(module.main(list(argv[1:]), prog=f"peftbench {argv[0]}"))
    close = difflib.get_close_matches(argv[0], SUBCOMMANDS, n=1) if re.fullmatch(r"[a-z]+", argv[0]) else []
    if close:  # a mistyped command would otherwise meet Hydra's "missing EQUAL" parse error
        print(f"peftbench: unknown command {argv[0]!r}. Did you mean {close[0]!r}? The commands are "
              f"{', '.join(SUBCOMMANDS)}; without one, the arguments are a run's key=value overrides "
              "(python -m peftbench method=lora rank=8).", file=sys.stderr)
        sys.exit(2)
