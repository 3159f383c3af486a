"""Where a number came from: code version, packages, machine."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
from pathlib import Path

# peftbench's own source checkout when it is installed editable (or run from the checkout); in an
# installed wheel this is site-packages, which is never a git repository we describe.
SOURCE_DIR = Path(__file__).resolve().parent.parent

GIT_SOURCES = ("working_directory", "peftbench_source")
"""What ``git_sha`` describes: the directory the user ran in (their experiment repository), or
peftbench's own checkout (an editable install run from outside any repository)."""


def _git(repo: Path, *args: str) -> str:
    # A fixed argument list, no shell: nothing from the config reaches a command line.
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()


def _is_peftbench_checkout(folder: Path) -> bool:
    pyproject = folder / "pyproject.toml"
    return (folder / ".git").exists() and pyproject.is_file() and 'name = "peftbench"' in pyproject.read_text()


@functools.cache
def git_state(working_dir: Path | None = None) -> tuple[str, bool | None, str]:
    """``(commit sha, uncommitted changes to tracked files, which repository)`` of a run.

    The repository is the one holding ``working_dir`` (default: the current directory) if there is
    one: the code a user's experiment ran with. Else peftbench's own source checkout, if peftbench
    runs from one. Never site-packages. ``("", None, "")`` when neither is a git repository.
    """
    candidates = [(Path(working_dir or os.getcwd()), GIT_SOURCES[0])]
    if _is_peftbench_checkout(SOURCE_DIR):
        candidates.append((SOURCE_DIR, GIT_SOURCES[1]))
    for repo, source in candidates:
        try:
            sha = _git(repo, "rev-parse", "HEAD")
            dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))
        except (OSError, subprocess.SubprocessError):
            continue
        return sha, dirty, source
    return "", None, ""


@functools.cache
def _package_versions() -> tuple[tuple[str, str], ...]:
    return tuple(_read_package_versions().items())


def package_versions() -> dict[str, str]:
    """Versions of every package a run depends on, for the per-run JSON and wandb config (read once
    per process: each lookup scans the installed distributions)."""
    return dict(_package_versions())


def _read_package_versions() -> dict[str, str]:
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
