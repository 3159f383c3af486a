"""``python -m peftbench [key=value ...] [-m]``: one run, or a sweep with ``-m``.

``python -m peftbench report ...`` and ``python -m peftbench best ...`` run the report and the
search's rerun instead (:mod:`peftbench.commands`), before Hydra and torch are imported.
"""

# ruff: noqa: E402  (the sub-commands are handed over before this module's heavy imports)
from __future__ import annotations

import sys

if __name__ == "__main__":
    from peftbench.commands import run_subcommand

    run_subcommand(sys.argv[1:])  # exits when the first argument names a sub-command

import json
import math
import os
import textwrap
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from peftbench.callbacks import SKIPPED_NOTE, SWEEP_ID_ENV
from peftbench.config import register_configs
from peftbench.errors import ConfigError
from peftbench.overrides import check_override_keys, check_override_values
from peftbench.record import BUDGET_UNITS
from peftbench.resources import CONFIG_PACKAGE, CONFIG_SEARCH_PATH
from peftbench.results_dir import check_results_dir

register_configs()


def help_groups() -> str:
    """The ``--help`` list of config groups (``group: option, ...``), as Hydra's ``$APP_CONFIG_GROUPS``
    writes it but without Hydra's own groups and the ``schema/*`` groups, which hold the typed
    schemas the options build on (``/schema/method@_here_``) and are not choices for a user."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    loader = GlobalHydra.instance().config_loader()

    def groups(parent: str) -> list[str]:
        found = []
        for name in loader.list_groups(parent):
            group = f"{parent}/{name}" if parent else name
            if group in ("hydra", "schema"):
                continue
            if loader.get_group_options(group, ObjectType.CONFIG):
                found.append(group)
            found += groups(group)
        return found

    return "\n".join(f"{g}: {', '.join(sorted(loader.get_group_options(g)))}" for g in sorted(groups("")))


OmegaConf.register_new_resolver("peftbench_help_groups", help_groups, replace=True)  # conf/config.yaml's help

FAILED_TRIAL_SCORE = float("-inf")
"""What a multirun job returns for a failed run: the worst score, so a maximizing sweeper goes on."""


def sweep_context() -> tuple[str, bool]:
    """``(sweep id, is this a multirun)``; jobs of one sweep share the id, even in other processes."""
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    if multirun:
        return os.environ.get(SWEEP_ID_ENV) or Path(hc.sweep.dir).name, True
    return Path(hc.run.dir).name, False


def sweep_objective(score: float | str | None) -> float:
    """The value a sweeper sees for one job: the score, or -inf for a failed run or a non-finite score.

    Optuna (``hydra/sweeper=lr_search``) maximizes it. It marks a trial that returns None as failed
    and stops the search at the end with no completed trial, so a failed run (a learning rate that
    diverged) is told as the worst possible score instead: the search goes on and learns to avoid it.
    """
    value = float(score) if score not in (None, "") else math.nan
    return value if math.isfinite(value) else FAILED_TRIAL_SCORE


@hydra.main(version_base="1.3", config_path=CONFIG_SEARCH_PATH, config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    from peftbench.distributed import world_from_env  # torch loads only once the config composed
    from peftbench.identity import already_done
    from peftbench.live import sigterm_as_interrupt
    from peftbench.runner import quiet_import_warnings, run

    quiet_import_warnings(bool(cfg.get("verbose")))  # before the rank note and resume check import peft
    sweep_id, multirun = sweep_context()
    if note := unused_rank_note(cfg):
        print(note, file=sys.stderr)
    done = already_done(cfg)
    if done is not None:
        print(f"peftbench: skipping: run {done['run_id']} (sweep {done['sweep_id']}) already succeeded with this "
              f"exact config, {done['metric']}={done['score']}; force=true runs it again.")
        if multirun:
            mark_skipped(Path(HydraConfig.get().runtime.output_dir), done)
            return sweep_objective(done.get("score"))
        return float(done["score"]) if done.get("score") else None
    try:
        with sigterm_as_interrupt():  # a terminated run is recorded as cancelled, as Ctrl-C
            record = run(cfg, sweep_id)
    except KeyboardInterrupt as err:  # recorded already: say so in a line instead of a traceback
        sys.exit(cancelled_message(err, cfg, multirun))
    if os.getpid() != _CLI_PID:  # a launcher's worker (joblib, Ray, submitit): the job ends with its wandb
        from peftbench.sinks import wait_for_sinks

        wait_for_sinks()  # run finished, so the sweep's summary, in another process, comes after it
    if world_from_env()[1] != 0:  # rank 0 speaks for a run on several processes (a failed one exited already)
        return sweep_objective(record.score) if multirun else record.score
    if not multirun and record.status != "success":
        refused = record.error.startswith(("ConfigError", "MethodConfigError"))
        print(f"\npeftbench: run {record.run_id} {'refused' if refused else record.status}: "
              f"{record.error.split(': ', 1)[-1] if refused else record.error}", file=sys.stderr)
        if not refused:
            print(f"The traceback is in {cfg.results_dir}/runs/{record.run_id}.json.", file=sys.stderr)
        sys.exit(2 if refused else 1)
    if multirun:
        return sweep_objective(record.score if record.status == "success" else None)
    print(f"peftbench: run {record.run_id}: {record.metric}={record.score:.4f}, trainable "
          f"{record.trainable_params:,} of {record.total_params:,} parameters "
          f"({record.trainable_pct:.3f}%); recorded in {cfg.results_dir}/runs.csv")
    return record.score


def cancelled_message(err: KeyboardInterrupt, cfg: DictConfig, multirun: bool) -> int:
    """Prints what a Ctrl-C or SIGTERM did to the run (recorded as cancelled, with the steps it had
    done) and returns the exit status a shell expects: 128 + the signal's number."""
    from peftbench.live import Terminated

    record = getattr(err, "record", None)
    name, status = ("SIGTERM", 143) if isinstance(err, Terminated) else ("Ctrl-C", 130)
    steps = f" at step {record.train_steps} of {record.budget_steps}" if record and record.budget_steps else ""
    run_id = f"run {record.run_id} " if record else "the run "
    resume = ("; the sweep stops here: the same command resumes it, skipping the runs already done"
              if multirun else "")
    print(f"\npeftbench: {name}: {run_id}cancelled{steps}, recorded as cancelled in "
          f"{cfg.results_dir}/runs.csv{resume}.", file=sys.stderr)
    return status


def mark_skipped(job_dir: Path, done: dict[str, str]) -> None:
    """Leaves a note in the job's folder that it was skipped, and for which earlier run, so the
    sweep's summary (:class:`peftbench.callbacks.SweepSummary`, maybe in another process) can say so."""
    note = {"run_id": done.get("run_id", ""), "sweep_id": done.get("sweep_id", ""), "score": done.get("score", "")}
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / SKIPPED_NOTE).write_text(json.dumps(note), encoding="utf-8")


MULTIRUN_FLAGS = ("-m", "--multirun")


def hydra_argv(args: list[str]) -> list[str]:
    """The arguments as Hydra's parser wants them.

    - ``-m``/``--multirun`` may stand anywhere among the overrides: Hydra's argparse takes the
      overrides as one block, so ``rank=2,4 -m train.steps=5`` fails there with "unrecognized
      arguments"; the flag moves to the front.
    - ``--cfg job`` (``-c job``) and ``--cfg all`` print the config resolved (the method's ``rank``
      as a number). ``--cfg hydra`` stays unresolved: Hydra prints its node alone, where
      ``hydra.run.dir``'s ``${results_dir}`` has nothing to resolve against.
    """
    flags = [a for a in args if a in MULTIRUN_FLAGS][:1]
    rest = [a for a in args if a not in MULTIRUN_FLAGS]
    if _cfg_value(rest) in ("job", "all") and "--resolve" not in rest:
        rest.append("--resolve")
    return flags + rest


def _cfg_value(args: list[str]) -> str | None:
    """The value of ``--cfg``/``-c`` (``job``, ``hydra``, ``all``), if given."""
    for i, arg in enumerate(args):
        if arg in ("--cfg", "-c") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--cfg="):
            return arg.split("=", 1)[1]
    return None


def check_results_dir_override(args: list[str]) -> str | None:
    """An error message for a ``results_dir`` that could not hold the results, before Hydra makes its
    run folder there (every value of a sweep's ``results_dir=a,b`` is checked)."""
    values = [a.split("=", 1)[1] for a in args if a.startswith("results_dir=")] or ["results"]
    for value in (v for joined in values for v in joined.split(",")):
        try:
            check_results_dir(value)
        except ConfigError as err:
            return f"peftbench: refused: {err}"
    return None


# Task keys that only some sources or kinds read; ``--cfg job`` leaves out those a task does not use.
TASK_KEYS_OF_SOURCE = {
    "datasets": ("path", "config_name", "data_files"),
    "local": ("data_files", "validation_fraction"),
    "vader": ("min_abs_rating", "validation_fraction"),
    "arithmetic": ("digits", "operations", "num_train", "num_eval"),
}
TASK_KEYS_OF_KIND = {
    "classification": ("num_labels", "label_names"),
    "causal_lm": ("prompt_template", "answer_extractor", "max_new_tokens", "max_target_length"),
    "seq2seq": ("prompt_template", "answer_extractor", "max_new_tokens", "max_target_length"),
}


def task_keys_used(task: dict[str, Any]) -> list[str]:
    """The keys of a task node that its ``source`` and ``kind`` read, in the node's order."""
    unused = {k for keys in (*TASK_KEYS_OF_SOURCE.values(), *TASK_KEYS_OF_KIND.values()) for k in keys}
    unused -= set(TASK_KEYS_OF_SOURCE.get(task.get("source"), ()))
    unused -= set(TASK_KEYS_OF_KIND.get(task.get("kind"), ()))
    return [k for k in task if k not in unused]


def _flag_values(args: list[str], flags: tuple[str, ...]) -> list[str]:
    """The values given to any of ``flags`` (``--config-dir DIR`` or ``--config-dir=DIR``)."""
    values = []
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in flags:
            values.append(value if eq else (args[i + 1] if i + 1 < len(args) else ""))
    return [v for v in values if v]


def print_job_config(args: list[str]) -> int:
    """Prints the job's config as ``--cfg job`` does, but readable: interpolations resolved (the
    method's rank is a number), the budget named on top, and only the task keys the task's source
    and kind read. Returns the exit status."""
    from hydra import compose, initialize_config_module

    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    config_dirs = [os.path.abspath(d) for d in _flag_values(args, ("--config-dir", "-cd"))]
    if config_dirs:  # the user's own config folders, as Hydra adds them for a run
        overrides.append("hydra.searchpath=[" + ",".join(f"file://{d}" for d in config_dirs) + "]")
    try:
        with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
            cfg = compose("config", overrides=overrides)
    except HydraException as err:  # what Hydra's own --cfg prints, without our printer's traceback
        print(f"peftbench: {err}", file=sys.stderr)
        return 2
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    task = config.get("task") or {}
    dropped = [k for k in task if k not in task_keys_used(task)]
    config["task"] = {k: task[k] for k in task_keys_used(task)}
    train = config.get("train") or {}
    unit = next((u for u in BUDGET_UNITS if train.get(u) is not None), None)
    print(f"# budget: {train.get(unit)} {unit} (train.{unit}); batch size {train.get('batch_size')}"
          if unit else "# budget: none set")
    if dropped:
        note = (f"task keys that this {task.get('source')} {task.get('kind')} task does not read are left out: "
                f"{', '.join(dropped)}")
        print(textwrap.fill(note, width=100, initial_indent="# ", subsequent_indent="#   "))
    print(OmegaConf.to_yaml(OmegaConf.create(config)), end="")
    return 0


_CLI_PID: int | None = None  # the process that ran main(): its sinks are waited for at its exit


# The Hydra plugins our launcher and sweeper options need: (their module, the extra that installs them).
PLUGINS = {
    "hydra/launcher=ray": ("hydra_plugins.hydra_ray_launcher", "ray"),
    "hydra/launcher=joblib": ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    "hydra/launcher=slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "hydra/launcher=submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "hydra/launcher=submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "hydra/sweeper=lr_search": ("hydra_plugins.hydra_optuna_sweeper", "search"),
    "hydra/sweeper=optuna": ("hydra_plugins.hydra_optuna_sweeper", "search"),
}


def check_plugins(args: list[str]) -> str | None:
    """A message naming the extra to install when a launcher or sweeper's Hydra plugin is missing
    (Hydra itself would end in a traceback: "Unknown plugin class")."""
    import importlib.util

    for arg in args:
        if arg.lstrip("+") in PLUGINS:
            module, extra = PLUGINS[arg.lstrip("+")]
            if importlib.util.find_spec(module) is None:
                return (f"peftbench: {arg.lstrip('+')} needs a Hydra plugin that is not installed here ({module}): "
                        f"pip install 'peftbench[{extra}]' (in a checkout: pip install -e '.[{extra}]')"
                        + (". The ray extra pins cloudpickle<3, which the joblib launcher cannot share: give it "
                           "an environment of its own." if extra == "ray" else "."))
    return None


def unused_rank_note(cfg: DictConfig) -> str | None:
    """A note when ``rank=`` was given but the chosen method does not read the top-level rank (its
    node has no ``${rank}``): IA3 has no rank, VeRA's is ``method.rank``, the peft bridge's is
    ``method.options.r`` for the types that have one (LoHa, LoKr...). The run goes on."""
    from peftbench.api import method_label, method_rank  # torch loads once the config is composed

    given = [o for o in HydraConfig.get().overrides.task if o.lstrip("+").split("=", 1)[0] == "rank"]
    if not given or "${rank}" in OmegaConf.to_yaml(cfg.method):
        return None
    settings = OmegaConf.to_container(cfg.method, resolve=True)
    label = method_label(settings)
    who = f"method={cfg.method.name}" + (f" ({label})" if label != cfg.method.name else "")
    own = method_rank(settings)
    return (f"peftbench: note: rank={cfg.rank} is not read by {who}: "
            + (f"its own rank is method.{own[0]} (now {own[1]})" if own else "it has no rank")
            + "; the run goes on without it")


def main() -> None:
    global _CLI_PID
    _CLI_PID = os.getpid()
    args = hydra_argv(sys.argv[1:])
    message = (check_override_keys(args) or check_override_values(args) or check_results_dir_override(args)
               or check_plugins(args))
    if message:
        print(message, file=sys.stderr)
        sys.exit(2)
    readable = not any(a.startswith("hydra.searchpath") for a in args)  # else Hydra's own printer
    if _cfg_value(args) == "job" and readable and not any(a in MULTIRUN_FLAGS for a in args):
        sys.exit(print_job_config(args))
    sys.argv[1:] = args
    hydra_main()


if __name__ == "__main__":
    main()
