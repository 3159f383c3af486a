"""A report: the runs of a results directory loaded, filtered, compared and sorted (:func:`build_report`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import pandas as pd

from peftbench.report.compare import BASELINE_METHOD, COMPARISON_COLUMNS, comparison_table, failed_runs
from peftbench.report.load import REPORT_COLUMNS, load_runs, runs_path

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
    """

    table: pd.DataFrame
    failed: pd.DataFrame
    source: str
    n_runs: int
    n_search: int = 0


def _as_list(values: str | Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [values] if isinstance(values, str) else list(values)


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

    Returns:
        The :class:`Report`.
    """
    runs = load_runs(results_dir, columns=REPORT_COLUMNS)
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
    return Report(
        table=table, failed=failed, source=str(runs_path(results_dir)), n_runs=len(runs), n_search=n_search
    )
