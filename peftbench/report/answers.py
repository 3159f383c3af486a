"""Answers drawn from the comparison (issue 14): did each setting learn, how busy was the machine, which
rank, what was forgotten, what is cheapest.

:func:`setting_answers` adds per-setting columns to a :func:`~peftbench.report.compare.comparison_table`
(index-aligned): the majority-class baseline and the did-not-learn test (against the zero-shot score
where a task has no majority class), the zero-shot score, the
update's effective and stable rank, the forgetting measures, training FLOPs, ``time_to_95`` and the
contention flag. :func:`rank_sweeps`, :func:`pareto_fronts` and :func:`forgetting_order` read that
table. Everything comes from ``runs.csv`` and, where given, the per-run JSON files beside it
(evaluation curves, singular vectors); nothing here imports torch.
"""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peftbench.report.defaults import DEFAULTS_LABEL, bridge_recipe, display_setting
from peftbench.report.groups import COMPARE_KEYS, floats
from peftbench.report.stats import ALPHA, pareto_front, significance

ANSWER_COLUMNS = (
    "baseline_score", "zero_shot_score", "update_effective_rank", "update_stable_rank",
    "representation_drift", "ref_loss_delta", "forgetting_reference", "load_avg_1m_end", "cpu_count",
    "cpu_util", "gpu_other_mem_bytes", "gpu_util_pct", "train_flops_per_token",
)
"""The run columns the answers read, besides the report's own."""

MEASURED = ("baseline_score", "zero_shot_score", "update_effective_rank", "representation_drift", "cpu_util",
            "load_avg_1m_end")
"""A runs file whose successful runs hold none of these was written before the answers existed."""

DID_NOT_LEARN_MARGIN = 0.01
"""A setting's mean score closer than this to its majority-class baseline may count as not learned; one
without a majority class (generation, regression) must beat its zero-shot score (and 0) by this much."""
SCORE_FLOOR = 0.0
"""Without a majority class, a mean score must beat this too (no exact match; no correlation), whatever
the zero-shot score was, or whether it was recorded at all."""
DID_NOT_LEARN_MARK = "⊘"
CONTENTION_MARK = "‡"
CPU_UTIL_MIN = 0.5
"""CPU runs whose process used less than this share of ``wall time x threads`` ran under contention."""
LOAD_PER_CORE_MAX = 1.25
"""... and so did runs that ended with a 1-minute load average above this many runnable threads per core."""
GPU_OTHER_MEM_MAX = 2 * 2**30
"""CUDA runs that found more than this much device memory held by others at the start."""
GPU_UTIL_MAX = 10.0
"""... or the device already more than this busy (percent, with pynvml)."""
TIME_TO_FRACTION = 0.95
"""``time_to_95``: training time to reach this share of the best learned setting's mean score."""
SEARCH_COMMAND = "python -m peftbench -m hydra/sweeper=lr_search method={method}"


def search_command(method: str, method_settings: str | None = None) -> str:
    """The learning-rate search command for a ``method`` column value (``peft:loha`` is the bridge):
    a bridged run whose options are a shipped recipe's (``method=loha``) is searched with that recipe,
    any other with ``method=peft method.peft_type=<type>``."""
    bridged, _, peft_type = method.partition(":")
    if peft_type:
        recipe = bridge_recipe(peft_type, method_settings)
        return SEARCH_COMMAND.format(method=recipe or f"{bridged} method.peft_type={peft_type}")
    return SEARCH_COMMAND.format(method=method)

EXTRA_COLUMNS = (
    "baseline_score", "did_not_learn", "p_vs_baseline", "zero_shot_score", "update_effective_rank",
    "update_stable_rank", "representation_drift", "ref_loss_delta", "contended", "train_flops",
    "time_to_95",
)
"""The columns :func:`setting_answers` adds."""


def is_marked(value: Any) -> bool:
    """A flag cell that is set (True or numpy's True; never NaN)."""
    return isinstance(value, bool | np.bool_) and bool(value)


def has_answers(runs: pd.DataFrame) -> bool:
    """Whether the successful runs carry any of the answers' measurements (see :data:`MEASURED`)."""
    ok = runs[(runs["status"].astype("str") == "success").to_numpy()] if "status" in runs.columns else runs
    return any(name in ok.columns and bool(np.isfinite(floats(ok[name])).any()) for name in MEASURED)


def contended(runs: pd.DataFrame) -> np.ndarray:
    """Per run: measured under contention, by the thresholds above (False where nothing was measured)."""
    def column(name: str) -> np.ndarray:
        return floats(runs[name]) if name in runs.columns else np.full(len(runs), np.nan)

    with np.errstate(invalid="ignore"):
        busy_cpu = column("cpu_util") < CPU_UTIL_MIN
        busy_load = column("load_avg_1m_end") > LOAD_PER_CORE_MAX * column("cpu_count")
        busy_gpu = (column("gpu_other_mem_bytes") > GPU_OTHER_MEM_MAX) | (column("gpu_util_pct") > GPU_UTIL_MAX)
    return busy_cpu | busy_load | busy_gpu


def learning_bar(zero_shot: float) -> float:
    """What a setting without a majority-class baseline must beat (by :data:`DID_NOT_LEARN_MARGIN`): the
    pretrained model's zero-shot score, or :data:`SCORE_FLOOR` where that is higher or not recorded."""
    return max(zero_shot, SCORE_FLOOR) if math.isfinite(zero_shot) else SCORE_FLOOR


def did_not_learn(scores: np.ndarray, baseline: float, alpha: float = ALPHA, zero_shot: float = math.nan
                  ) -> tuple[bool, float]:
    """``(not learned, p)``: seeds' scores not distinguishable from the baseline.

    With a majority-class ``baseline`` (classification) and 2 or more seeds: a two-sided one-sample
    t-test of the scores against the baseline (p; equal constant scores give p = 1, other constant
    scores p = 0), and the mean within :data:`DID_NOT_LEARN_MARGIN` of it (with 2 seeds the test alone
    cannot tell a noisy learner from a non-learner). With one seed: within the margin (p is NaN).

    Without one (``baseline`` NaN: generation tasks scored by exact match or ROUGE, regression), the
    mean must beat :func:`learning_bar` of ``zero_shot`` (the score before training) by the margin: a
    score of 0, or one no better than the pretrained model's, did not learn (p is NaN).
    """
    scores = scores[np.isfinite(scores)]
    if not len(scores):
        return False, math.nan
    if not math.isfinite(baseline):
        return float(scores.mean()) - learning_bar(zero_shot) < DID_NOT_LEARN_MARGIN, math.nan
    close = abs(float(scores.mean()) - baseline) < DID_NOT_LEARN_MARGIN
    if len(scores) < 2:
        return close, math.nan
    std = float(scores.std(ddof=1))
    if std == 0:
        p = 1.0 if abs(float(scores.mean()) - baseline) < 1e-12 else 0.0
    else:
        from scipy import stats

        t = (float(scores.mean()) - baseline) / (std / math.sqrt(len(scores)))
        p = float(2 * stats.t.sf(abs(t), len(scores) - 1))
    return close and p >= alpha, p


def _mean(runs: pd.DataFrame, name: str) -> float:
    """The mean of a column's finite values (NaN where there is none, or no such column)."""
    if name not in runs.columns:
        return math.nan
    values = floats(runs[name])
    return float(np.mean(values[np.isfinite(values)])) if np.isfinite(values).any() else math.nan


def not_learned_keys(runs: pd.DataFrame) -> set[str]:
    """The ``setting_key`` of each setting whose successful runs did not learn (:func:`did_not_learn`);
    none for a runs file written before the answers (:func:`has_answers`)."""
    if not has_answers(runs):
        return set()
    ok = runs[(runs["status"].astype("str") == "success").to_numpy()]
    lost = set()
    for key, sub in ok.groupby(ok["setting_key"].astype("str"), sort=False):
        if key and did_not_learn(floats(sub["score"]), _mean(sub, "baseline_score"),
                                 zero_shot=_mean(sub, "zero_shot_score"))[0]:
            lost.add(key)
    return lost


def setting_answers(runs: pd.DataFrame, table: pd.DataFrame, results_dir: str | os.PathLike[str] | None = None
                    ) -> pd.DataFrame:
    """The :data:`EXTRA_COLUMNS` of each row of ``table`` (same index), from its successful runs.

    Rows are matched with runs by ``setting_key``; rows without one get empty values. Means are over
    seeds; ``contended`` is true when any seed was; ``train_flops`` is ``train_flops_per_token x
    train_tokens``. ``time_to_95`` needs ``results_dir`` and evaluation curves (``train.eval_every``).
    """
    ok = runs[(runs["status"].astype("str") == "success").to_numpy() & np.isfinite(floats(runs["score"]))]
    ok = ok.assign(_contended=contended(ok), _flops=floats(ok["train_flops_per_token"]) * floats(ok["train_tokens"]))
    by_key = {key: sub for key, sub in ok.groupby(ok["setting_key"].astype("str"), sort=False) if key}
    out = pd.DataFrame(index=table.index, columns=list(EXTRA_COLUMNS), dtype="float64")
    out["did_not_learn"] = False
    out["contended"] = False
    for index, key in table["setting_key"].astype("str").items():
        sub = by_key.get(key)
        if sub is None:
            continue
        for name in ("baseline_score", "zero_shot_score", "update_effective_rank", "update_stable_rank",
                     "representation_drift", "ref_loss_delta"):
            out.at[index, name] = _mean(sub, name)
        out.at[index, "did_not_learn"], out.at[index, "p_vs_baseline"] = did_not_learn(
            floats(sub["score"]), out.at[index, "baseline_score"], zero_shot=out.at[index, "zero_shot_score"])
        out.at[index, "contended"] = bool(sub["_contended"].any())
        out.at[index, "train_flops"] = float(sub["_flops"].mean())
    out["did_not_learn"] = out["did_not_learn"].astype(bool)
    out["contended"] = out["contended"].astype(bool)
    if results_dir is not None:
        out["time_to_95"] = time_to_fraction(ok, table, Path(results_dir), out["did_not_learn"].to_numpy())
    return out


def run_json(results_dir: Path, run_id: str) -> dict[str, Any]:
    """A run's ``runs/<run_id>.json`` (empty if missing or unreadable)."""
    folder = results_dir if results_dir.is_dir() else results_dir.parent
    try:
        return json.loads((folder / "runs" / f"{run_id}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def time_to_fraction(ok: pd.DataFrame, table: pd.DataFrame, results_dir: Path, lost: np.ndarray | None = None
                     ) -> np.ndarray:
    """Per row: mean over seeds of the training time to the first evaluation after training started
    that reached :data:`TIME_TO_FRACTION` of the best mean score among the settings that learned
    (``lost``: per row, did not learn) of its model, task and budget, and beat the seed's zero-shot
    score (step 0, ``train.eval_at_start``); NaN if a seed never did, if it has fewer than two
    evaluations after the start, if the setting did not learn, or if the best score is not above 0.

    The zero-shot point never counts: a target the pretrained model already met was not reached by
    training, in 0 s or any other time. A step's training time is ``step / train_steps x train_samples
    / train_samples_per_s`` (the measured training throughput, evaluation time excluded).
    """
    result = np.full(len(table), np.nan)
    lost = np.zeros(len(table), dtype=bool) if lost is None else np.asarray(lost, dtype=bool)
    within = [k for k in COMPARE_KEYS if k in table.columns]
    learned = table["score_mean"].where(~lost)
    best = learned.groupby([table[k] for k in within], dropna=False, sort=False).transform("max").to_numpy()
    by_key = {key: sub for key, sub in ok.groupby(ok["setting_key"].astype("str"), sort=False) if key}
    for position, key in enumerate(table["setting_key"].astype("str")):
        sub = by_key.get(key)
        if sub is None or lost[position] or not (math.isfinite(best[position]) and best[position] > 0):
            continue
        target = TIME_TO_FRACTION * best[position]
        times = []
        for rec in sub.to_dict("records"):
            curve = run_json(results_dir, str(rec["run_id"])).get("eval_curve") or []
            start = next((v for s, v in curve if s == 0), math.nan)  # the zero-shot score, if evaluated
            trained = [(s, v) for s, v in curve if s > 0]
            if len(trained) < 2:
                times = []
                break
            step = next((s for s, v in trained if v >= target and (math.isnan(start) or v > start)), None)
            seconds = float(rec["train_samples"]) / float(rec["train_samples_per_s"]) if rec["train_samples_per_s"] else math.nan
            times.append(math.nan if step is None else step / float(rec["train_steps"]) * seconds)
        if times and all(math.isfinite(t) for t in times):
            result[position] = float(np.mean(times))
    return result


def label(rec: dict[str, Any]) -> str:
    """A row's name in sentences, as the terminal table's Method and Setting columns show it: the
    method and what differs from its defaults (``lora rank=4``; ``full`` for exactly the defaults)."""
    setting = display_setting(rec) if rec.get("method_settings") is not None else str(rec.get("setting") or "")
    return f"{rec['method']} {setting}".strip() if setting and setting not in ("-", DEFAULTS_LABEL) else str(rec["method"])


def groups(table: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """The table's comparisons: one per model, task and budget, in order of appearance."""
    within = [k for k in COMPARE_KEYS if k in table.columns]
    return [(key if isinstance(key, tuple) else (key,), sub)
            for key, sub in table.groupby(within, dropna=False, sort=False)]


def rank_sweeps(table: pd.DataFrame, runs: pd.DataFrame | None = None, results_dir: str | os.PathLike[str] | None = None
                ) -> list[dict[str, Any]]:
    """Each method with two or more ranks in one model, task and budget (all else equal but the rank).

    Returns one dict per sweep: ``key`` (model, task, budget unit, budget), ``method``, ``rows`` (per
    rank: rank, n_seeds, score_mean, score_ci_low, score_ci_high, vs_best and p_vs_best within the
    sweep, update_effective_rank, update_stable_rank, and did_not_learn where the table has it),
    ``best_rank``, ``smallest_tied_rank`` (the smallest rank that is the best or not distinguishable
    from it by the Welch test, among the ranks that learned (:func:`did_not_learn`); None with fewer
    than 2 seeds, or when the best rank did not learn) and ``similarity`` (Hu et al.'s subspace
    similarity between ranks, see :func:`subspace_similarity`, where the runs' JSON files hold
    singular vectors).
    """
    sweeps = []
    for key, sub in groups(table):
        ranked = sub[sub["rank"].notna()]
        for method, rows in ranked.groupby("method", sort=False):
            first = rows.iloc[0]
            same = rows["method_settings"].map(_without_rank) == _without_rank(first["method_settings"])
            rows = rows[same.to_numpy() & np.isclose(floats(rows["lr"]), floats(rows["lr"])[0], equal_nan=True)]
            if rows["rank"].nunique() < 2:
                continue
            tested = significance(rows.drop(columns=["score_ci_low", "score_ci_high", "vs_best", "p_vs_best"],
                                            errors="ignore")).sort_values("rank", kind="mergesort")
            keep = [c for c in ("rank", "n_seeds", "score_mean", "score_ci_low", "score_ci_high", "vs_best",
                                "p_vs_best", "update_effective_rank", "update_stable_rank", "setting_key",
                                "did_not_learn")
                    if c in tested.columns]
            records = tested[keep].to_dict("records")
            best = [r for r in records if r["vs_best"] == "best"]
            # A rank that did not learn is never the one to pick, however the Welch test ties it;
            # nor is any rank tied with a best rank that did not learn.
            good = [] if any(is_marked(r.get("did_not_learn")) for r in best) else [
                r["rank"] for r in records if r["vs_best"] in ("best", "tied") and not is_marked(r.get("did_not_learn"))]
            sweeps.append({
                "key": key, "method": method, "rows": records, "best_rank": best[0]["rank"] if best else None,
                "smallest_tied_rank": min(good) if good else None,
                "similarity": subspace_similarity(records, runs, results_dir),
            })
    return sweeps


def _without_rank(method_settings: str) -> str:
    try:
        settings = json.loads(method_settings or "{}")
    except ValueError:
        return method_settings
    return json.dumps({k: v for k, v in settings.items() if k != "rank"}, sort_keys=True) if isinstance(settings, dict) else method_settings


def decode_vectors(encoded: dict[str, Any]) -> np.ndarray:
    """The ``in x k`` float16 vectors :func:`peftbench.spectrum.encode_vectors` stored, as float64."""
    data = np.frombuffer(base64.b64decode(encoded["float16_base64"]), dtype=np.float16)
    return data.reshape(encoded["shape"]).astype(np.float64)


def phi(v1: np.ndarray, v2: np.ndarray, k: int) -> float:
    """Hu et al. 2021, eq. 4: ``||V1_k^T V2_k||_F^2 / k``, the overlap of two top-``k`` subspaces
    (0: orthogonal, 1: the same). Args: v1, v2: ``(in, >= k)`` orthonormal columns."""
    return float(np.sum((v1[:, :k].T @ v2[:, :k]) ** 2) / k)


def subspace_similarity(records: list[dict[str, Any]], runs: pd.DataFrame | None,
                        results_dir: str | os.PathLike[str] | None) -> list[dict[str, Any]]:
    """For every pair of ranks ``r1 < r2``: the mean over layers of :func:`phi` of the top
    ``k = min(r1, r2, stored)`` right singular vectors of the updates, for the lowest seed of each."""
    if runs is None or results_dir is None or len(records) < 2:
        return []
    spectra = {}
    for rec in records:
        mine = runs[(runs["setting_key"].astype("str") == str(rec.get("setting_key")))
                    & (runs["status"].astype("str") == "success")].sort_values("seed")
        if mine.empty:
            continue
        layers = run_json(Path(results_dir), str(mine["run_id"].iloc[0])).get("update_spectrum") or []
        spectra[int(rec["rank"])] = {lay["name"]: decode_vectors(lay["right_vectors"]) for lay in layers
                                     if lay.get("right_vectors")}
    ranks = sorted(spectra)
    out = []
    for i, low in enumerate(ranks):
        for high in ranks[i + 1:]:
            small, large = spectra[low], spectra[high]
            common = [n for n in small if n in large]
            if not common:
                continue
            k = min(low, high, *(small[n].shape[1] for n in common), *(large[n].shape[1] for n in common))
            out.append({"ranks": (low, high), "k": k, "layers": len(common),
                        "phi": float(np.mean([phi(small[n], large[n], k) for n in common]))})
    return out


def pareto_fronts(sub: pd.DataFrame) -> dict[str, list[str]]:
    """Labels of the settings on the max-score front against training FLOPs, training time and peak
    memory (each: no other setting has as high a score for less)."""
    fronts = {}
    for name, column in (("training FLOPs", "train_flops"), ("training time", "train_time_s"),
                         ("peak memory", "peak_mem_bytes")):
        if column in sub.columns and np.isfinite(floats(sub[column])).any():
            on = pareto_front(floats(sub[column]), floats(sub["score_mean"]))
            fronts[name] = [label(r) for r, keep in zip(sub.to_dict("records"), on, strict=True) if keep]
    return fronts


def forgetting_order(sub: pd.DataFrame) -> list[tuple[str, float]]:
    """``(label, representation_drift)`` of the settings that measured it, least drift first."""
    if "representation_drift" not in sub.columns:
        return []
    rows = sub[np.isfinite(floats(sub["representation_drift"]))].sort_values("representation_drift", kind="mergesort")
    return [(label(r), float(r["representation_drift"])) for r in rows.to_dict("records")]
