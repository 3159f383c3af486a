"""Issue 14, the report side: "Which method?", did-not-learn marks, ranks, forgetting, cost, contention.

The fixed runs files are in ``tests/data/answers/`` (written by ``make_runs.py`` there, which says what
each holds).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from peftbench.report import build_report, format_sweep_table, render
from peftbench.report.answers import (
    DID_NOT_LEARN_MARK,
    contended,
    did_not_learn,
    phi,
    rank_sweeps,
)
from peftbench.report.summary import which_method

DATA = Path(__file__).resolve().parent / "data" / "answers"


def _which(folder: str) -> list[str]:
    report = build_report(DATA / folder)
    ((title, lines),) = report.which
    assert title == "sentence-transformers/all-MiniLM-L6-v2 on vader, 150 steps"
    return lines


def test_which_method_names_the_best_the_tied_the_cheapest_the_rank_and_what_did_not_learn():
    lines = _which("tied")
    assert lines[0] == "Best: full, accuracy 0.9200 (95% CI 0.9073–0.9327, 2 seeds)."
    assert lines[1].startswith("Tied with it (not distinguishable by the Welch test, p >= 0.05): ")
    for name in ("ia3 lr=0.0005 (0.9175", "lora rank=4 (0.9180", "lora rank=16 (0.9200"):
        assert name in lines[1]
    assert "rank=1 " not in lines[1] and "pfeiffer" not in lines[1]
    assert "fewest trainable parameters: ia3 lr=0.0005 (10k vs the best one’s 22.7M)" in lines[2]
    assert "least peak memory: ia3 lr=0.0005 (1.03 GiB" in lines[3]
    assert "fastest: ia3 lr=0.0005 (600 tokens/s ‡ measured under contention)" in lines[4]
    rank = next(line for line in lines if line.startswith("lora ranks 1, 4, 16"))
    assert "the smallest rank tied with the best (r=16) is r=4" in rank and "effective rank of 3.00 of 4" in rank
    not_learned = [line for line in lines if "did not learn" in line]
    assert len(not_learned) == 1 and not_learned[0].startswith(f"{DID_NOT_LEARN_MARK} pfeiffer lr=0.0005 did not learn")
    assert "hydra/sweeper=lr_search method=pfeiffer" in not_learned[0]
    forgetting = next(line for line in lines if line.startswith("Forgetting"))
    order = [forgetting.index(m) for m in ("pfeiffer", "ia3", "rank=1 ", "rank=4 ", "rank=16 ", "full")]
    assert order == sorted(order)
    assert any(line.startswith("Throughput of ia3 lr=0.0005 was measured under contention") for line in lines)


def test_which_method_when_nothing_is_tied():
    lines = _which("untied")
    assert lines[0].startswith("Best: full, accuracy 0.9205")
    assert lines[1] == "No other setting is tied with it: every other setting with 2+ seeds scored below it (Welch test, p < 0.05)."
    assert not any("Among those" in line or "did not learn" in line or "contention" in line for line in lines)


def test_which_method_with_a_single_seed_says_ties_cannot_be_judged():
    lines = _which("single_seed")
    assert lines[0] == ("With fewer than 2 seeds per setting, ties cannot be judged: the highest accuracy is "
                        "full's 0.9200 (one seed; run seed=0,1,2 to test).")
    assert not any("Tied" in line or "Best:" in line for line in lines)
    (lost,) = [line for line in lines if "did not learn" in line]
    assert "prefix lr=0.0005 did not learn: 0.5560 against the majority-class baseline 0.5535." in lost  # within 0.01


@pytest.mark.parametrize("fmt", ["text", "markdown", "latex", "html"])
def test_every_format_marks_the_setting_that_did_not_learn_and_the_contended_throughput(fmt):
    out = render(build_report(DATA / "tied"), fmt, **({"plots": {}} if fmt == "html" else {}))
    mark = r"$\oslash$" if fmt == "latex" else DID_NOT_LEARN_MARK
    busy = r"\ddag{}" if fmt == "latex" else "‡"
    pm = r" $\pm$ " if fmt == "latex" else " ± "
    assert f"0.5535{pm}0.0000{mark}" in out
    assert f"0.9175{pm}0.0106" in out and f"0.9175{pm}0.0106{mark}" not in out
    assert f"600 tok/s{busy}" in out and "Which method?" in out
    assert "hydra/sweeper=lr_search method=pfeiffer" in out.replace(r"\_", "_")


def test_csv_carries_the_answers_columns():
    table = build_report(DATA / "tied").table
    lost = table.loc[table["did_not_learn"], "method"].tolist()
    assert lost == ["pfeiffer"]
    assert table.loc[table["method"] == "ia3", "contended"].item()
    full = table[table["method"] == "full"].iloc[0]
    # threshold 0.95 x 0.92: both seeds reach it at step 100 of 150; 4800 samples at 75 samples/s.
    assert full["time_to_95"] == pytest.approx(100 / 150 * 4800 / 75)
    assert math.isnan(table.loc[table["method"] == "pfeiffer", "time_to_95"].item())
    assert full["train_flops"] == pytest.approx(6 * 22_000_000 * 19200)
    assert "did_not_learn" in render(build_report(DATA / "tied"), "csv").splitlines()[0]


def test_the_end_of_sweep_table_marks_it_too():
    out = format_sweep_table(DATA / "tied", "sweep-tied")
    marked = [line for line in out.splitlines() if line.rstrip().endswith("success") and DID_NOT_LEARN_MARK in line]
    assert len(marked) == 2 and all(line.startswith("pfeiffer") for line in marked)
    assert "did not learn" in out and DID_NOT_LEARN_MARK not in format_sweep_table(DATA / "untied", "sweep-untied")
    note = next(line for line in out.splitlines() if line.startswith(f"{DID_NOT_LEARN_MARK} did not learn"))
    assert "pfeiffer (lr 0.0005)" in note and "hydra/sweeper=lr_search method=pfeiffer" in note


def test_in_a_learning_rate_search_the_note_names_the_trials_and_suggests_no_search(tmp_path):
    """A search's trials at too high a rate do not learn; the sweep already searched, so the note
    names those rates and does not send the user to run the search they are running."""
    runs = pd.read_csv(DATA / "tied" / "runs.csv", dtype=str, keep_default_na=False)
    trials = runs[runs["method"] == "lora"].head(2).copy()
    high = trials.copy()
    high["lr"], high["score"], high["run_id"] = "3.5", high["baseline_score"], high["run_id"] + "x"
    high["setting_key"] = high["setting_key"] + "x"
    (tmp_path / "runs.csv").write_text(pd.concat([trials, high]).to_csv(index=False))
    sweep = trials["sweep_id"].iloc[0]
    note = next(line for line in format_sweep_table(tmp_path, sweep).splitlines() if "did not learn" in line)
    assert "lora (lr 3.5)" in note and "lr_search" not in note and "its best trial is what counts" in note


def test_when_no_trial_of_a_search_learned_the_note_does_not_say_others_did_better(tmp_path):
    runs = pd.read_csv(DATA / "tied" / "runs.csv", dtype=str, keep_default_na=False)
    trials = runs[runs["method"] == "lora"].head(2).copy()
    trials["lr"], trials["score"] = ["3.5", "7.0"], trials["baseline_score"]
    trials["setting_key"] = trials["setting_key"] + pd.Series(["a", "b"], index=trials.index)
    (tmp_path / "runs.csv").write_text(trials.to_csv(index=False))
    note = next(line for line in format_sweep_table(tmp_path, trials["sweep_id"].iloc[0]).splitlines()
                if "did not learn" in line)
    assert "lora (lr 3.5, 7)" in note and "did better" not in note and "lr_search" not in note
    assert "lora learned at none of the learning rates this sweep tried" in note


def test_the_note_on_a_bridged_recipe_that_did_not_learn_searches_that_recipe(tmp_path):
    """``method=loha`` rows are labelled ``peft:loha``; the sweep table's advice and the summary's both
    name ``method=loha``, whose options (and schedule) are the ones that ran."""
    import json

    runs = pd.read_csv(DATA / "tied" / "runs.csv", dtype=str, keep_default_na=False)
    lost = runs[runs["method"] == "pfeiffer"].copy()
    lost["method"] = "peft:loha"
    lost["method_settings"] = json.dumps({"options": {"alpha": 16, "r": 8, "target_modules": None},
                                          "peft_type": "loha"})
    (tmp_path / "runs.csv").write_text(lost.to_csv(index=False))
    note = next(line for line in format_sweep_table(tmp_path, lost["sweep_id"].iloc[0]).splitlines()
                if "did not learn" in line)
    assert note.endswith("`python -m peftbench -m hydra/sweeper=lr_search method=loha`")
    summary = [line for _, lines in build_report(tmp_path).which for line in lines if "did not learn" in line]
    assert summary and all(line.endswith("search one: `python -m peftbench -m hydra/sweeper=lr_search method=loha`.")
                           for line in summary)


def test_rank_sweep_table_and_subspace_similarity():
    report = build_report(DATA / "tied")
    runs = pd.read_csv(DATA / "tied" / "runs.csv", dtype=str, keep_default_na=False)
    (sweep,) = rank_sweeps(report.table, runs, DATA / "tied")
    assert [r["rank"] for r in sweep["rows"]] == [1, 4, 16]
    assert [r["vs_best"] for r in sweep["rows"]] == ["worse", "tied", "best"]
    assert sweep["smallest_tied_rank"] == 4 and sweep["best_rank"] == 16
    phis = {s["ranks"]: s["phi"] for s in sweep["similarity"]}
    assert phis[(4, 16)] == pytest.approx(1.0, abs=0.01)  # the same top 4 directions (to float16)
    assert phis[(1, 4)] < 0.1 and phis[(1, 16)] < 0.1
    assert any("Which rank? lora" in title for title, *_ in report.sections)


def test_phi_is_hu_et_al_normalised_overlap():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((50, 6)))
    assert phi(q, q, 3) == pytest.approx(1.0)
    assert phi(q[:, :3], q[:, 3:], 3) == pytest.approx(0.0, abs=1e-12)


def test_did_not_learn_needs_the_scores_near_the_baseline():
    assert did_not_learn(np.array([0.5535, 0.5535]), 0.5535) == (True, 1.0)
    assert did_not_learn(np.array([0.55, 0.557]), 0.5535)[0]  # noise around the baseline
    assert not did_not_learn(np.array([0.90, 0.60]), 0.5535)[0]  # too noisy to test, but far above it
    assert not did_not_learn(np.array([0.91, 0.92]), 0.5535)[0]
    assert did_not_learn(np.array([0.56]), 0.5535) == (True, pytest.approx(math.nan, nan_ok=True))
    assert not did_not_learn(np.array([0.60]), 0.5535)[0]
    assert not did_not_learn(np.array([0.5535]), math.nan)[0]


def test_contention_rule():
    runs = pd.DataFrame({"cpu_util": [0.9, 0.3, 0.9, np.nan, np.nan], "load_avg_1m_end": [2.0, 2.0, 9.0, np.nan, np.nan],
                         "cpu_count": [2, 2, 2, np.nan, np.nan],
                         "gpu_other_mem_bytes": [np.nan, np.nan, np.nan, 3 * 2**30, 0],
                         "gpu_util_pct": [np.nan, np.nan, np.nan, np.nan, 0.0]})
    assert contended(runs).tolist() == [False, True, True, True, False]


def test_old_runs_files_get_no_answers():
    golden = Path(__file__).resolve().parent / "data" / "report_golden"
    report = build_report(golden)
    assert report.which == [] and report.sections == [] and "did_not_learn" not in report.table.columns
    assert which_method(report.table)  # the function itself still answers from the table alone


def test_the_sweeps_wandb_report_run_gets_the_answers_and_rank_tables(offline, tmp_path):  # noqa: F811
    import json

    from peftbench.report import load_runs, log_sweep_to_wandb
    from peftbench.report.wandb_table import ANSWERS_TABLE_COLUMNS
    from tests.wandb_log import _nested, _records_once_complete

    run_id = log_sweep_to_wandb(load_runs(DATA / "tied"), "sweep-tied", project="peftbench-test", mode="offline",
                                dir=tmp_path / "wb")
    (path,) = (tmp_path / "wb").glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")
    history = {}
    for record in _records_once_complete(path):
        if record.WhichOneof("record_type") == "history":
            history.update(_nested(record.history.item))
    assert history["answers.nrows"] == 6 and history["rank_sweeps.nrows"] == 3
    table = json.loads((path.parent / "files" / history["answers.path"]).read_text(encoding="utf-8"))
    assert table["columns"] == list(ANSWERS_TABLE_COLUMNS)
    rows = {r[2]: dict(zip(table["columns"], r, strict=True)) for r in table["data"] if r[2] != "lora"}
    assert rows["pfeiffer"]["did_not_learn"] is True and rows["full"]["did_not_learn"] is False
    assert rows["full"]["representation_drift"] == pytest.approx(0.125)


def test_the_search_command_of_a_bridged_method_names_its_peft_type():
    from peftbench.report.answers import search_command

    assert search_command("lora").endswith("hydra/sweeper=lr_search method=lora")
    assert search_command("peft:loha").endswith("method=peft method.peft_type=loha")


def test_the_search_command_of_a_bridged_recipe_names_the_recipe_that_ran():
    """``method=loha`` records ``peft:loha`` with the recipe's options; searching ``method=peft
    method.peft_type=loha`` would search peft's defaults (another alpha, schedule and starting rate)."""
    import json

    from peftbench.report.answers import search_command

    recipe = json.dumps({"options": {"alpha": 16, "r": 8, "target_modules": None}, "peft_type": "loha"})
    assert search_command("peft:loha", recipe).endswith("hydra/sweeper=lr_search method=loha")
    assert search_command("peft:lokr", recipe.replace("loha", "lokr")).endswith("method=lokr")
    other = json.dumps({"options": {"alpha": 32, "r": 8, "target_modules": None}, "peft_type": "loha"})
    assert search_command("peft:loha", other).endswith("method=peft method.peft_type=loha")
    assert search_command("peft:loha", json.dumps({"options": {}, "peft_type": "loha"})).endswith(
        "method=peft method.peft_type=loha")
    assert search_command("peft:loha", "not json").endswith("method=peft method.peft_type=loha")


# Generation tasks (causal LM, exact match) have no majority class: a run is judged against the
# pretrained model's zero-shot score (train.eval_at_start) and the floor 0.


def _gen(method: str, seed: int, score: float, key: str, zero_shot: float | None = 0.0, **overrides) -> dict:
    """A SmolLM2 run on arithmetic (exact match) as the harness records it: no baseline_score."""
    from tests.test_report_data import make_run

    return make_run(method=method, seed=seed, score=score, setting_key=key, model="HuggingFaceTB/SmolLM2-135M",
                    task="arithmetic", metric="exact_match", baseline_score="",
                    zero_shot_score="" if zero_shot is None else zero_shot, cpu_util=0.9, load_avg_1m_end=1.0,
                    cpu_count=4, budget_unit="steps", budget=60, **overrides)


def _gen_lora(rank: int, seed: int, score: float, **overrides) -> dict:
    import json

    return _gen("lora", seed, score, f"r{rank}", rank=rank, method_settings=json.dumps({"rank": rank}),
                trainable_params=1000 * rank, **overrides)


def _generation_folder(tmp_path: Path) -> Path:
    """full learned but noisy (0.10, 0.60); lora r=4 and r=16 scored 0 in every seed, as they did before
    training, and have far fewer parameters: tied with full by the Welch test, the trap of 'cheapest'."""
    from tests.test_report_data import write_runs

    return write_runs(tmp_path / "gen", [
        _gen("full", 0, 0.10, "f"), _gen("full", 1, 0.60, "f"),
        *(_gen_lora(r, s, 0.0) for r in (4, 16) for s in (0, 1)),
    ]).parent


def test_did_not_learn_without_a_majority_class_needs_a_clear_gain_over_zero_shot():
    assert did_not_learn(np.array([0.0, 0.0]), math.nan, zero_shot=0.0)[0]
    assert did_not_learn(np.array([0.0]), math.nan)[0]  # no zero-shot recorded: the floor 0
    assert did_not_learn(np.array([0.004]), math.nan)[0]
    assert did_not_learn(np.array([0.30, 0.305]), math.nan, zero_shot=0.30)[0]  # no better than before training
    assert did_not_learn(np.array([0.20, 0.22]), math.nan, zero_shot=0.30)[0]  # worse than before training
    assert did_not_learn(np.array([0.0]), math.nan, zero_shot=-0.2)[0]  # a correlation of 0 learned nothing
    assert not did_not_learn(np.array([0.40, 0.45]), math.nan, zero_shot=0.30)[0]
    assert not did_not_learn(np.array([0.02]), math.nan)[0]
    # Classification keeps its majority-class rule, whatever the zero-shot score.
    assert not did_not_learn(np.array([0.60]), 0.5535, zero_shot=0.60)[0]


def test_a_generation_setting_that_scored_0_did_not_learn_and_is_not_recommended(tmp_path):
    report = build_report(_generation_folder(tmp_path))
    table = report.table.set_index("setting_key")
    assert table.loc[["r4", "r16"], "did_not_learn"].all() and not table.loc["f", "did_not_learn"]
    assert table.loc["r4", "vs_best"] == "tied"  # the trap is set: the Welch test alone ties them
    ((_, lines),) = report.which
    assert lines[0].startswith("Best: full")
    assert not any(line.startswith(("Tied with it", "Among those")) for line in lines)
    assert any(line.startswith("Not distinguishable from it by the Welch test, but left out because they did "
                               "not learn") for line in lines)
    assert any("lora ranks 4, 16: no rank learned" in line for line in lines)
    lost = [line for line in lines if "did not learn:" in line]
    assert len(lost) == 2 and all("against the pretrained model's zero-shot score 0.0000" in line for line in lost)
    (sweep,) = rank_sweeps(report.table)
    assert sweep["smallest_tied_rank"] is None


def test_when_no_generation_setting_learned_none_is_recommended(tmp_path):
    from tests.test_report_data import write_runs

    folder = write_runs(tmp_path / "none", [_gen_lora(r, s, 0.0, zero_shot=None) for r in (4, 16) for s in (0, 1)]).parent
    ((_, lines),) = build_report(folder).which
    assert lines[0].startswith("No setting learned: no mean score beats 0 (no zero-shot score recorded) by 0.01")
    assert not any(line.startswith(("Best:", "Tied", "Among those", "Compute efficiency")) for line in lines)


def test_the_end_of_sweep_table_marks_a_generation_setting_that_did_not_learn(tmp_path):
    out = format_sweep_table(_generation_folder(tmp_path), "sweepA")
    marked = [line for line in out.splitlines() if line.rstrip().endswith("success") and DID_NOT_LEARN_MARK in line]
    assert len(marked) == 4 and all(line.startswith("lora") for line in marked)
    assert "without one not above the zero-shot score and 0 by 0.01" in out


def _with_curves(tmp_path: Path, rows: list[tuple[dict, list[tuple[int, float]]]]) -> Path:
    """Writes the runs and each one's ``runs/<run_id>.json`` evaluation curve (step 0: zero-shot)."""
    import json

    from tests.test_report_data import write_runs

    folder = write_runs(tmp_path / "curves", [run for run, _ in rows]).parent
    (folder / "runs").mkdir()
    for run, curve in rows:
        (folder / "runs" / f"{run['run_id']}.json").write_text(json.dumps({"eval_curve": curve}), encoding="utf-8")
    return folder


def test_time_to_95_is_empty_for_a_setting_that_never_beat_zero_shot(tmp_path):
    """full stays at its zero-shot 0.50 (did not learn): the zero-shot point already meets 95% of the
    best (0.95 x 0.52), which once read as 0.0 s. lora beats zero-shot at step 20 of 60."""
    from peftbench.report.summary import answer_rows

    timing = {"train_steps": 60, "train_samples": 960, "train_samples_per_s": 16.0}  # 60 s of training
    flat = [(0, 0.50), (20, 0.45), (40, 0.50), (60, 0.50)]
    rising = [(0, 0.50), (20, 0.51), (40, 0.52), (60, 0.52)]
    folder = _with_curves(tmp_path, [
        (_gen("full", 0, 0.50, "f", zero_shot=0.50, **timing), flat),
        (_gen("full", 1, 0.50, "f", zero_shot=0.50, **timing), flat),
        (_gen_lora(4, 0, 0.52, zero_shot=0.50, **timing), rising),
        (_gen_lora(4, 1, 0.52, zero_shot=0.50, **timing), rising),
    ])
    report = build_report(folder)
    table = report.table.set_index("setting_key")
    assert table.loc["f", "did_not_learn"] and not table.loc["r4", "did_not_learn"]
    assert math.isnan(table.loc["f", "time_to_95"])
    assert table.loc["r4", "time_to_95"] == pytest.approx(20 / 60 * 960 / 16)
    rows = {row[0]: row[-1] for row in answer_rows(report.table)}
    assert rows == {"full": "-", "lora": "20.0 s"}


def test_time_to_95_is_empty_when_every_setting_scored_0(tmp_path):
    timing = {"train_steps": 60, "train_samples": 960, "train_samples_per_s": 16.0}
    zeros = [(0, 0.0), (20, 0.0), (40, 0.0), (60, 0.0)]
    folder = _with_curves(tmp_path, [(_gen_lora(r, s, 0.0, **timing), zeros) for r in (4, 16) for s in (0, 1)])
    assert build_report(folder).table["time_to_95"].isna().all()
