"""Where a number came from: code version, packages, machine."""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent.parent


@functools.cache
def git_state(repo: Path = SOURCE_DIR) -> tuple[str, bool | None]:
    """``(commit sha, tree has uncommitted changes to tracked files)``; ``("", None)`` outside git."""
    def git(*args: str) -> str:
        # A fixed argument list, no shell: nothing from the config reaches a command line.
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "", None
    return sha, dirty


def package_versions() -> dict[str, str]:
    """Versions of every package a run depends on, for the per-run JSON and wandb config."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "datasets", "evaluate", "hydra-core", "wandb", "pandas",
                 "tokenizers", "safetensors", "peftbench"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = ""
    return out


def hostname() -> str:
    return socket.gethostname()
