"""The results folder's check: refused before any work when a run could not record its result there."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from peftbench.errors import ConfigError


def check_results_dir(results_dir: str) -> None:
    """Refuses, before any training, a ``results_dir`` the run could not record its result in: a path
    under a file, a file itself, or a folder (or its nearest existing parent) that cannot be written.

    Nothing is created: the nearest existing folder is probed with a temporary file, removed at once.
    """
    path = Path(results_dir).expanduser()
    problem = ""
    if path.exists() and not path.is_dir():
        problem = "it is a file, not a folder"
    else:
        existing = next(p for p in (path, *path.parents) if p.exists())
        runs_csv = path / "runs.csv"
        if not existing.is_dir():
            problem = f"{existing} is a file, so no folder can be made under it"
        elif runs_csv.exists() and not os.access(runs_csv, os.W_OK):
            problem = f"{runs_csv} is read-only"
        else:
            try:
                with tempfile.TemporaryFile(dir=existing):
                    pass
            except OSError as err:
                # The system's own words alone mislead here: /proc answers "No such file or directory".
                problem = f"no file can be made in {existing} (making one there failed: {err.strerror or err})"
    if problem:
        raise ConfigError(
            f"results_dir={results_dir!r} cannot hold the run's results: {problem}. Give a folder you can "
            "write to (it is made if missing), for example results_dir=results or results_dir=/tmp/peftbench"
        )
