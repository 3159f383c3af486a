"""The comparison table: one row per setting, averaged over seeds, against full fine-tuning; the failed runs."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from peftbench.report.groups import (
    COMPARE_KEYS,
    GROUP_KEYS,
    SETTING_KEYS,
    ensure_run_columns,
    flags,
    floats,
    group_frame,
    labels,
)
from peftbench.report.load import RunsFileWarning
from peftbench.report.stats import pareto_front, significance

BASELINE_METHOD = "full"
"""Method that relative figures are computed against."""

COMPARISON_COLUMNS = (
    "model",
    "task",
    "method",
    "setting",
    "rank",
    "lr",
    "method_settings",
    "setting_key",
    "budget_unit",
    "budget",
    "budget_steps",
    "budget_inferred",
    "n_seeds",
    "seeds",
    "n_failed",
    "n_stopped_early",
    "stop_reason",
    "trainable_params",
    "total_params",
    "trainable_pct",
    "peak_mem_bytes",
    "mem_kind",
    "train_samples_per_s",
    "train_tokens_per_s",
    "train_time_s",
    "train_steps",
    "train_samples",
    "train_tokens",
    "stopped_steps",
    "score_mean",
    "score_std",
    "score_ci_low",
    "score_ci_high",
    "vs_best",
    "p_vs_best",
    "metric",
    "final_train_loss",
    "baseline_setting",
    "params_ratio",
    "mem_ratio",
    "throughput_ratio",
    "score_delta",
    "pareto",
)
"""Columns of :func:`comparison_table`, in order."""

FAILED_COLUMNS = (
    "run_id",
    "sweep_id",
    "status",
    "model",
    "task",
    "method",
    "setting",
    "seed",
    "started_at",
    "error",
)
"""Columns of :func:`failed_runs`, in order."""


def _empty_comparison() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype="object") for name in COMPARISON_COLUMNS})


def _failed_counts(table: pd.DataFrame, failed: pd.DataFrame) -> np.ndarray:
    """How many failed or cancelled runs each row of ``table`` has.

    A failed run with a recorded budget counts for its own budget; one without (an older file, or a
    run that failed before its budget was known) counts for every budget of its setting.
    """
    counts = np.zeros(len(table), dtype="int64")
    if failed.empty:
        return counts
    keys = group_frame(failed)
    unknown = ((keys["budget_unit"] == "") & keys["budget"].isna()).to_numpy()
    for subset, on in ((keys[~unknown], list(GROUP_KEYS)), (keys[unknown], list(SETTING_KEYS))):
        if subset.empty:
            continue
        per_key = subset.groupby(on, dropna=False, sort=False).size().rename("_count").reset_index()
        merged = table.loc[:, on].merge(per_key, on=on, how="left")
        counts += merged["_count"].fillna(0).to_numpy(dtype="int64")
    return counts


def _stop_reasons(work: pd.DataFrame, stopped: np.ndarray, table: pd.DataFrame) -> list[str]:
    """The distinct reasons (comma-separated) why each row's stopped-early seeds stopped."""
    if not stopped.any():
        return [""] * len(table)
    sub = work.loc[stopped, [*GROUP_KEYS, "_reason"]]
    reasons = (
        sub.groupby(list(GROUP_KEYS), dropna=False, sort=False)["_reason"]
        .agg(lambda values: ",".join(sorted({v for v in values.tolist() if v})))
        .rename("_reasons")
        .reset_index()
    )
    merged = table.loc[:, list(GROUP_KEYS)].merge(reasons, on=list(GROUP_KEYS), how="left")
    return merged["_reasons"].fillna("").astype("str").tolist()


def _tell_apart(table: pd.DataFrame) -> None:
    """Appends ``(config <setting_key>)`` to labels that would otherwise repeat within one model,
    task, method and budget: those settings differ in a config key the label does not show."""
    same = [*COMPARE_KEYS, "method", "setting"]
    clash = table.duplicated(subset=same, keep=False).to_numpy() & (table["setting_key"] != "").to_numpy()
    if clash.any():
        table.loc[clash, "setting"] = [
            f"{label} (config {key[:6]})" if label else f"(config {key[:6]})"
            for label, key in zip(table.loc[clash, "setting"], table.loc[clash, "setting_key"], strict=True)
        ]


def comparison_table(df: pd.DataFrame, *, baseline_method: str = BASELINE_METHOD) -> pd.DataFrame:
    """Compares every setting of every method, averaging over seeds.

    Only successful runs are averaged. Runs that agree on model, task, method, rank, method
    settings, learning rate and training budget (unit and amount) form one row: runs with different
    budgets are never pooled. If the same setting was run twice with the same seed, only the run
    written last counts (a :class:`RunsFileWarning` says so). Settings are compared with each other
    (best setting, full fine-tuning baseline, Pareto front) only within one model, task and budget.

    Args:
        df: Runs as returned by :func:`load_runs` (any statuses; other columns are ignored).
        baseline_method: The method the relative columns compare with (full fine-tuning).

    Returns:
        One row per (model, task, method, setting, budget) with the columns of
        :data:`COMPARISON_COLUMNS`: ``budget_unit`` and ``budget`` (``""``/NaN where unknown; a
        successful run recorded without a budget gets the steps it trained, and
        ``budget_inferred`` says so), ``budget_steps`` (median over seeds of the optimizer steps
        the budget works out to), ``n_seeds`` (successful runs with a score), ``seeds``,
        ``n_failed`` (failed or cancelled runs of that setting), ``n_stopped_early`` (seeds among
        ``n_seeds`` that stopped before their budget), ``stop_reason`` (their distinct reasons,
        comma-separated) and ``stopped_steps`` (their mean optimizer steps), parameter counts,
        ``peak_mem_bytes`` (mean over seeds of the GPU peak where measured, else the RSS peak;
        ``mem_kind`` says which), mean throughputs, the mean ``train_steps``, ``train_samples``
        and ``train_tokens`` actually trained, ``score_mean`` and ``score_std`` (sample std,
        ddof=1; NaN for one seed), the relative columns ``params_ratio``, ``mem_ratio`` and
        ``throughput_ratio`` (this row / baseline) and ``score_delta`` (this row - baseline),
        computed against the best-scoring baseline setting of the same model, task and budget
        (``baseline_setting``; NaN where there is none), and ``pareto`` (on the
        max-score/min-parameters front of its model, task and budget). Rows are sorted by model,
        task, budget, baseline first, method, trainable parameters and learning rate.
    """
    df = ensure_run_columns(df)
    status = df["status"].astype("str")
    ok = df[(status == "success").to_numpy()]
    if ok.empty:
        return _empty_comparison()
    keys = list(GROUP_KEYS)

    work = group_frame(ok)
    work["seed"] = floats(ok["seed"])
    for name in (
        "score",
        "trainable_params",
        "total_params",
        "trainable_pct",
        "train_samples_per_s",
        "train_tokens_per_s",
        "train_time_s",
        "budget_steps",
        "train_steps",
        "train_samples",
        "train_tokens",
        "final_train_loss",
    ):
        work[name] = floats(ok[name])
    inferred = work["_budget_inferred"].to_numpy()
    if inferred.any():
        work.loc[inferred, "budget_steps"] = work.loc[inferred, "train_steps"]
    gpu = floats(ok["peak_gpu_mem_bytes"])
    rss = floats(ok["peak_rss_bytes"])
    on_gpu = np.isfinite(gpu)
    work["_mem"] = np.where(on_gpu, gpu, rss)
    work["_gpu"] = on_gpu.astype("int64")
    work["_rss"] = (~on_gpu & np.isfinite(rss)).astype("int64")
    work["metric"] = ok["metric"].astype("str").to_numpy()
    stopped = flags(ok["stopped_early"]) & np.isfinite(work["score"].to_numpy())
    work["_stopped"] = stopped.astype("int64")
    work["_stopped_steps"] = np.where(stopped, work["train_steps"].to_numpy(), np.nan)
    work["_reason"] = ok["stop_reason"].astype("str").to_numpy()

    with_seed = work["seed"].notna().to_numpy()
    duplicated = np.zeros(len(work), dtype=bool)
    if with_seed.any():
        duplicated[with_seed] = work[with_seed].duplicated(subset=[*keys, "seed"], keep="last").to_numpy()
    if duplicated.any():
        warnings.warn(
            f"{int(duplicated.sum())} successful run(s) repeat a setting and seed that was run again "
            "later; only the latest run of each counts",
            RunsFileWarning,
            stacklevel=2,
        )
        work = work[~duplicated]
        stopped = stopped[~duplicated]

    grouped = work.groupby(keys, dropna=False, sort=False)
    table = grouped.agg(
        n_seeds=("score", "count"),
        _n=("score", "size"),
        budget_steps=("budget_steps", "median"),
        budget_inferred=("_budget_inferred", "any"),
        n_stopped_early=("_stopped", "sum"),
        trainable_params=("trainable_params", "median"),
        total_params=("total_params", "median"),
        trainable_pct=("trainable_pct", "median"),
        peak_mem_bytes=("_mem", "mean"),
        _n_gpu=("_gpu", "sum"),
        _n_rss=("_rss", "sum"),
        train_samples_per_s=("train_samples_per_s", "mean"),
        train_tokens_per_s=("train_tokens_per_s", "mean"),
        train_time_s=("train_time_s", "mean"),
        train_steps=("train_steps", "mean"),
        train_samples=("train_samples", "mean"),
        train_tokens=("train_tokens", "mean"),
        stopped_steps=("_stopped_steps", "mean"),
        score_mean=("score", "mean"),
        score_std=("score", "std"),
        metric=("metric", "first"),
        final_train_loss=("final_train_loss", "mean"),
    ).reset_index()
    table["seeds"] = grouped["seed"].agg(_join_seeds).to_numpy()
    table["stop_reason"] = _stop_reasons(work, stopped, table)
    table["n_failed"] = _failed_counts(table, df[(status != "success").to_numpy()])

    pct = table["trainable_pct"].to_numpy(dtype="float64")
    derived = (
        100.0
        * table["trainable_params"].to_numpy(dtype="float64")
        / table["total_params"].to_numpy(dtype="float64")
    )
    table["trainable_pct"] = np.where(np.isfinite(pct), pct, derived)
    table["mem_kind"] = np.select(
        [
            ~np.isfinite(table["peak_mem_bytes"].to_numpy(dtype="float64")),
            table["_n_gpu"].to_numpy() == table["_n"].to_numpy(),
            table["_n_rss"].to_numpy() == table["_n"].to_numpy(),
        ],
        ["", "GPU", "RSS"],
        default="mixed",
    )
    table["setting"] = labels(table["method_settings"], table["lr"])
    _tell_apart(table)
    table = _add_relative(table, baseline_method)
    table = significance(table)
    table["pareto"] = False
    for index in table.groupby(list(COMPARE_KEYS), sort=False, dropna=False).indices.values():
        sub = table.iloc[index]
        table.loc[table.index[index], "pareto"] = pareto_front(sub["trainable_params"], sub["score_mean"])
    table["pareto"] = table["pareto"].astype(bool)

    for name in ("rank", "trainable_params", "total_params", "budget_steps"):
        table[name] = pd.array(np.round(table[name].to_numpy(dtype="float64")), dtype="Float64").astype(
            "Int64"
        )
    table["n_seeds"] = table["n_seeds"].astype("int64")
    table["n_stopped_early"] = table["n_stopped_early"].astype("int64")
    table["budget_inferred"] = table["budget_inferred"].astype(bool)
    table = _default_order(table, baseline_method)
    return table.loc[:, list(COMPARISON_COLUMNS)].reset_index(drop=True)


def _join_seeds(seeds: pd.Series) -> str:
    values = sorted({int(v) for v in seeds.tolist() if v == v})
    return ",".join(str(v) for v in values)


def _add_relative(table: pd.DataFrame, baseline_method: str) -> pd.DataFrame:
    base = table[table["method"] == baseline_method]
    for name in ("baseline_setting",):
        table[name] = ""
    for name in ("params_ratio", "mem_ratio", "throughput_ratio", "score_delta"):
        table[name] = np.nan
    if base.empty:
        return table
    base = base.sort_values("score_mean", ascending=False, na_position="last", kind="mergesort")
    base = base.drop_duplicates(list(COMPARE_KEYS), keep="first")
    fields = [
        "setting",
        "trainable_params",
        "peak_mem_bytes",
        "mem_kind",
        "train_tokens_per_s",
        "train_samples_per_s",
        "score_mean",
    ]
    base = base[[*COMPARE_KEYS, *fields]].rename(columns={name: f"_b_{name}" for name in fields})
    merged = table.merge(base, on=list(COMPARE_KEYS), how="left")

    def ratio(name: str) -> np.ndarray:
        num = merged[name].to_numpy(dtype="float64")
        den = merged[f"_b_{name}"].to_numpy(dtype="float64")
        with np.errstate(divide="ignore", invalid="ignore"):
            out = num / den
        out[~np.isfinite(out)] = np.nan
        return out

    merged["baseline_setting"] = merged["_b_setting"].fillna("").astype("str")
    merged["params_ratio"] = ratio("trainable_params")
    same_kind = (merged["mem_kind"] == merged["_b_mem_kind"]) & merged["mem_kind"].isin(["GPU", "RSS"])
    merged["mem_ratio"] = np.where(same_kind.to_numpy(), ratio("peak_mem_bytes"), np.nan)
    tokens = ratio("train_tokens_per_s")
    merged["throughput_ratio"] = np.where(np.isfinite(tokens), tokens, ratio("train_samples_per_s"))
    merged["score_delta"] = merged["score_mean"].to_numpy(dtype="float64") - merged["_b_score_mean"].to_numpy(
        dtype="float64"
    )
    return merged.drop(columns=[c for c in merged.columns if c.startswith("_b_")])


def _default_order(table: pd.DataFrame, baseline_method: str) -> pd.DataFrame:
    helper = table.assign(_not_base=(table["method"] != baseline_method).astype(int))
    helper = helper.sort_values(
        [
            "model",
            "task",
            "budget_unit",
            "budget",
            "_not_base",
            "method",
            "trainable_params",
            "lr",
            "setting",
        ],
        kind="mergesort",
        na_position="last",
    )
    return helper.drop(columns="_not_base")


def failed_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Lists the runs that did not succeed, with their error messages.

    Args:
        df: Runs as returned by :func:`load_runs`.

    Returns:
        The failed and cancelled runs (columns :data:`FAILED_COLUMNS`), oldest first.
    """
    df = ensure_run_columns(df)
    bad = df[(df["status"].astype("str") != "success").to_numpy()]
    out = pd.DataFrame(
        {
            "run_id": bad["run_id"].astype("str").to_numpy(),
            "sweep_id": bad["sweep_id"].astype("str").to_numpy(),
            "status": bad["status"].astype("str").to_numpy(),
            "model": bad["model"].astype("str").to_numpy(),
            "task": bad["task"].astype("str").to_numpy(),
            "method": bad["method"].astype("str").to_numpy(),
            "setting": labels(bad["method_settings"].astype("str"), bad["lr"]),
            "seed": pd.array(floats(bad["seed"]), dtype="Float64").astype("Int64"),
            "started_at": bad["started_at"].to_numpy(),
            "error": bad["error"].astype("str").to_numpy(),
        }
    )
    if not out.empty:
        out = out.sort_values("started_at", kind="mergesort", na_position="last")
    return out.reset_index(drop=True)
