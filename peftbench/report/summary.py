"""The answers in words and small tables: "Which method?" at the top of the report, the rank sweeps,
forgetting and compute efficiency below the comparison, and the notes on the marks.

Every sentence is built from the comparison table the report shows (with the columns of
:func:`peftbench.report.answers.setting_answers`) and the tests it already ran (``vs_best``: the
Welch test against the best setting); nothing is claimed that the table does not hold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from peftbench.report.answers import (
    CONTENTION_MARK,
    CPU_UTIL_MIN,
    DID_NOT_LEARN_MARGIN,
    DID_NOT_LEARN_MARK,
    GPU_OTHER_MEM_MAX,
    GPU_UTIL_MAX,
    LOAD_PER_CORE_MAX,
    SCORE_FLOOR,
    TIME_TO_FRACTION,
    forgetting_order,
    groups,
    is_marked,
    label,
    pareto_fronts,
    search_command,
)
from peftbench.report.cells import budget_label, human_bytes, human_count, missing
from peftbench.report.defaults import display_setting
from peftbench.report.stats import ALPHA

ANSWER_NOTES = (
    f"{DID_NOT_LEARN_MARK} after a score: did not learn: the score is not distinguishable from the "
    "majority-class baseline of the evaluation split (2+ seeds: a two-sided one-sample t-test of the seeds "
    f"against it at alpha={ALPHA:g}, and a mean within {DID_NOT_LEARN_MARGIN:g} of it; one seed: within "
    f"{DID_NOT_LEARN_MARGIN:g}); without a majority class (generation, regression): a mean that does not beat "
    f"the zero-shot score (the pretrained model's, train.eval_at_start=true) and {SCORE_FLOOR:g} by "
    f"{DID_NOT_LEARN_MARGIN:g} or more. The likely cause is the learning rate or the budget.",
    f"{CONTENTION_MARK} after a throughput: measured under contention (the machine was busy while it "
    f"trained): on CPU the process used under {CPU_UTIL_MIN:.0%} of wall time x threads, or the 1-minute "
    f"load average ended above {LOAD_PER_CORE_MAX:g} per core; on CUDA others held over "
    f"{human_bytes(GPU_OTHER_MEM_MAX)} of device memory or kept it over {GPU_UTIL_MAX:g}% busy at the start. "
    "Compare such speeds with care.",
    "Effective rank (Roy and Vetterli 2007): exp of the entropy of the normalised singular values of each "
    "changed weight matrix's update W - W0, averaged over matrices; stable rank: ||ΔW||_F² / ||ΔW||_2².",
    "Drift: 1 - linear CKA (Kornblith et al. 2019) between the pretrained and the tuned model's final hidden "
    "states on a reference text held out from the task (forgetting_reference); ref loss Δ: tuned minus "
    "pretrained per-token cross-entropy there (causal LMs).",
    f"Time to {TIME_TO_FRACTION:.0%}: training time until an evaluation after the start (train.eval_every) "
    f"first reached {TIME_TO_FRACTION:.0%} of the best learned setting's mean score and beat the zero-shot "
    f"score; empty when a seed never did and for a setting that did not learn ({DID_NOT_LEARN_MARK}).",
)


def _g(value: Any, digits: int = 4) -> str:
    return "-" if missing(value) else f"{float(value):.{digits}f}"


def _comparison_title(key: tuple) -> str:
    model, task, *budget = key
    return f"{model or '-'} on {task or '-'}" + (f", {budget_label(*budget)}" if len(budget) == 2 else "")


def which_method(table: pd.DataFrame, sweeps: list[dict[str, Any]] | None = None) -> list[tuple[str, list[str]]]:
    """"Which method?" per model, task and budget: ``[(title, sentences)]``, each sentence drawn from
    ``table`` (a comparison table with the answers' columns) and ``sweeps`` (:func:`rank_sweeps`)."""
    out = []
    for key, sub in groups(table):
        lines = _best_and_cheapest(sub)
        for sweep in sweeps or []:
            if tuple(sweep["key"]) == key:
                lines.append(_rank_sentence(sweep))
        lines += _not_learned(sub)
        order = forgetting_order(sub)
        if order:
            ranking = ", ".join(f"{name} ({drift:.4f})" for name, drift in order)
            lines.append(f"Forgetting, least to most representation drift on the reference text: {ranking}.")
        learned = sub[[_learned(r) for r in sub.to_dict("records")]]
        fronts = pareto_fronts(learned)  # a setting that did not learn is no bargain, however cheap
        if fronts and len(learned) > 1:
            among = "the settings" if len(learned) == len(sub) else "among the settings that learned, those"
            lines.append(f"Compute efficiency, {among} no other beats on score for less: " + "; ".join(
                f"{name}: {', '.join(names)}" for name, names in fronts.items()) + ".")
        busy = [label(r) for r in sub.to_dict("records") if is_marked(r.get("contended"))]
        if busy:
            lines.append(f"Throughput of {', '.join(busy)} was measured under contention ({CONTENTION_MARK}): "
                         "rerun on a quiet machine before comparing speeds.")
        out.append((_comparison_title(key), lines))
    return out


def _learned(rec: dict[str, Any]) -> bool:
    return not is_marked(rec.get("did_not_learn"))


def _nothing_learned(records: list[dict[str, Any]]) -> str:
    baselines = sorted({_g(r.get("baseline_score")) for r in records if not missing(r.get("baseline_score"))})
    if not baselines:  # no majority class: judged against the zero-shot score (and the floor)
        zero_shot = sorted({_g(r.get("zero_shot_score")) for r in records if not missing(r.get("zero_shot_score"))})
        against = (f"the zero-shot score ({', '.join(zero_shot)}) or {SCORE_FLOOR:g}, whichever is higher"
                   if zero_shot else f"{SCORE_FLOOR:g} (no zero-shot score recorded)")
        return (f"No setting learned: no mean score beats {against} by {DID_NOT_LEARN_MARGIN:g} or more "
                f"({DID_NOT_LEARN_MARK} below), so none is recommended. The learning rate or the budget is the "
                "likely cause.")
    return (f"No setting learned: every score is within {DID_NOT_LEARN_MARGIN:g} of the majority-class baseline "
            f"({', '.join(baselines)}) and not distinguishable from it ({DID_NOT_LEARN_MARK} below), so none is "
            "recommended. The learning rate or the budget is the likely cause.")


def _judged_against(rec: dict[str, Any]) -> str:
    """What a setting that did not learn was measured against, in words (see ``did_not_learn``)."""
    if not missing(rec.get("baseline_score")):
        p = "" if missing(rec.get("p_vs_baseline")) else f", one-sample t-test p={float(rec['p_vs_baseline']):.2g}"
        return f"the majority-class baseline {_g(rec['baseline_score'])}{p}"
    if missing(rec.get("zero_shot_score")):
        return (f"{SCORE_FLOOR:g}, which it must beat by {DID_NOT_LEARN_MARGIN:g} (no zero-shot score recorded: "
                "train.eval_at_start=true records one)")
    return (f"the pretrained model's zero-shot score {_g(rec['zero_shot_score'])}, which it must beat (and "
            f"{SCORE_FLOOR:g}) by {DID_NOT_LEARN_MARGIN:g}")


def _best_and_cheapest(sub: pd.DataFrame) -> list[str]:
    records = sub.to_dict("records")
    metric = str(records[0].get("metric") or "score")
    if not any(_learned(r) for r in records):
        return [_nothing_learned(records)]
    best = [r for r in records if r.get("vs_best") == "best"]
    if not best:
        top = max(records, key=lambda r: -math.inf if missing(r["score_mean"]) else r["score_mean"])
        if not _learned(top):
            return [f"With fewer than 2 seeds per setting, ties cannot be judged; the highest {metric}, "
                    f"{label(top)}'s {_g(top['score_mean'])}, did not learn ({DID_NOT_LEARN_MARK} below), so none "
                    "is recommended (run seed=0,1,2 to test the others)."]
        return [f"With fewer than 2 seeds per setting, ties cannot be judged: the highest {metric} is "
                f"{label(top)}'s {_g(top['score_mean'])} (one seed; run seed=0,1,2 to test)."]
    best = best[0]
    untested = [label(r) for r in records if r.get("vs_best") == "n/a"]
    if not _learned(best):
        lines = [f"No recommendation: the highest {metric} with 2+ seeds, {label(best)}'s {_g(best['score_mean'])} "
                 f"({_ci(best)}), did not learn ({DID_NOT_LEARN_MARK} below), and no setting is tested against one "
                 "that learned."]
        return lines + ([f"Not tested (one seed): {', '.join(untested)}."] if untested else [])
    lines = [f"Best: {label(best)}, {metric} {_g(best['score_mean'])} ({_ci(best)}, {best['n_seeds']} seeds)."]
    tied = [r for r in records if r.get("vs_best") == "tied" and _learned(r)]
    tied_lost = [r for r in records if r.get("vs_best") == "tied" and not _learned(r)]
    worse = [r for r in records if r.get("vs_best") == "worse"]
    if len(records) == 1:
        lines.append("It is the only setting compared.")
    elif not (tied or tied_lost or worse):
        lines.append("It is the only setting with 2+ seeds: no other is compared with it.")
    elif not tied and not tied_lost:
        lines.append(f"No other setting is tied with it: every other setting with 2+ seeds scored below it "
                     f"(Welch test, p < {ALPHA:g}).")
    elif not tied:
        lines.append("No other setting that learned is tied with it.")
    else:
        names = ", ".join(f"{label(r)} ({_g(r['score_mean'])}, p={float(r['p_vs_best']):.2g})" for r in tied)
        lines.append(f"Tied with it (not distinguishable by the Welch test, p >= {ALPHA:g}): {names}.")
    if tied_lost:
        names = ", ".join(f"{label(r)} ({_g(r['score_mean'])}, p={float(r['p_vs_best']):.2g})" for r in tied_lost)
        lines.append(f"Not distinguishable from it by the Welch test, but left out because they did not learn "
                     f"({DID_NOT_LEARN_MARK} below): {names}.")
    if tied:
        pool = [best, *tied]
        for what, column, text in (("fewest trainable parameters", "trainable_params", human_count),
                                   ("least peak memory", "peak_mem_bytes", human_bytes)):
            cheapest = _least(pool, column)
            if cheapest is not None:
                lines.append(f"Among those, the {what}: {label(cheapest)} ({text(cheapest[column])}"
                             f"{'' if cheapest is best else f' vs the best one’s {text(best[column])}'}).")
        fastest = _least(pool, "train_tokens_per_s", highest=True)
        if fastest is not None:
            busy = f" {CONTENTION_MARK} measured under contention" if is_marked(fastest.get("contended")) else ""
            lines.append(f"Among those, the fastest: {label(fastest)} ({float(fastest['train_tokens_per_s']):,.0f} "
                         f"tokens/s{busy}).")
    if untested:
        lines.append(f"Not tested (one seed): {', '.join(untested)}.")
    return lines


def _ci(rec: dict[str, Any]) -> str:
    if missing(rec.get("score_ci_low")):
        return "no CI"
    return f"95% CI {_g(rec['score_ci_low'])}–{_g(rec['score_ci_high'])}"


def _least(records: list[dict[str, Any]], column: str, highest: bool = False) -> dict[str, Any] | None:
    valid = [r for r in records if not missing(r.get(column))]
    if not valid:
        return None
    return (max if highest else min)(valid, key=lambda r: float(r[column]))


def _rank_sentence(sweep: dict[str, Any]) -> str:
    ranks = ", ".join(str(r["rank"]) for r in sweep["rows"])
    lost = [r["rank"] for r in sweep["rows"] if is_marked(r.get("did_not_learn"))]
    if len(lost) == len(sweep["rows"]):
        return (f"{sweep['method']} ranks {ranks}: no rank learned ({DID_NOT_LEARN_MARK} below), so no rank is "
                "recommended.")
    if sweep["best_rank"] in lost:
        return (f"{sweep['method']} ranks {ranks}: the highest-scoring rank, r={sweep['best_rank']}, did not learn "
                f"({DID_NOT_LEARN_MARK} below), so no rank is recommended.")
    smallest = sweep["smallest_tied_rank"]
    if smallest is None:
        return f"{sweep['method']} ranks {ranks}: with fewer than 2 seeds per rank the smallest rank tied with the best cannot be judged."
    row = next(r for r in sweep["rows"] if r["rank"] == smallest)
    used = "" if missing(row.get("update_effective_rank")) else (
        f"; its updates used an effective rank of {float(row['update_effective_rank']):.2f} of {smallest}")
    if smallest == sweep["best_rank"]:
        return f"{sweep['method']} ranks {ranks}: the best rank, r={smallest} ({_g(row['score_mean'])}), is also the smallest not below the best{used}."
    return (f"{sweep['method']} ranks {ranks}: the smallest rank tied with the best (r={sweep['best_rank']}) is "
            f"r={smallest} ({_g(row['score_mean'])}, Welch p={float(row['p_vs_best']):.2g}){used}.")


def _not_learned(sub: pd.DataFrame) -> list[str]:
    lines = []
    for rec in sub.to_dict("records"):
        if not is_marked(rec.get("did_not_learn")):
            continue
        lines.append(
            f"{DID_NOT_LEARN_MARK} {label(rec)} did not learn: {_g(rec['score_mean'])} against "
            f"{_judged_against(rec)}. The learning rate or the budget is the likely cause; "
            f"search one: `{search_command(rec['method'], rec.get('method_settings'))}`.")
    return lines


ANSWER_HEADERS = ("Method", "Setting", "Score", "Baseline", "Zero-shot", "Eff. rank", "Stable rank", "Drift",
                  "Ref loss Δ", "Train FLOPs", f"Time to {TIME_TO_FRACTION:.0%}")
RANK_HEADERS = ("Method", "Rank", "Seeds", "Score", "95% CI", "vs best rank", "Eff. rank", "Stable rank")


def answer_rows(sub: pd.DataFrame) -> list[list[str]]:
    """One row per setting of one comparison (see :data:`ANSWER_HEADERS`)."""
    rows = []
    for r in sub.to_dict("records"):
        mark = DID_NOT_LEARN_MARK if is_marked(r.get("did_not_learn")) else ""
        rows.append([str(r["method"]), display_setting(r), _g(r["score_mean"]) + mark, _g(r.get("baseline_score")),
                     _g(r.get("zero_shot_score")), _g(r.get("update_effective_rank"), 2),
                     _g(r.get("update_stable_rank"), 2), _g(r.get("representation_drift")),
                     _g(r.get("ref_loss_delta")), _flops(r.get("train_flops")),
                     "-" if missing(r.get("time_to_95")) else f"{float(r['time_to_95']):.1f} s"])
    return rows


def _flops(value: Any) -> str:
    return "-" if missing(value) else f"{float(value):.3g}"


def rank_rows(sweep: dict[str, Any]) -> list[list[str]]:
    """One row per rank of one sweep (see :data:`RANK_HEADERS`)."""
    rows = []
    for r in sweep["rows"]:
        ci = "-" if missing(r.get("score_ci_low")) else f"{_g(r['score_ci_low'])}–{_g(r['score_ci_high'])}"
        verdict = str(r.get("vs_best") or "")
        if verdict in ("tied", "worse") and not missing(r.get("p_vs_best")):
            verdict += f" (p={float(r['p_vs_best']):.2g})"
        mark = DID_NOT_LEARN_MARK if is_marked(r.get("did_not_learn")) else ""
        rows.append([sweep["method"], str(r["rank"]), str(r["n_seeds"]), _g(r["score_mean"]) + mark, ci, verdict,
                     _g(r.get("update_effective_rank"), 2), _g(r.get("update_stable_rank"), 2)])
    return rows


def similarity_lines(sweep: dict[str, Any]) -> list[str]:
    """Hu et al.'s subspace similarity between each pair of the sweep's ranks."""
    return [f"{sweep['method']}: subspace similarity φ(r={a}, r={b}) of the top {s['k']} update direction(s) "
            f"= {s['phi']:.3f} (mean over {s['layers']} layers; 1: the same directions, ~k/in: unrelated)."
            for s in sweep["similarity"] for a, b in [s["ranks"]]]


def answer_sections(table: pd.DataFrame, sweeps: list[dict[str, Any]]) -> list[tuple[str, tuple, list[list[str]], list[str]]]:
    """The tables under the comparison: ``[(title, headers, rows, lines under it)]``."""
    sections = []
    for key, sub in groups(table):
        sections.append((f"Answers: {_comparison_title(key)}", ANSWER_HEADERS, answer_rows(sub), []))
        for sweep in sweeps:
            if tuple(sweep["key"]) == key:
                sections.append((f"Which rank? {sweep['method']} on {_comparison_title(key)}", RANK_HEADERS,
                                 rank_rows(sweep), similarity_lines(sweep)))
    return sections


def contention_flags(table: pd.DataFrame) -> np.ndarray:
    """Per row of the table: its throughput was measured under contention."""
    if "contended" not in table.columns:
        return np.zeros(len(table), dtype=bool)
    return table["contended"].fillna(False).to_numpy(dtype=bool)
