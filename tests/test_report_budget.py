"""Training budgets in the report: grouping, significance within a budget, the budget in every format,
the mixed-budget warning, the stopped-early mark, and older files without budget columns.

The runs are written by hand, so every figure is known:

minilm / vader (accuracy), two budgets:
    full   lr 2e-5  150 steps  scores .80 .82 .84  -> 0.82 ± 0.02   best of the 150-step settings
    ia3    lr 3e-3  150 steps  scores .79 .81 .80  -> 0.80 ± 0.01   tied with full (p = 0.2209)
    lora   lr 1e-3  150 steps  scores .70 .71 .72  -> 0.71 ± 0.01   worse than full; seeds 1 and 2
                                                                    stopped early at 120 and 100 steps
    lora   lr 1e-3  300 steps  scores .90 .91 .92  -> 0.91 ± 0.01   the only 300-step setting: best
minilm / sst2 (accuracy): lora 500,000 tokens, scores .60 .70
minilm / mnli (accuracy): full 2.5 epochs, scores .50 .52
"""

from __future__ import annotations

import csv
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from scipy import stats

from peftbench import report
from peftbench.report import (
    RUN_COLUMNS,
    budget_label,
    build_report,
    comparison_table,
    format_sweep_table,
    load_runs,
    render,
)
from peftbench.report import plots as report_plots
from tests.test_report_data import lora_settings, make_run, write_runs

NEW_COLUMNS = (
    "budget_unit",
    "budget",
    "budget_steps",
    "train_samples",
    "train_tokens",
    "stopped_early",
    "stop_reason",
    "schedule",
    "warmup_ratio",
)
"""Columns the harness started writing with budgets (``train_steps`` was written before)."""

FULL = [0.80, 0.82, 0.84]
IA3 = [0.79, 0.81, 0.80]
LORA_150 = [0.70, 0.71, 0.72]
LORA_300 = [0.90, 0.91, 0.92]
LORA_SETTING = "alpha=16 dropout=0 r=8 use_rslora=false lr=0.001"


def _run(unit: str, amount: float, budget_steps: int, steps: int | None = None, **overrides: Any) -> dict:
    steps = budget_steps if steps is None else steps
    stopped = steps < budget_steps
    return make_run(
        budget_unit=unit,
        budget=amount,
        budget_steps=budget_steps,
        train_steps=steps,
        train_samples=steps * 16,
        train_tokens=steps * 16 * 50,
        stopped_early=str(stopped),
        stop_reason="early_stopping" if stopped else "",
        schedule="linear",
        warmup_ratio=0.1,
        **overrides,
    )


def _lora(**overrides: Any) -> dict:
    return {
        "method": "lora",
        "rank": 8,
        "method_settings": lora_settings(8),
        "trainable_params": 100_000,
        **overrides,
    }


def budget_runs() -> list[dict]:
    rows = []
    for seed, score in enumerate(FULL):
        rows.append(_run("steps", 150, 150, method="full", lr=2e-5, seed=seed, score=score))
    for seed, score in enumerate(IA3):
        rows.append(
            _run(
                "steps",
                150,
                150,
                method="ia3",
                lr=3e-3,
                seed=seed,
                score=score,
                method_settings='{"target_modules":null}',
                trainable_params=10_000,
            )
        )
    for seed, (score, steps) in enumerate(zip(LORA_150, [150, 120, 100], strict=True)):
        rows.append(_run("steps", 150, 150, steps, seed=seed, score=score, **_lora()))
    for seed, score in enumerate(LORA_300):
        rows.append(_run("steps", 300, 300, seed=seed, score=score, **_lora()))
    for seed, score in enumerate([0.60, 0.70]):
        rows.append(
            _run("tokens", 500_000, 625, seed=seed, score=score, task="sst2", sweep_id="sweepB", **_lora())
        )
    for seed, score in enumerate([0.50, 0.52]):
        rows.append(
            _run(
                "epochs",
                2.5,
                400,
                seed=seed,
                score=score,
                task="mnli",
                method="full",
                lr=2e-5,
                sweep_id="sweepB",
            )
        )
    return rows


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    write_runs(tmp_path / "results", budget_runs())
    return tmp_path / "results"


def _one(table: pd.DataFrame, method: str, task: str = "vader", budget: float | None = None) -> dict:
    mask = (table["method"] == method) & (table["task"] == task)
    if budget is not None:
        mask &= table["budget"] == budget
    rows = table[mask.to_numpy()].to_dict("records")
    assert len(rows) == 1, rows
    return rows[0]


def _welch(a: list[float], b: list[float]) -> float:
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


# ------------------------------------------------------------------------------------------ grouping


def test_two_budgets_of_the_same_setting_are_not_pooled(results: Path) -> None:
    table = comparison_table(load_runs(results))
    lora = table[(table["method"] == "lora") & (table["task"] == "vader")]
    assert len(lora) == 2 and set(lora["setting"]) == {LORA_SETTING}
    short, long = _one(table, "lora", budget=150), _one(table, "lora", budget=300)
    # Pooled, the six seeds would average 0.81 with a std of about 0.11.
    assert short["score_mean"] == pytest.approx(0.71) and short["score_std"] == pytest.approx(0.01)
    assert long["score_mean"] == pytest.approx(0.91) and long["score_std"] == pytest.approx(0.01)
    assert short["n_seeds"] == long["n_seeds"] == 3
    assert (short["budget_unit"], short["budget_steps"]) == ("steps", 150)
    assert (long["budget_unit"], long["budget_steps"]) == ("steps", 300)
    # Steps, samples and tokens actually trained, averaged over seeds.
    assert short["train_steps"] == pytest.approx((150 + 120 + 100) / 3)
    assert short["train_samples"] == pytest.approx(16 * 370 / 3)
    assert short["train_tokens"] == pytest.approx(800 * 370 / 3)
    assert not short["budget_inferred"]
    # Rows are ordered by budget within a model and task: the 150-step settings, then the 300-step one.
    vader = table[table["task"] == "vader"]
    assert list(vader["budget"]) == [150, 150, 150, 300] and vader["method"].iloc[0] == "full"


def test_a_failed_run_counts_for_its_own_budget_only(tmp_path: Path) -> None:
    rows = budget_runs()
    rows.append(_run("steps", 300, 300, 40, seed=3, status="failed", score="", error="boom", **_lora()))
    rows.append(make_run(seed=4, status="cancelled", score="", error="stop", train_steps="", **_lora()))
    write_runs(tmp_path, rows)
    table = comparison_table(load_runs(tmp_path))
    # The failed 300-step run counts there; the cancelled run has no budget, so it counts for both.
    assert _one(table, "lora", budget=300)["n_failed"] == 2
    assert _one(table, "lora", budget=150)["n_failed"] == 1
    assert _one(table, "full", budget=150)["n_failed"] == 0


# -------------------------------------------------------------------------------------- significance


def test_significance_compares_only_settings_with_the_same_budget(results: Path) -> None:
    table = comparison_table(load_runs(results))
    full, ia3 = _one(table, "full"), _one(table, "ia3")
    short, long = _one(table, "lora", budget=150), _one(table, "lora", budget=300)

    # Each budget has its own best: full among the 150-step settings, lora among the 300-step ones.
    assert full["vs_best"] == "best" and math.isnan(full["p_vs_best"])
    assert long["vs_best"] == "best" and math.isnan(long["p_vs_best"])
    # ia3 vs full by hand: t = -0.02 / sqrt(0.01²/3 + 0.02²/3) = -1.549193, df = 50/17, p = 0.220881.
    assert ia3["p_vs_best"] == pytest.approx(0.220881, rel=1e-4)
    assert ia3["p_vs_best"] == pytest.approx(_welch(IA3, FULL))
    assert ia3["vs_best"] == "tied"
    assert short["p_vs_best"] == pytest.approx(_welch(LORA_150, FULL)) and short["vs_best"] == "worse"
    # Against the 300-step lora (the highest mean of the table) ia3 would have been "worse".
    assert _welch(IA3, LORA_300) < report.ALPHA
    # One best per task and budget: vader has two budgets, sst2 and mnli one each.
    assert sorted(table.loc[table["vs_best"] == "best", "task"]) == ["mnli", "sst2", "vader", "vader"]


def test_full_baseline_and_pareto_are_per_budget(results: Path) -> None:
    table = comparison_table(load_runs(results))
    short, long = _one(table, "lora", budget=150), _one(table, "lora", budget=300)
    assert short["score_delta"] == pytest.approx(0.71 - 0.82) and short["baseline_setting"] == "lr=2e-05"
    # No full fine-tuning was run with 300 steps: nothing to compare with.
    assert math.isnan(long["score_delta"]) and long["baseline_setting"] == ""
    # Across budgets lora at 300 steps would dominate lora at 150 steps (same parameters, higher
    # score); within its budget lora at 150 steps is still beaten by ia3 on both counts.
    assert long["pareto"] and not short["pareto"]
    assert _one(table, "ia3")["pareto"] and _one(table, "full")["pareto"]


# -------------------------------------------------------------------------------------- the formats


class _Tables(HTMLParser):
    """The cell texts of every table in a page, and the texts of its paragraphs by class."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.paragraphs: list[tuple[str, str]] = []
        self._cell: list[str] | None = None
        self._paragraph: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "p":
            self._paragraph = (dict(attrs).get("class") or "", [])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "p" and self._paragraph is not None:
            self.paragraphs.append((self._paragraph[0], "".join(self._paragraph[1])))
            self._paragraph = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._paragraph is not None:
            self._paragraph[1].append(data)


def _budget_by_row(header: list[str], rows: list[list[str]]) -> dict[tuple[str, str, str], list[str]]:
    budgets: dict[tuple[str, str, str], list[str]] = {}
    for row in rows:
        key = (row[header.index("Task")], row[header.index("Method")], row[header.index("Setting")])
        budgets.setdefault(key, []).append(row[header.index("Budget")])
    return budgets


EXPECTED_BUDGETS = {
    ("vader", "full", "lr=2e-05"): ["150 steps"],
    ("vader", "ia3", "lr=0.003"): ["150 steps"],
    ("vader", "lora", LORA_SETTING): ["150 steps", "300 steps"],
    ("sst2", "lora", LORA_SETTING): ["500k tokens"],
    ("mnli", "full", "lr=2e-05"): ["2.5 epochs"],
}


def test_every_format_shows_each_rows_budget(results: Path) -> None:
    built = build_report(results)

    markdown = render(built, "markdown")
    lines = [
        line for line in markdown.splitlines() if line.startswith("| minilm") or line.startswith("| Model")
    ]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert _budget_by_row(cells[0], cells[1:]) == EXPECTED_BUDGETS

    page = _Tables()
    page.feed(render(built, "html", plots={}))
    assert _budget_by_row(page.rows[0], page.rows[1 : 1 + len(built.table)]) == EXPECTED_BUDGETS

    text = render(built, "text", wide=True)
    header = text.splitlines()[
        text.splitlines().index("== model: minilm  task: vader  metric: accuracy ==") + 2
    ]
    assert header.split()[:3] == ["Method", "Setting", "Budget"]
    lora_lines = [line for line in text.splitlines() if line.startswith("lora ")]
    assert sorted(re.search(r"(150 steps|300 steps|500k tokens)", line).group(1) for line in lora_lines) == [
        "150 steps",
        "300 steps",
        "500k tokens",
    ]
    assert any(line.startswith("full ") and "2.5 epochs" in line for line in text.splitlines())

    latex = render(built, "latex")
    body = latex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    budgets = sorted(line.split(" & ")[report.DISPLAY_HEADERS.index("Budget")] for line in body)
    assert budgets == ["150 steps", "150 steps", "150 steps", "2.5 epochs", "300 steps", "500k tokens"]

    back = pd.read_csv(pd.io.common.StringIO(render(built, "csv")))
    assert {
        "budget_unit",
        "budget",
        "budget_steps",
        "train_samples",
        "train_tokens",
        "n_stopped_early",
    } <= set(back.columns)
    got = sorted(zip(back["task"], back["method"], back["budget_unit"], back["budget"], strict=True))
    assert got == [
        ("mnli", "full", "epochs", 2.5),
        ("sst2", "lora", "tokens", 500_000.0),
        ("vader", "full", "steps", 150.0),
        ("vader", "ia3", "steps", 150.0),
        ("vader", "lora", "steps", 150.0),
        ("vader", "lora", "steps", 300.0),
    ]
    sst2 = back[back["task"] == "sst2"].iloc[0]
    assert sst2["train_tokens"] == pytest.approx(625 * 800) and sst2["train_samples"] == pytest.approx(
        625 * 16
    )


def test_a_table_that_mixes_budgets_is_warned_about(results: Path) -> None:
    built = build_report(results)
    warning = "Warning: this table mixes training budgets: 150 steps (3 settings), 300 steps (1 setting)."
    text = render(built, "text", wide=True)
    sections = {block.split(" ==")[0]: block for block in text.split("== model: ")[1:]}
    vader, sst2, mnli = (
        sections[f"minilm  task: {task}  metric: accuracy"] for task in ("vader", "sst2", "mnli")
    )
    # Above the vader table, not above the others, which hold one budget each.
    assert vader.splitlines()[1].startswith(warning) and vader.index(warning) < vader.index("Method")
    assert sst2.splitlines()[1] == "Budget: 500k tokens." and "Warning" not in sst2
    assert mnli.splitlines()[1] == "Budget: 2.5 epochs." and "Warning" not in mnli

    markdown = render(built, "markdown")
    before_table = markdown.split("| Model")[0]
    assert f"**minilm / vader: {warning}" in before_table
    assert "minilm / sst2: Budget: 500k tokens." in before_table and "sst2: Warning" not in markdown

    page = _Tables()
    page.feed(render(built, "html", plots={}))
    warnings_ = [text for kind, text in page.paragraphs if kind == "warning"]
    assert len(warnings_) == 1 and warnings_[0].startswith(f"minilm / vader: {warning}")
    assert ("budget", "minilm / mnli: Budget: 2.5 epochs.") in page.paragraphs

    latex = render(built, "latex")
    assert r"\textbf{minilm / vader: Warning: this table mixes training budgets" in latex

    # One budget throughout: a single line, no warning.
    one = build_report(results, tasks=["sst2"])
    assert "Budget: 500k tokens." in render(one, "markdown") and "Warning" not in render(one, "text", wide=True)


# ----------------------------------------------------------------------------------- stopped early


STOPPED_NOTE = (
    f"† lora {LORA_SETTING} (150 steps): stopped before its budget (early stopping): 2 of 3 seeds, "
    "mean 110 of 150 steps"
)


def test_a_stopped_early_seed_gets_the_mark_and_the_note(results: Path) -> None:
    built = build_report(results)
    table = built.table
    short = _one(table, "lora", budget=150)
    assert short["n_stopped_early"] == 2 and short["stopped_steps"] == pytest.approx(110)
    assert short["stop_reason"] == "early_stopping"
    others = table[~((table["method"] == "lora") & (table["budget"] == 150)).to_numpy()]
    assert (others["n_stopped_early"] == 0).all() and others["stopped_steps"].isna().all()

    text = render(built, "text", wide=True)
    marked = [line for line in text.splitlines() if "†" in line and not line.startswith(("†", "*"))]
    assert len(marked) == 1 and "0.7100 ± 0.0100†" in marked[0] and "150 steps" in marked[0]
    vader = text.split("task: vader")[1].split("== model")[0]
    assert STOPPED_NOTE in vader.splitlines()  # under the vader table
    assert vader.index("0.7100 ± 0.0100†") < vader.index(STOPPED_NOTE)

    markdown = render(built, "markdown")
    assert markdown.count("0.7100 ± 0.0100†") == 1
    assert STOPPED_NOTE.replace("† lora", "† minilm / vader, lora") in markdown.split("| Model")[1]
    page = _Tables()
    page.feed(render(built, "html", plots={}))
    assert ("stopped", STOPPED_NOTE.replace("† lora", "† minilm / vader, lora")) in page.paragraphs
    latex = render(built, "latex")
    assert r"0.7100 $\pm$ 0.0100\dag{}" in latex and "†" not in latex
    assert r"\dag{} minilm / vader, lora" in latex

    back = pd.read_csv(pd.io.common.StringIO(render(built, "csv")))
    assert sorted(back["n_stopped_early"].tolist()) == [0, 0, 0, 0, 0, 2]


def test_one_stopped_seed_of_one(tmp_path: Path) -> None:
    write_runs(tmp_path, [_run("steps", 150, 150, 90, method="full", score=0.5)])
    notes = report.stopped_notes(comparison_table(load_runs(tmp_path)), with_model_task=False)
    assert notes == [
        "† full lr=0.001 (150 steps): stopped before its budget (early stopping): 1 of 1 seed, "
        "mean 90 of 150 steps"
    ]


def test_sweep_table_shows_budget_and_steps(results: Path) -> None:
    text = format_sweep_table(results, "sweepA")
    lines = text.splitlines()
    assert lines[1] == (
        "Warning: minilm / vader mixes training budgets (150 steps, 300 steps); compare runs only within one "
        "budget."
    )
    header = lines[2].split()
    assert header[:6] == ["Method", "Rank", "LR", "Seed", "Budget", "Steps"]
    lora = [line for line in lines if line.startswith("lora")]
    steps = [re.search(r"\d+/\d+†?", line).group(0) for line in lora]
    assert steps == ["150/150", "120/150†", "100/150†", "300/300", "300/300", "300/300"]
    assert all("150 steps" in line for line in lora[:3]) and all("300 steps" in line for line in lora[3:])
    assert "† stopped before its budget: 2 run(s) (early stopping: 2)" in lines
    assert "†" not in "".join(line for line in lines if line.startswith(("full", "ia3")))
    other = format_sweep_table(results, "sweepB")
    assert "Warning" not in other and "2.5 epochs" in other and "500k tokens" in other
    assert "400/400" in other and "†" not in other


# --------------------------------------------------------------------------------------- older files


def test_an_old_file_without_budget_columns_still_renders(tmp_path: Path) -> None:
    old_columns = [c for c in RUN_COLUMNS if c not in NEW_COLUMNS]
    rows = [make_run(method="full", seed=s, score=0.80 + s / 100, train_steps=100) for s in range(3)]
    rows += [make_run(seed=s, score=0.70 + s / 100, train_steps=100, **_lora()) for s in range(2)]
    rows.append(make_run(seed=3, status="failed", score="", train_steps="", error="boom", **_lora()))
    write_runs(tmp_path, rows, columns=old_columns)
    assert "budget_unit" not in next(csv.reader(open(tmp_path / "runs.csv", encoding="utf-8")))

    built = build_report(tmp_path)
    table = built.table
    # The budget is the steps the runs trained (the harness of the time always spent all of it).
    assert list(table["budget_unit"]) == ["steps", "steps"] and list(table["budget"]) == [100, 100]
    assert table["budget_inferred"].all() and (table["n_stopped_early"] == 0).all()
    assert _one(table, "lora")["n_failed"] == 1  # the failed run without a budget still counts
    assert _one(table, "lora")["vs_best"] == "worse" and _one(table, "full")["vs_best"] == "best"
    for fmt in report.FORMATS:
        document = render(built, fmt, plots={}) if fmt == "html" else render(built, fmt)
        assert "100 steps" in document or "100.0" in document, fmt
        assert not re.search(r"\d(†|\\dag)", document), fmt  # no score is marked
        assert not re.search(r"\d of \d seeds?", document), fmt  # and no note says so
    text = render(built, "text", wide=True)
    assert "Budget: 100 steps (taken as the steps trained by runs recorded without a budget)." in text
    assert "Warning" not in text
    assert "100/100" in format_sweep_table(tmp_path, "sweepA")


def test_an_old_file_without_steps_shows_an_unknown_budget(tmp_path: Path) -> None:
    columns = ["run_id", "sweep_id", "status", "method", "model", "task", "seed", "lr", "score", "metric"]
    write_runs(tmp_path, [make_run(method="full", seed=s, score=0.5 + s / 10) for s in range(2)], columns)
    built = build_report(tmp_path)
    row = built.table.iloc[0]
    assert row["budget_unit"] == "" and math.isnan(row["budget"]) and not row["budget_inferred"]
    assert row["n_seeds"] == 2 and row["score_mean"] == pytest.approx(0.55)
    text = render(built, "text", wide=True)
    assert "Budget: not recorded (?)." in text
    grid_row = next(line for line in text.splitlines() if line.startswith("full "))
    assert grid_row.split()[2] == "?"
    sweep = format_sweep_table(tmp_path, "sweepA")
    assert [line.split()[4:6] for line in sweep.splitlines() if line.startswith("full")] == [["?", "-"]] * 2


# --------------------------------------------------------------------------------------- the pieces


@pytest.mark.parametrize(
    ("unit", "amount", "label"),
    [
        ("steps", 150, "150 steps"),
        ("steps", 1500, "1,500 steps"),
        ("epochs", 2.5, "2.5 epochs"),
        ("epochs", 1, "1 epoch"),
        ("samples", 10_000, "10,000 samples"),
        ("tokens", 500_000, "500k tokens"),
        ("tokens", 1_500_000, "1.5M tokens"),
        ("tokens", 1_234_567, "1,234,567 tokens"),  # a suffix would round it: written in full
        ("", float("nan"), "?"),
        ("steps", None, "? steps"),
    ],
)
def test_budget_label(unit: str, amount: float | None, label: str) -> None:
    assert budget_label(unit, amount) == label


def test_plots_draw_one_panel_per_budget(results: Path) -> None:
    table = comparison_table(load_runs(results))
    titles = [title for title, _ in report_plots._panels(table)]
    assert titles == [
        "minilm / mnli (accuracy), 2.5 epochs",
        "minilm / sst2 (accuracy), 500k tokens",
        "minilm / vader (accuracy), 150 steps",
        "minilm / vader (accuracy), 300 steps",
    ]
    plots = report_plots.render_plots(table)
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in plots.values())


def test_wandb_names_the_budgets_of_a_sweep(results: Path) -> None:
    from peftbench.report import wandb_table as report_wandb  # imports wandb only when logging

    table = comparison_table(load_runs(results))
    assert report_wandb._budgets(table) == ["2.5 epochs", "150 steps", "300 steps", "500k tokens"]
    assert {"budget_unit", "budget", "n_stopped_early", "train_tokens"} <= set(
        report_wandb.WANDB_TABLE_COLUMNS
    )


def test_runs_differing_in_another_config_key_are_not_pooled(tmp_path: Path) -> None:
    """Two batch sizes of one LoRA setting (same label, same budget) stay apart, by setting_key; the
    seeds of each still pool, and their labels say which config each row is."""
    rows = []
    for key, scores in (("aaaaaa111111", [0.70, 0.72]), ("bbbbbb222222", [0.80, 0.82])):
        for seed, score in enumerate(scores):
            rows.append(_run("steps", 150, 150, seed=seed, score=score, setting_key=key, **_lora()))
    write_runs(tmp_path / "results", rows)
    table = comparison_table(load_runs(tmp_path / "results"))
    assert len(table) == 2 and table["n_seeds"].tolist() == [2, 2]
    by_key = dict(zip(table["setting_key"], table["score_mean"], strict=True))
    assert by_key == pytest.approx({"aaaaaa111111": 0.71, "bbbbbb222222": 0.81})
    assert sorted(table["setting"]) == [f"{LORA_SETTING} (config aaaaaa)", f"{LORA_SETTING} (config bbbbbb)"]
    # Rows recorded before setting_key existed pool as before and keep their plain labels.
    write_runs(tmp_path / "old", budget_runs())
    old = comparison_table(load_runs(tmp_path / "old"))
    assert not old["setting"].str.contains("(config", regex=False).any() and old["n_seeds"].max() == 3
