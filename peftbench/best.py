"""The best setting of each method from learning-rate searches, as a command that reruns it over seeds.

A search (``python -m peftbench -m hydra/sweeper=lr_search method=lora``) records one row per trial
in ``runs.csv``, all with the search's ``sweep_id``. This module picks, for every (model, task,
method) of the chosen searches, the trial with the highest score and prints the command that reruns
that setting over several seeds on the reported evaluation split::

    python -m peftbench.best [RESULTS_DIR] [--search SWEEP_ID ...] [--seeds 0,1,2] [--run]

The rerun keeps every override of the search's command line (model, task, training budget, launcher)
and replaces each searched key by the best trial's value, read from that trial's recorded config;
the search-only settings (``eval_on``, ``seed``, the sweeper) are left out. Searches are found from
Hydra's sweep folders (``<results_dir>/hydra/<sweep dir>``): without ``--search``, every sweep run
with the Optuna sweeper is used.

Like :mod:`peftbench.report`, this module never imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from peftbench.report import load_runs
from peftbench.report.answers import DID_NOT_LEARN_MARGIN, SCORE_FLOOR, did_not_learn
from peftbench.report.defaults import bridge_recipe, shipped_method_config

__all__ = ["BestSetting", "best_settings", "describe", "find_searches", "main", "rerun_command"]

SEARCH_ONLY_KEYS = ("seed", "eval_on", "force")
"""Task overrides of a search that its rerun leaves out (the rerun sets its own seeds)."""

_SWEEP_SUFFIX = re.compile(r"-[0-9a-f]{6}$")


@dataclasses.dataclass
class BestSetting:
    """The best trial of one method in one or more searches, and how to rerun it.

    Attributes:
        model: The model (``model.name``).
        task: The task name.
        method: The method name.
        metric: The score's metric.
        score: The best trial's score (on the split the search scored on).
        sweep_id: The search the best trial belongs to.
        run_id: The best trial's run id.
        n_trials: Trials of this method in the chosen searches (all statuses).
        n_failed: Of those, the ones that did not succeed (or scored NaN).
        params: Each searched key and its best value.
        overrides: The rerun's overrides, without seeds and ``-m`` (see :func:`rerun_command`).
        complete: False when the search's Hydra folder was not found: ``overrides`` then holds only
            what ``runs.csv`` records (method, learning rate, rank), not the search's other overrides.
        baseline: The best trial's majority-class baseline score (NaN where the task has none).
        zero_shot: The best trial's score before training (NaN unless ``train.eval_at_start``): what a
            task without a majority class (generation) must beat.
    """

    model: str
    task: str
    method: str
    metric: str
    score: float
    sweep_id: str
    run_id: str
    n_trials: int
    n_failed: int
    params: dict[str, Any]
    overrides: list[str]
    complete: bool = True
    baseline: float = math.nan
    zero_shot: float = math.nan

    @property
    def did_not_learn(self) -> bool:
        """The best trial's score is not distinguishable from its majority-class baseline (one run:
        within :data:`~peftbench.report.answers.DID_NOT_LEARN_MARGIN`), or, without one, does not beat
        its zero-shot score and 0 by that margin, so no trial learned."""
        return did_not_learn(np.array([self.score]), self.baseline, zero_shot=self.zero_shot)[0]


def sweep_dir_name(sweep_id: str) -> str:
    """The Hydra sweep folder's name in a sweep id (``sweep_<time>-<6 hex>`` -> ``sweep_<time>``)."""
    return _SWEEP_SUFFIX.sub("", sweep_id)


def _trial_hydra(sweep_dir: Path) -> dict[str, Any] | None:
    """The ``hydra`` node saved by one trial of the sweep (its ``.hydra/hydra.yaml``), if any."""
    for path in sorted(sweep_dir.glob("*/.hydra/hydra.yaml")):
        try:
            node = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(node.get("hydra"), dict):
            return node["hydra"]
    return None


def _is_search(hydra_node: dict[str, Any] | None) -> bool:
    target = str(((hydra_node or {}).get("sweeper") or {}).get("_target_", ""))
    return "optuna" in target.lower()


def find_searches(results_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """The Optuna sweeps under ``<results_dir>/hydra``, by folder name.

    Args:
        results_dir: The results directory.

    Returns:
        Sweep folder name to sweep folder, for every folder whose trials ran with the Optuna sweeper.
    """
    root = Path(results_dir) / "hydra"
    if not root.is_dir():
        return {}
    found = {}
    for path in sorted(root.iterdir()):
        if path.is_dir() and ((path / "optimization_results.yaml").is_file() or _is_search(_trial_hydra(path))):
            found[path.name] = path
    return found


def search_keys(sweep_dir: Path, hydra_node: dict[str, Any] | None = None) -> list[str]:
    """The config keys a search varied.

    Optuna's ``optimization_results.yaml`` names them (search space of the sweeper's ``params`` and
    of the command line alike); for a search that did not finish, the sweep expressions of the
    sweeper's ``params`` are used.

    Args:
        sweep_dir: The search's Hydra sweep folder.
        hydra_node: Its trials' saved ``hydra`` node, if already read.

    Returns:
        The searched keys, e.g. ``["train.lr"]``.
    """
    results = sweep_dir / "optimization_results.yaml"
    if results.is_file():
        node = yaml.safe_load(results.read_text(encoding="utf-8")) or {}
        if isinstance(node.get("best_params"), dict):
            return [str(key) for key in node["best_params"]]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = ((hydra_node or _trial_hydra(sweep_dir) or {}).get("sweeper") or {}).get("params") or {}
    parsed = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    return [override.key_or_group for override in parsed if override.is_sweep_override()]


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def override_value(value: Any) -> str:
    """Writes a config value in Hydra's override syntax (``1e-3`` -> ``0.001``, None -> ``null``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    text = str(value)
    if re.fullmatch(r"[\w./:+-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _lookup(config: dict[str, Any], key: str) -> Any:
    """The value of a dotted key in a recorded config; a config group (a node) by its ``name``."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    if isinstance(node, dict):
        if "name" not in node:
            raise KeyError(key)
        return node["name"]
    return node


def _base_overrides(hydra_node: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """The search's own overrides minus the searched and search-only keys and the sweeper."""
    overrides = hydra_node.get("overrides") or {}
    drop = set(keys) | set(SEARCH_ONLY_KEYS)
    task = [o for o in overrides.get("task") or [] if _override_key(o) not in drop]
    kept_hydra = [
        o
        for o in overrides.get("hydra") or []
        if not _override_key(o).startswith(("hydra/sweeper", "hydra.sweeper", "hydra.mode"))
    ]
    return [*kept_hydra, *task]


def best_settings(
    results_dir: str | os.PathLike[str] = "results",
    searches: Sequence[str] | None = None,
    sweep_dirs: Sequence[str | os.PathLike[str]] = (),
) -> list[BestSetting]:
    """Picks the best trial of every (model, task, method) in the chosen searches.

    Args:
        results_dir: The results directory holding ``runs.csv`` and the Hydra sweep folders.
        searches: Sweep ids (or sweep folder names) of the searches; None takes every Optuna sweep
            found by :func:`find_searches`.
        sweep_dirs: Hydra sweep folders of searches kept outside ``<results_dir>/hydra`` (a custom
            ``hydra.sweep.dir``).

    Returns:
        One :class:`BestSetting` per (model, task, method) with a successful trial, in the order
        of the CSV.

    Raises:
        FileNotFoundError: If there is no ``runs.csv``.
        ValueError: If no search was found, or a named search has no rows.
    """
    runs = load_runs(results_dir, columns=["run_id", "sweep_id", "status", "model", "task", "method", "seed",
                                           "rank", "lr", "score", "metric", "config_json",
                                           "baseline_score", "zero_shot_score"])
    known = find_searches(results_dir) | {Path(d).name: Path(d) for d in sweep_dirs}
    wanted = list(searches) if searches is not None else list(known)
    if not wanted:
        raise ValueError(f"no Optuna search found under {Path(results_dir) / 'hydra'}; name one with --search")
    names = runs["sweep_id"].map(sweep_dir_name)
    chosen = runs["sweep_id"].isin(wanted) | names.isin(wanted)
    for search in wanted:
        if not bool(((runs["sweep_id"] == search) | (names == search)).any()):
            raise ValueError(f"search {search!r} has no rows in {Path(results_dir) / 'runs.csv'}")
    rows = runs[chosen.to_numpy()]

    results: dict[tuple[str, str, str], dict[str, Any]] = {}
    counts: dict[tuple[str, str, str], list[int]] = {}
    for rec in rows.to_dict("records"):
        key = (rec["model"], rec["task"], rec["method"])
        ok = rec["status"] == "success" and math.isfinite(rec["score"])
        tally = counts.setdefault(key, [0, 0])
        tally[0] += 1
        tally[1] += 0 if ok else 1
        if ok and (key not in results or rec["score"] > results[key]["score"]):
            results[key] = rec

    out = []
    for key, rec in results.items():
        name = sweep_dir_name(rec["sweep_id"])
        sweep_dir = known.get(name) or Path(results_dir) / "hydra" / name
        hydra_node = _trial_hydra(sweep_dir) if sweep_dir.is_dir() else None
        config = json.loads(rec["config_json"]) if rec["config_json"] else {}
        if hydra_node is not None:
            keys = search_keys(sweep_dir, hydra_node)
            params = {k: _lookup(config, k) for k in keys}
            overrides = [*_base_overrides(hydra_node, keys), *(f"{k}={override_value(v)}" for k, v in params.items())]
            complete = True
        else:
            params = {"train.lr": rec["lr"]}
            overrides = _fallback_overrides(rec, config)
            complete = False
        out.append(
            BestSetting(
                model=key[0], task=key[1], method=key[2], metric=rec["metric"], score=float(rec["score"]),
                sweep_id=rec["sweep_id"], run_id=rec["run_id"], n_trials=counts[key][0], n_failed=counts[key][1],
                params=params, overrides=overrides, complete=complete,
                baseline=float(rec["baseline_score"]) if not pd.isna(rec["baseline_score"]) else math.nan,
                zero_shot=float(rec["zero_shot_score"]) if not pd.isna(rec["zero_shot_score"]) else math.nan,
            )
        )
    return out


def _fallback_overrides(rec: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The overrides a row alone can give when its search's Hydra folder is gone: the method (the
    config group's name: ``method=peft method.peft_type=loha`` for a row labelled ``peft:loha``, or
    ``method=loha`` when its options are that shipped recipe's),
    the learning rate, and the method's own rank where it has one (``method.rank=``: VeRA's rank is
    not the top-level ``rank``)."""
    method = config.get("method") if isinstance(config.get("method"), dict) else {}
    name = str(method.get("name") or rec["method"])
    recipe = bridge_recipe(str(method.get("peft_type") or ""), json.dumps(
        {"options": method.get("options")})) if name == "peft" else None
    overrides = [f"method={recipe or name}"]
    if name == "peft" and method.get("peft_type") and not recipe:
        overrides.append(f"method.peft_type={method['peft_type']}")
    overrides.append(f"train.lr={override_value(float(rec['lr']))}")
    if not pd.isna(rec["rank"]):
        overrides.append(f"{_rank_key(name)}={int(rec['rank'])}")
    return overrides


def _rank_key(method: str) -> str:
    """``rank`` for a method whose shipped YAML follows the top-level rank (``rank: ${rank}``),
    else ``method.rank`` (VeRA's own rank, or a user's method this package does not ship)."""
    try:
        shipped = shipped_method_config(method)
    except (OSError, yaml.YAMLError):
        return "method.rank"
    return "rank" if str(shipped.get("rank", "")).replace(" ", "") == "${rank}" else "method.rank"


def rerun_command(best: BestSetting, seeds: str = "0,1,2") -> list[str]:
    """The command (as arguments) that reruns a best setting over seeds on the reported split.

    Args:
        best: The setting, from :func:`best_settings`.
        seeds: Comma-separated seeds.

    Returns:
        ``["python", "-m", "peftbench", *overrides, "seed=<seeds>", "-m"]``.
    """
    return ["python", "-m", "peftbench", *best.overrides, f"seed={seeds}", "-m"]


def describe(best: BestSetting) -> str:
    """One comment line: which trial won, its searched values and its score; and, when even that trial
    did not learn, that rerunning it over seeds will not help."""
    chosen = ", ".join(f"{k}={override_value(v)}" for k, v in best.params.items())
    line = (f"# {best.method} on {best.task} ({best.model}): best of {best.n_trials} trial(s) "
            f"({best.n_failed} failed) in search {best.sweep_id}: {chosen}, "
            f"{best.metric or 'score'} {best.score:.4f} in the search (run {best.run_id})")
    if best.did_not_learn:
        if math.isfinite(best.baseline):
            why = f"the majority-class baseline scores {best.baseline:.4f}"
        elif math.isfinite(best.zero_shot):
            why = f"it does not beat the pretrained model's zero-shot {best.zero_shot:.4f} by {DID_NOT_LEARN_MARGIN:g}"
        else:
            why = f"it does not beat {SCORE_FLOOR:g} by {DID_NOT_LEARN_MARGIN:g}"
        line += (f"; it did not learn ({why}), nor did any other "
                 "trial: search more trials or a wider range (hydra.sweeper.params), or give it a larger "
                 "budget, before rerunning it")
    return line


def _parser(prog: str = "python -m peftbench.best") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Print (or run) the command that reruns the best setting of each method found by "
        "learning-rate searches (hydra/sweeper=lr_search) over several seeds.",
    )
    parser.add_argument("results_dir", nargs="?", default="results", help="results directory (default: results)")
    parser.add_argument("--search", action="append", metavar="SWEEP_ID",
                        help="a search's sweep id (repeatable); default: every Optuna sweep in RESULTS_DIR/hydra")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of the rerun (default: 0,1,2)")
    parser.add_argument("--run", action="store_true", help="run the commands instead of printing them")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m peftbench.best") -> int:
    """Runs ``python -m peftbench.best`` (also ``peftbench best``).

    Args:
        argv: Arguments without the program name; None reads ``sys.argv``.
        prog: The command's name in its usage and help.

    Returns:
        0 on success, 1 when there is no runs file or a rerun failed, 2 on a usage error or when no
        search has a successful trial.
    """
    args = _parser(prog).parse_args(argv)
    if not re.fullmatch(r"\d+(,\d+)*", args.seeds):
        print(f"peftbench.best: --seeds must be comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    try:
        found = best_settings(args.results_dir, args.search)
    except FileNotFoundError as error:
        print(f"peftbench.best: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"peftbench.best: {error}", file=sys.stderr)
        return 2
    if not found:
        print("peftbench.best: no successful trial in the chosen searches", file=sys.stderr)
        return 2
    status = 0
    for best in found:
        command = rerun_command(best, args.seeds)
        print(describe(best))
        if not best.complete:
            print(f"# the search's Hydra folder was not found under {Path(args.results_dir) / 'hydra'}: add its "
                  "other overrides (model, task, train.*) to this command")
        print(shlex.join(command))
        if args.run:
            sys.stdout.flush()
            done = subprocess.run([sys.executable, *command[1:]], check=False)
            status = status or (1 if done.returncode else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
