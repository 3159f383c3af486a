"""Confidence intervals and the Welch t-test against the best setting, checked against a hand computation."""

from __future__ import annotations

import csv
import math

import pytest
from scipy import stats

from peftbench import report
from peftbench.report import build_report, comparison_table, load_runs, render

# One model, two tasks. Scores per seed, chosen so the statistics come out round by hand.
SCORES = {
    ("vader", "lora", 1e-3): [0.80, 0.82, 0.84],  # mean 0.82, sample std 0.02: the best on vader
    ("vader", "lora", 1e-4): [0.70, 0.71, 0.72],  # mean 0.71, std 0.01: clearly below
    ("vader", "ia3", 3e-3): [0.79, 0.81, 0.80],  # mean 0.80, std 0.01: within the noise of the best
    ("vader", "full", 5e-5): [0.90],  # one seed: highest mean, but no interval and no test
    ("sst2", "lora", 1e-3): [0.50, 0.50],  # std 0 on both: equal means are tied (p = 1)
    ("sst2", "ia3", 3e-3): [0.50, 0.50],
    ("sst2", "full", 5e-5): [0.40, 0.40],  # std 0, lower mean: worse (p = 0)
}
T_975_2 = 4.302652729749462  # Student's t, 97.5% quantile, 2 degrees of freedom (tables: 4.303)


def write_runs(path, scores=SCORES):
    with open(path / "runs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(report.RUN_COLUMNS))
        writer.writeheader()
        number = 0
        for (task, method, lr), values in scores.items():
            for seed, score in enumerate(values):
                number += 1
                writer.writerow({"run_id": f"r{number}", "sweep_id": "s", "status": "success", "method": method,
                                 "model": "minilm", "task": task, "seed": seed, "lr": lr, "method_settings": "{}",
                                 "trainable_params": 1000, "total_params": 10000, "score": score,
                                 "metric": "accuracy"})
    return path


def _row(table, task, method):
    (row,) = table[(table["task"] == task) & (table["method"] == method) & (table["lr"] != 1e-4)].to_dict("records")
    return row


def test_intervals_and_welch_marks_agree_with_a_hand_computation(tmp_path):
    table = comparison_table(load_runs(write_runs(tmp_path)))
    best = _row(table, "vader", "lora")
    low = table[(table["task"] == "vader") & (table["lr"] == 1e-4)].iloc[0]
    ia3, full = _row(table, "vader", "ia3"), _row(table, "vader", "full")

    # 95% CI = mean ± t(0.975, n-1) · s / sqrt(n); with n = 3: 4.302653 · s / 1.732051.
    # best: 0.82 ± 4.302653 · 0.02 / 1.732051 = 0.82 ± 0.049683 -> [0.770317, 0.869683]
    assert best["score_mean"] == pytest.approx(0.82) and best["score_std"] == pytest.approx(0.02)
    assert best["score_ci_low"] == pytest.approx(0.770317, abs=1e-6)
    assert best["score_ci_high"] == pytest.approx(0.869683, abs=1e-6)
    # lr 1e-4: 0.71 ± 4.302653 · 0.01 / 1.732051 = 0.71 ± 0.024841 -> [0.685159, 0.734841]
    assert low["score_ci_low"] == pytest.approx(0.685159, abs=1e-6)
    assert low["score_ci_high"] == pytest.approx(0.734841, abs=1e-6)
    assert 0.82 + T_975_2 * 0.02 / math.sqrt(3) == pytest.approx(best["score_ci_high"])

    # The best: highest mean among settings with >= 2 seeds (full has one seed, so it is n/a).
    assert best["vs_best"] == "best" and math.isnan(best["p_vs_best"])
    assert full["vs_best"] == "n/a" and math.isnan(full["score_ci_low"]) and math.isnan(full["p_vs_best"])

    # Welch, lr 1e-4 vs best: se² = 0.01²/3 + 0.02²/3 = 0.0005/3; t = -0.11 / sqrt(0.0005/3) = -8.520563;
    # df = (0.0005/3)² / ((0.0001/3)²/2 + (0.0004/3)²/2) = 50/17 = 2.941176; p = 2·P(T_df > 8.520563) = 0.00366.
    assert low["p_vs_best"] == pytest.approx(0.0036600, rel=1e-4)
    assert low["vs_best"] == "worse"  # p < 0.05
    # ia3 vs best: t = -0.02 / sqrt(0.0005/3) = -1.549193, df = 50/17; p = 0.220881: not distinguishable.
    assert ia3["p_vs_best"] == pytest.approx(0.220881, rel=1e-4)
    assert ia3["vs_best"] == "tied"
    # The same p-values from scipy's own Welch test on the raw seeds.
    assert low["p_vs_best"] == pytest.approx(
        stats.ttest_ind([0.70, 0.71, 0.72], [0.80, 0.82, 0.84], equal_var=False).pvalue)
    assert ia3["p_vs_best"] == pytest.approx(
        stats.ttest_ind([0.79, 0.81, 0.80], [0.80, 0.82, 0.84], equal_var=False).pvalue)

    # sst2 is its own comparison: zero variance everywhere, so equal means tie and lower means lose.
    sst2 = {r["method"]: r for r in table[table["task"] == "sst2"].to_dict("records")}
    assert sst2["lora"]["vs_best"] == "best"  # equal means and seeds: the first in the table's order
    assert sst2["ia3"]["vs_best"] == "tied" and sst2["ia3"]["p_vs_best"] == 1.0
    assert sst2["full"]["vs_best"] == "worse" and sst2["full"]["p_vs_best"] == 0.0
    assert sst2["full"]["score_ci_low"] == sst2["full"]["score_ci_high"] == pytest.approx(0.40)


def test_every_output_names_the_test_and_shows_the_marks(tmp_path):
    built = build_report(write_runs(tmp_path))
    text = render(built, "text")
    assert "Welch t-test" in text and "alpha=0.05" in text and "α=0.05" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("lora") and "lr=0.0001" in ln)
    assert "worse (p=0.0037)" in line  # the terminal's key columns: the verdict, not the interval
    wide = render(built, "text", wide=True)  # --wide: every column, the 95% interval too
    line = next(ln for ln in wide.splitlines() if ln.startswith("lora") and "lr=0.0001" in ln)
    assert "[0.6852, 0.7348]" in line and "worse (p=0.0037)" in line
    assert "tied (p=0.22)" in text and "  best" in text
    assert "n/a" in next(ln for ln in text.splitlines() if ln.startswith("full") and "0.9000" in ln)

    markdown = render(built, "markdown")
    assert "| vs best (Welch t, α=0.05) |" in markdown and "tied (p=0.22)" in markdown
    html = render(built, "html", plots={})
    assert "vs best (Welch t, α=0.05)" in html and "[0.7703, 0.8697]" in html and "Welch t-test" in html
    assert r"$\alpha$" in render(built, "latex")

    csv_text = render(built, "csv")
    header = csv_text.splitlines()[0].split(",")
    for column in ("score_ci_low", "score_ci_high", "vs_best", "p_vs_best"):
        assert column in header
    assert ",worse," in csv_text and ",tied," in csv_text and ",best," in csv_text


def test_search_trials_are_left_out_of_the_comparison(tmp_path):
    write_runs(tmp_path, {("vader", "lora", 1e-3): [0.80, 0.82]})
    rows = list(csv.DictReader(open(tmp_path / "runs.csv")))
    columns = [*report.RUN_COLUMNS, "eval_on"]
    with open(tmp_path / "runs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "eval_on": "eval"})
        writer.writerow({**rows[0], "run_id": "trial", "lr": 5e-3, "score": 0.99, "eval_on": "search"})
    built = build_report(tmp_path)
    assert len(built.table) == 1 and built.n_search == 1
    assert "1 search trial(s)" in render(built, "text")
    assert len(build_report(tmp_path, include_search=True).table) == 2
