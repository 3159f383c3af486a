"""A report: the runs of a results directory loaded, filtered, compared and sorted (:func:`build_report`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import pandas as pd

from peftbench.report.answers import ANSWER_COLUMNS, has_answers, rank_sweeps, setting_answers
from peftbench.report.compare import BASELINE_METHOD, COMPARISON_COLUMNS, comparison_table, failed_runs
from peftbench.report.load import REPORT_COLUMNS, load_runs, runs_path
from peftbench.report.summary import answer_sections, which_method

SORT_ALIASES = {
    "params": "trainable_params",
    "trainable": "trainable_params",
    "pct": "trainable_pct",
    "memory": "peak_mem_bytes",
    "mem": "peak_mem_bytes",
    "throughput": "train_tokens_per_s",
    "tokens": "train_tokens_per_s",
    "samples": "train_samples_per_s",
    "score": "score_mean",
    "std": "score_std",
    "seeds": "n_seeds",
    "delta": "score_delta",
    "p": "p_vs_best",
    "ci": "score_ci_low",
    "stopped": "n_stopped_early",
}
"""Short names accepted by ``--sort`` besides the column names of :data:`COMPARISON_COLUMNS`."""


@dataclasses.dataclass
class Report:
    """Everything a rendered report shows.

    Attributes:
        table: The comparison table (:func:`comparison_table`), filtered and sorted.
        failed: Failed and cancelled runs (:func:`failed_runs`), filtered.
        source: Where the runs came from (path of ``runs.csv``).
        n_runs: Number of runs read after filtering (all statuses).
        n_search: Runs left out because they are search trials (``eval_on == "search"``: scored on
            the search split, not on the reported evaluation split).
        which: "Which method?" per model, task and budget: ``[(title, sentences)]``
            (:func:`peftbench.report.summary.which_method`); empty for runs recorded before the
            answers' measurements existed.
        sections: the answers' tables under the comparison
            (:func:`peftbench.report.summary.answer_sections`).
    """

    table: pd.DataFrame
    failed: pd.DataFrame
    source: str
    n_runs: int
    n_search: int = 0
    which: list = dataclasses.field(default_factory=list)
    sections: list = dataclasses.field(default_factory=list)


def _as_list(values: str | Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [values] if isinstance(values, str) else list(values)


FILTER_NAMES = {"model": "model", "task": "task", "method": "method", "sweep_id": "sweep id"}
"""The run columns the filters of :func:`build_report` match, and what the error calls them."""

LISTED_MAX = 8
"""An unknown filter value's error lists at most this many known values (the most recent ones)."""


def check_filter(runs: pd.DataFrame, column: str, chosen: Sequence[str] | None, source: object = "the runs file") -> None:
    """Raises a one-line ValueError naming each value of ``chosen`` that no run of ``runs`` has in
    ``column``, with the values it has (the :data:`LISTED_MAX` most recently started, if more)."""
    if not chosen:
        return
    values = runs[column].astype("str")
    unknown = [v for v in dict.fromkeys(chosen) if not (values == v).any()]
    if not unknown:
        return
    present = values[values != ""]
    if "started_at" in runs.columns:  # most recent first
        last = runs.loc[present.index, "started_at"].groupby(present.to_numpy()).max()
        known = last.sort_values(ascending=False, na_position="last", kind="mergesort").index.tolist()
    else:
        known = sorted(set(present))
    name = FILTER_NAMES[column]
    listed = ", ".join(known[:LISTED_MAX]) if known else "none"
    more = f" (the {LISTED_MAX} most recent of {len(known)})" if len(known) > LISTED_MAX else ""
    plural = "s" if len(unknown) > 1 else ""
    raise ValueError(f"unknown {name}{plural} {', '.join(map(repr, unknown))}: the {name}s in {source} are "
                     f"{listed}{more}")


def resolve_sort_column(name: str) -> str:
    """Maps a ``--sort`` argument (column name or alias such as ``score``) to a column name.

    Raises:
        ValueError: If the name is neither a comparison column nor an alias.
    """
    column = SORT_ALIASES.get(name, name)
    if column not in COMPARISON_COLUMNS:
        known = ", ".join(sorted(set(COMPARISON_COLUMNS) | set(SORT_ALIASES)))
        raise ValueError(f"cannot sort by {name!r}; choose one of: {known}")
    return column


def build_report(
    results_dir: str | os.PathLike[str] = "results",
    *,
    models: str | Sequence[str] | None = None,
    tasks: str | Sequence[str] | None = None,
    methods: str | Sequence[str] | None = None,
    sweeps: str | Sequence[str] | None = None,
    sort: str | None = None,
    descending: bool = False,
    baseline_method: str = BASELINE_METHOD,
    include_search: bool = False,
    strict: bool = False,
) -> Report:
    """Loads, filters, aggregates and sorts the runs of a results directory.

    Search trials (runs with ``eval_on == "search"``, scored on the search split that a learning-rate
    search tunes on) are left out unless ``include_search``: their scores are not comparable with
    scores on the evaluation split. Model, task and sweep filters apply before aggregation. The method filter applies after it,
    so that the relative columns can still use the full fine-tuning baseline.

    Args:
        results_dir: Directory holding ``runs.csv`` (or the CSV path itself).
        models: Keep only these models.
        tasks: Keep only these tasks.
        methods: Show only these methods.
        sweeps: Keep only runs of these sweep ids.
        sort: Column (or alias, see :data:`SORT_ALIASES`) to sort by; default order otherwise.
        descending: Sort in descending order.
        baseline_method: Method the relative columns compare with.
        include_search: Keep the search trials too.
        strict: Raise on a model, task, method or sweep id that no run of the file has, instead of
            returning an empty report (the command line's behaviour).

    Returns:
        The :class:`Report`.

    Raises:
        FileNotFoundError: If there is no ``runs.csv``.
        ValueError: If ``sort`` names no column, or, with ``strict``, a model, task, method or
            sweep id asked for is in no run of the file (:func:`check_filter`).
    """
    runs = load_runs(results_dir, columns=(*REPORT_COLUMNS, *ANSWER_COLUMNS))
    if strict:
        for column, values in (("sweep_id", sweeps), ("model", models), ("task", tasks), ("method", methods)):
            check_filter(runs, column, _as_list(values), runs_path(results_dir))
    n_search = 0
    if not include_search:
        search = (runs["eval_on"] == "search").to_numpy()
        n_search = int(search.sum())
        if n_search:
            runs = runs[~search]
    for column, values in (("model", models), ("task", tasks), ("sweep_id", sweeps)):
        chosen = _as_list(values)
        if chosen is not None:
            runs = runs[runs[column].isin(chosen).to_numpy()]
    table = comparison_table(runs, baseline_method=baseline_method)
    answered = has_answers(runs)
    if answered:  # the answers' columns (did it learn, ranks, forgetting, cost), index-aligned
        table = pd.concat([table, setting_answers(runs, table, results_dir)], axis=1)
    failed = failed_runs(runs)
    chosen_methods = _as_list(methods)
    if chosen_methods is not None:
        table = table[table["method"].isin(chosen_methods).to_numpy()].reset_index(drop=True)
        failed = failed[failed["method"].isin(chosen_methods).to_numpy()].reset_index(drop=True)
    if sort is not None:
        column = resolve_sort_column(sort)
        table = table.sort_values(
            column, ascending=not descending, kind="mergesort", na_position="last"
        ).reset_index(drop=True)
    sweeps = rank_sweeps(table, runs, results_dir) if answered else []
    return Report(
        table=table, failed=failed, source=str(runs_path(results_dir)), n_runs=len(runs), n_search=n_search,
        which=which_method(table, sweeps) if answered else [], sections=answer_sections(table, sweeps) if answered else [],
    )
