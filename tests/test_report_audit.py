"""The report audit's findings: what "Which method?" recommends, intervals in range, filters that match
nothing, the failed-runs table, the end-of-sweep advice and the command line's messages."""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import pytest

from peftbench.report import build_report, rank_sweeps, render
from peftbench.report.answers import DID_NOT_LEARN_MARK
from tests.test_report_data import make_run, write_runs

BASELINE = 0.5535


def _run(method: str, seed: int, score: float, key: str, **overrides) -> dict:
    """A run of a short budget whose majority-class baseline is known (so the answers are drawn)."""
    return make_run(method=method, seed=seed, score=score, setting_key=key, baseline_score=BASELINE, cpu_util=0.9,
                    load_avg_1m_end=1.0, cpu_count=4, budget_unit="steps", budget=20, **overrides)


def _lora(rank: int, seed: int, score: float) -> dict:
    return _run("lora", seed, score, f"r{rank}", rank=rank, method_settings=json.dumps({"rank": rank}),
                trainable_params=100 * rank)


def _mixed(tmp_path: Path) -> Path:
    """full (noisy, best), lora (noisy, learned, tied with full) and ia3 (at the baseline, the fewest
    parameters, and tied with full by the Welch test because full's seeds are so far apart)."""
    return write_runs(tmp_path / "mixed", [
        _run("full", 0, 0.60, "f"), _run("full", 1, 0.90, "f"),
        _run("lora", 0, 0.56, "l", rank=8, trainable_params=1000), _run("lora", 1, 0.70, "l", rank=8, trainable_params=1000),
        _run("ia3", 0, 0.5535, "i", trainable_params=100), _run("ia3", 1, 0.5559, "i", trainable_params=100),
    ]).parent


def _which_lines(report) -> list[str]:
    ((_, lines),) = report.which
    return lines


def _summary_in(fmt: str, report) -> str:
    """The "Which method?" part of one rendering, as plain text."""
    out = render(report, fmt, **({"plots": {}} if fmt == "html" else {}))
    start = out.index("Which method?")
    end = out.index("Budget: 20 steps", start)
    text = out[start:end]
    return html.unescape(re.sub(r"<[^>]+>", " ", text)) if fmt == "html" else text


@pytest.mark.parametrize("fmt", ["text", "markdown", "html"])
def test_a_setting_that_did_not_learn_is_never_tied_with_the_best_or_the_cheapest(tmp_path, fmt):
    report = build_report(_mixed(tmp_path))
    table = report.table.set_index("method")
    assert table.loc["ia3", "did_not_learn"] and table.loc["ia3", "vs_best"] == "tied"  # the trap is set
    summary = " ".join(_summary_in(fmt, report).split())
    tied = re.search(r"Tied with it [^.]*\(not distinguishable[^:]*: (.*?)\)\. ", summary)
    assert tied and "lora" in tied.group(1) and "ia3" not in tied.group(1)
    cheapest = re.search(r"the fewest trainable parameters: (\w+)", summary)
    assert cheapest and cheapest.group(1) == "lora"
    assert "ia3" not in " ".join(re.findall(r"Among those[^.]*\.", summary))
    assert re.search(r"left out because they did not learn \(⊘ below\): ia3", summary)


@pytest.mark.parametrize("fmt", ["text", "markdown", "html"])
def test_when_no_setting_learned_none_is_recommended_nor_is_a_rank(tmp_path, fmt):
    folder = write_runs(tmp_path / "ranks", [_lora(r, s, score) for r, scores in
                                             ((2, (0.5535, 0.5559)), (4, (0.5535, 0.5547)))
                                             for s, score in enumerate(scores)]).parent
    report = build_report(folder)
    assert report.table["did_not_learn"].all()
    summary = " ".join(_summary_in(fmt, report).split())
    assert "No setting learned: every score is within 0.01 of the majority-class baseline (0.5535)" in summary
    assert "lora ranks 2, 4: no rank learned" in summary
    for recommendation in ("Best:", "Tied with it", "Among those", "the best rank", "smallest rank tied",
                           "Compute efficiency"):
        assert recommendation not in summary
    (sweep,) = rank_sweeps(report.table)
    assert sweep["smallest_tied_rank"] is None


def test_a_rank_that_did_not_learn_is_not_the_smallest_rank_tied_with_the_best(tmp_path):
    folder = write_runs(tmp_path / "ranks", [_lora(r, s, score) for r, scores in
                                             ((2, (0.5535, 0.5559)), (4, (0.56, 0.70)))
                                             for s, score in enumerate(scores)]).parent
    report = build_report(folder)
    (sweep,) = rank_sweeps(report.table)
    assert [r["vs_best"] for r in sweep["rows"]] == ["tied", "best"]  # rank 2 ties by the Welch test alone
    assert sweep["smallest_tied_rank"] == 4
    rank = next(line for line in _which_lines(report) if line.startswith("lora ranks 2, 4"))
    assert "the best rank, r=4" in rank and "r=2" not in rank
    rank_table = next(rows for title, _, rows, _ in report.sections if title.startswith("Which rank?"))
    assert [row[3].endswith(DID_NOT_LEARN_MARK) for row in rank_table] == [True, False]


def test_when_the_best_tested_setting_did_not_learn_it_is_not_recommended(tmp_path):
    """The highest mean is at the baseline; the setting that 'learned' is distinguishable from it only by
    scoring below it. Neither is a recommendation."""
    folder = write_runs(tmp_path / "low", [
        _run("full", 0, 0.5535, "f"), _run("full", 1, 0.5559, "f"),
        _run("lora", 0, 0.40, "l", rank=8), _run("lora", 1, 0.41, "l", rank=8),
    ]).parent
    lines = _which_lines(build_report(folder))
    assert lines[0].startswith("No recommendation: the highest accuracy with 2+ seeds, full lr=0.001's 0.5547")
    assert not any(line.startswith(("Best:", "Tied", "Among those")) for line in lines)


def test_with_one_seed_a_top_score_that_did_not_learn_is_not_named_as_the_answer(tmp_path):
    folder = write_runs(tmp_path / "one_seed", [_run("full", 0, 0.5540, "f"), _run("lora", 0, 0.40, "l", rank=8)]).parent
    (line, *_) = _which_lines(build_report(folder))
    assert "did not learn" in line and "so none is recommended" in line


def test_a_lone_setting_is_said_to_be_the_only_one_compared(tmp_path):
    folder = write_runs(tmp_path / "lone", [_run("full", 0, 0.60, "f"), _run("full", 1, 0.90, "f")]).parent
    lines = _which_lines(build_report(folder))
    assert lines[0].startswith("Best: full lr=0.001")
    assert lines[1] == "It is the only setting compared."
    assert not any("other setting" in line or "scored below" in line for line in lines)


def test_a_lone_tested_setting_beside_one_seed_settings_compares_with_none(tmp_path):
    folder = write_runs(tmp_path / "lone", [_run("full", 0, 0.80, "f"), _run("full", 1, 0.90, "f"),
                                            _run("lora", 0, 0.85, "l", rank=8)]).parent
    lines = _which_lines(build_report(folder))
    assert lines[1] == "It is the only setting with 2+ seeds: no other is compared with it."
    assert "Not tested (one seed): lora lr=0.001." in lines
    assert not any("scored below" in line for line in lines)


def test_the_confidence_interval_stays_within_the_metrics_range(tmp_path):
    folder = write_runs(tmp_path / "wide", [
        _run("full", 0, 0.60, "f"), _run("full", 1, 0.90, "f"),
        _run("lora", 0, 0.20, "l", rank=8, task="cola", metric="matthews_correlation"),
        _run("lora", 1, -0.90, "l", rank=8, task="cola", metric="matthews_correlation"),
        _run("ia3", 0, 3.0, "i", task="lm", metric="perplexity"), _run("ia3", 1, 9.0, "i", task="lm", metric="perplexity"),
    ]).parent
    report = build_report(folder)
    table = report.table.set_index("method")
    # The t interval, by hand: mean ± t(0.975, 1) · std / √2, t(0.975, 1) = 12.7062; an unknown metric
    # (perplexity) keeps it whole.
    for method, scores, (floor, ceiling) in (("full", (0.60, 0.90), (0, 1)), ("lora", (0.20, -0.90), (-1, 1)),
                                             ("ia3", (3.0, 9.0), (-math.inf, math.inf))):
        mean, half = sum(scores) / 2, 12.7062 * abs(scores[0] - scores[1]) / 2
        assert table.loc[method, "score_mean"] == pytest.approx(mean)
        assert mean - half < -1 and mean + half > 1  # the raw interval does leave every range above
        assert table.loc[method, "score_ci_low"] == pytest.approx(max(floor, mean - half), abs=1e-3)
        assert table.loc[method, "score_ci_high"] == pytest.approx(min(ceiling, mean + half), abs=1e-3)
    which = {title: lines for title, lines in report.which}
    assert "(95% CI 0.0000–1.0000, 2 seeds)" in which["minilm on vader, 20 steps"][0]
    assert "(95% CI -1.0000–1.0000, 2 seeds)" in which["minilm on cola, 20 steps"][0]
    wide = render(report, "text", wide=True)
    assert "[0.0000, 1.0000]" in wide and "[-1.0000, 1.0000]" in wide and "-32.1" in wide
    from peftbench.report.display import CI_CLIPPED_NOTE

    assert CI_CLIPPED_NOTE in wide and CI_CLIPPED_NOTE in render(report, "markdown")


def test_the_welch_test_is_the_same_with_and_without_the_clipping():
    import pandas as pd

    from peftbench.report.stats import significance

    base = pd.DataFrame({"model": ["m"] * 2, "task": ["t"] * 2, "n_seeds": [2, 2], "score_mean": [0.75, 0.63],
                         "score_std": [0.2121, 0.099]})
    raw = significance(base)
    clipped = significance(base.assign(metric="accuracy"))
    assert raw["p_vs_best"].tolist()[1] == pytest.approx(clipped["p_vs_best"].tolist()[1])
    assert raw["score_ci_low"].min() < 0 and clipped["score_ci_low"].min() == 0.0
    assert raw["score_ci_high"].max() > 1 and clipped["score_ci_high"].max() == 1.0


def test_every_shipped_metric_has_the_range_its_docstring_states():
    from peftbench.report.stats import METRIC_RANGES

    root = Path(__file__).resolve().parents[1] / "peftbench" / "metrics"
    shipped = sorted(p.name for p in root.iterdir() if (p / f"{p.name}.py").is_file())
    assert len(shipped) > 0
    for name in shipped:
        stated = re.search(r"Returns:\s*\n\s*([\w, ]+) \(float\):[^\[]*\[(-?\d+), (-?\d+)\]",
                           (root / name / f"{name}.py").read_text(encoding="utf-8"))
        assert stated, name
        for value in [name, *(v.strip() for v in stated.group(1).split(","))]:
            assert METRIC_RANGES[value] == (float(stated.group(2)), float(stated.group(3))), value


@pytest.mark.parametrize(("option", "column", "name"), [("--sweep", "sweep_id", "sweep id"), ("--method", "method", "method"),
                                                        ("--model", "model", "model"), ("--task", "task", "task")])
def test_an_unknown_filter_value_is_a_one_line_error_listing_the_known_ones(tmp_path, capsys, option, column, name):
    from peftbench.report import main

    folder = _mixed(tmp_path)
    assert main([str(folder), option, "nosuch"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    known = sorted({str(r[column]) for r in (make_run(method=m) for m in ("full", "lora", "ia3"))})
    assert f"unknown {name} 'nosuch'" in err and all(value in err for value in known)
    assert main([str(folder), option, "nosuch", option, known[0]]) == 2  # one unknown of two
    capsys.readouterr()
    assert main([str(folder), option, known[0]]) == 0


def test_an_unknown_sweep_lists_the_most_recent_sweeps_when_there_are_many(tmp_path, capsys):
    from peftbench.report import main

    rows = [_run("full", 0, 0.9, f"k{i}", sweep_id=f"sweep{i:02d}", started_at=f"2026-01-{i + 1:02d}T10:00:00+00:00")
            for i in range(12)]
    folder = write_runs(tmp_path / "many", rows).parent
    assert main([str(folder), "--sweep", "nosuch"]) == 2
    err = capsys.readouterr().err
    listed = re.findall(r"sweep\d\d", err)
    assert listed == [f"sweep{i:02d}" for i in range(11, 3, -1)] and "8 most recent of 12" in err


def test_the_library_still_returns_an_empty_report_unless_strict(tmp_path):
    folder = _mixed(tmp_path)
    assert build_report(folder, sweeps="nosuch").table.empty
    with pytest.raises(ValueError, match=r"unknown sweep id 'nosuch': the sweep ids in .* are sweepA$"):
        build_report(folder, sweeps="nosuch", strict=True)


LONG_ERROR = ("ConfigError: the training budget train.max_steps=0 leaves no optimizer step for this method; set "
              "train.max_steps, train.epochs, train.samples or train.tokens to a positive number and run it again")


def _failed_folder(tmp_path: Path) -> Path:
    settings = json.dumps({"alpha": 32.0, "dropout": 0.05, "rank": 64, "target_modules": ["query", "key", "value",
                                                                                          "dense"], "use_rslora": True})
    return write_runs(tmp_path / "failed", [
        _run("full", 0, 0.9, "f"),
        _run("lora", 0, "", "l", rank=64, method_settings=settings, status="failed", error=LONG_ERROR + "\n  trace"),
    ]).parent


def test_a_failed_runs_error_wraps_within_the_text_width_and_stays_whole_elsewhere(tmp_path):
    report = build_report(_failed_folder(tmp_path))
    text = render(report, "text")
    table = text[text.index("Failed or cancelled runs (1"):].splitlines()[1:]
    assert table and max(len(line) for line in table) <= 120
    start = table[0].index("Error")
    error_text = " ".join(line[start:].strip() for line in table[2:])
    assert error_text == LONG_ERROR + " trace"  # every word, in order, none cut
    assert len(table) > 3 and all(not line[:start].strip() for line in table[3:])  # continuation lines
    assert 120 - start >= 40  # the long Setting gave way: the Error column has its 40 characters
    assert "…" in table[2][:start]
    from peftbench.report import render_failed_csv

    assert LONG_ERROR in render(report, "markdown") and LONG_ERROR in render_failed_csv(report)


def test_the_end_of_sweep_note_gives_a_search_command_for_every_method_that_did_not_learn(tmp_path):
    from peftbench.report import format_sweep_table

    rows = [_run(method, seed, BASELINE, method[:2]) for method in ("bitfit", "ia3", "prompt") for seed in (0, 1)]
    folder = write_runs(tmp_path / "lost", [*rows, _run("full", 0, 0.9, "f"), _run("full", 1, 0.91, "f")]).parent
    note = next(line for line in format_sweep_table(folder, "sweepA").splitlines() if "did not learn" in line)
    commands = re.findall(r"`([^`]*)`", note)
    assert commands == [f"python -m peftbench -m hydra/sweeper=lr_search method={m}" for m in ("bitfit", "ia3", "prompt")]
    summary = [line for _, lines in build_report(folder).which for line in lines if "did not learn:" in line]
    assert sorted(re.search(r"`([^`]*)`", line).group(1) for line in summary) == commands  # as the full report


def test_the_command_names_itself_as_it_was_called_in_its_errors(tmp_path, capsys):
    from peftbench.commands import run_subcommand
    from peftbench.report import main

    assert main([str(tmp_path / "nowhere")], prog="peftbench report") == 1
    assert capsys.readouterr().err.startswith("peftbench report: no runs file at ")
    assert main([str(_mixed(tmp_path)), "--wandb-workspace"], prog="peftbench report") == 2
    assert capsys.readouterr().err.startswith("peftbench report: --wandb-workspace needs one --sweep")
    with pytest.raises(SystemExit) as done:
        run_subcommand(["report", str(tmp_path / "nowhere")])
    assert done.value.code == 1 and capsys.readouterr().err.startswith("peftbench report: no runs file")
    assert main([str(tmp_path / "nowhere")]) == 1
    assert capsys.readouterr().err.startswith("peftbench-report: no runs file")


def test_a_runs_file_warning_is_one_clean_line_in_the_command_and_a_warning_in_the_library(tmp_path, capsys):
    from peftbench.report import RunsFileWarning, main

    folder = _mixed(tmp_path)
    with (folder / "runs.csv").open("a", encoding="utf-8") as handle:
        handle.write("torn,by,a,crash")  # no newline: the last record is torn
    assert main([str(folder)], prog="peftbench report") == 0
    err = capsys.readouterr().err
    assert err.splitlines() == [f"peftbench report: warning: {folder / 'runs.csv'}: skipped a last line torn by an "
                                "interrupted write"]
    with pytest.warns(RunsFileWarning, match="torn by an interrupted write"):
        build_report(folder)


DOCS = Path(__file__).resolve().parents[1] / "docs" / "report.md"


def test_the_docs_options_table_lists_every_option_of_the_help():
    from peftbench.report.cli import _parser

    text = DOCS.read_text(encoding="utf-8")
    table = text[text.index("## Options"):].split("\n\n")[1]
    options = [o for a in _parser()._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
    assert len(options) > 10
    assert [o for o in options if not re.search(re.escape(o) + r"(?![\w-])", table)] == []


def test_the_docs_show_setting_labels_as_the_report_prints_them(tmp_path):
    settings = json.dumps({"alpha": 16.0, "dropout": 0.0, "rank": 8, "target_modules": None, "use_rslora": False},
                          sort_keys=True, separators=(",", ":"))
    folder = write_runs(tmp_path / "label", [make_run(method="lora", rank=8, lr=lr, method_settings=settings)
                                             for lr in (0.0002, 0.001)]).parent
    labels = build_report(folder).table["setting"].tolist()
    docs = " ".join(DOCS.read_text(encoding="utf-8").split())
    assert labels == ["alpha=16 dropout=0 rank=8 use_rslora=false lr=0.0002",
                      "alpha=16 dropout=0 rank=8 use_rslora=false lr=0.001"]
    assert f"`{labels[0]}`" in docs and f"† lora {labels[1]} (150 steps)" in docs
    assert " r=8 " not in docs
