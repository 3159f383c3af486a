"""Tests of the results report on runs whose figures are known by hand (see test_report_data)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from peftbench import report
from peftbench.report import (
    COMPARISON_COLUMNS,
    RunsFileWarning,
    build_report,
    comparison_table,
    failed_runs,
    format_sweep_table,
    load_runs,
    pareto_front,
    render,
)
from tests.test_report_data import FULL_PARAMS, GIB, known_runs, lora_settings, make_run, write_runs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    write_runs(tmp_path / "results", known_runs())
    return tmp_path / "results"


def _row(table: pd.DataFrame, method: str, task: str = "vader", rank: int | None = None) -> pd.Series:
    mask = (table["method"] == method) & (table["task"] == task)
    if rank is not None:
        mask &= table["rank"] == rank
    rows = table[mask.to_numpy()]
    assert len(rows) == 1, f"expected one {method} row, got {len(rows)}"
    return rows.iloc[0]


# ------------------------------------------------------------------------------------------ loading


def test_load_runs_types_and_counts(results: Path) -> None:
    runs = load_runs(results)
    assert len(runs) == 16
    assert list(runs.columns[: len(report.RUN_COLUMNS)]) == list(report.RUN_COLUMNS)
    assert runs["seed"].dtype == "Int64"
    assert runs["score"].dtype == "float64"
    assert runs["started_at"].dt.tz is not None
    assert runs["rank"].isna().sum() == 8  # full, ia3 (4 runs incl. cancelled), houlsby
    assert runs["status"].value_counts().to_dict() == {"success": 14, "failed": 1, "cancelled": 1}
    failed_error = runs.loc[runs["status"] == "failed", "error"].iloc[0]
    assert "\n" in failed_error and '"see"' in failed_error  # multi-line, quoted message survives


def test_load_runs_accepts_csv_path_and_reports_missing_file(results: Path, tmp_path: Path) -> None:
    assert len(load_runs(results / "runs.csv")) == 16
    with pytest.raises(FileNotFoundError, match="no runs file"):
        load_runs(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "tail",
    [
        "run9999,k,sweepA,succ",  # cut inside the status
        'run9999,k,sweepA,failed,"Traceback:\n  line one\n  line t',  # cut inside a multi-line quoted error
    ],
)
def test_torn_last_line_is_skipped_with_a_warning(results: Path, tail: str) -> None:
    with (results / "runs.csv").open("a", encoding="utf-8", newline="") as handle:
        handle.write(tail)
    with pytest.warns(RunsFileWarning, match="torn"):
        runs = load_runs(results)
    assert len(runs) == 16
    assert "run9999" not in set(runs["run_id"])


def test_complete_file_gives_no_warning(results: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_runs(results)


def test_unknown_extra_and_missing_optional_columns(tmp_path: Path) -> None:
    older = [
        "run_id",
        "status",
        "method",
        "model",
        "task",
        "seed",
        "lr",
        "trainable_params",
        "score",
        "brand_new",
    ]
    rows = [make_run(method="full", seed=s, score=0.5 + s / 10, brand_new="x") for s in range(2)]
    write_runs(tmp_path, rows, columns=older)
    runs = load_runs(tmp_path)
    assert "brand_new" in runs.columns and set(runs["brand_new"]) == {"x"}
    assert runs["peak_rss_bytes"].isna().all() and (runs["method_settings"] == "").all()
    table = comparison_table(runs)
    assert len(table) == 1
    assert table.loc[0, "score_mean"] == pytest.approx(0.55)
    assert table.loc[0, "mem_kind"] == ""


def test_file_without_status_column_counts_runs_as_successful(tmp_path: Path) -> None:
    write_runs(
        tmp_path, [make_run(method="full", seed=s, score=0.7) for s in range(3)], ["method", "seed", "score"]
    )
    table = comparison_table(load_runs(tmp_path))
    assert table.loc[0, "n_seeds"] == 3


def test_malformed_row_with_unknown_status_is_skipped(tmp_path: Path) -> None:
    rows = [
        make_run(method="full", seed=0, score=0.7),
        make_run(method="full", seed=1, score=0.1, status="exploded"),
    ]
    write_runs(tmp_path, rows)
    with pytest.warns(RunsFileWarning, match="unknown status"):
        runs = load_runs(tmp_path)
    assert list(runs["score"]) == [0.7]


# -------------------------------------------------------------------------------------- aggregation


def test_means_stds_and_seed_counts(results: Path) -> None:
    table = comparison_table(load_runs(results))
    assert list(table.columns) == list(COMPARISON_COLUMNS)
    assert len(table) == 6
    expected = {
        ("full", "vader", None): (0.92, 0.02, 3),
        ("lora", "vader", 8): (0.89, 0.01, 3),
        ("lora", "vader", 16): (0.92, math.sqrt(2) / 100, 2),
        ("ia3", "vader", None): (0.80, 0.0, 3),
        ("lora", "sst2", 8): (0.75, math.sqrt(0.005), 2),
    }
    for (method, task, rank), (mean, std, n) in expected.items():
        row = _row(table, method, task, rank)
        assert row["score_mean"] == pytest.approx(mean), (method, rank)
        assert row["score_std"] == pytest.approx(std, abs=1e-12), (method, rank)  # sample std, ddof=1
        assert row["n_seeds"] == n
    houlsby = _row(table, "houlsby")
    assert houlsby["score_mean"] == pytest.approx(0.85) and math.isnan(houlsby["score_std"])
    assert _row(table, "lora", rank=8)["seeds"] == "0,1,2"


def test_failed_runs_are_not_averaged_but_counted(results: Path) -> None:
    runs = load_runs(results)
    table = comparison_table(runs)
    lora8 = _row(table, "lora", rank=8)
    # The failed seed-3 run carries score 0.0; averaging it in would give 0.6675.
    assert lora8["score_mean"] == pytest.approx(0.89)
    assert (
        lora8["n_failed"] == 1
        and _row(table, "ia3")["n_failed"] == 1
        and _row(table, "full")["n_failed"] == 0
    )
    failed = failed_runs(runs)
    assert list(failed["status"]) == ["failed", "cancelled"]
    assert list(failed["method"]) == ["lora", "ia3"]
    assert "CUDA out of memory" in failed.loc[0, "error"]
    assert failed.loc[1, "error"] == "KeyboardInterrupt"


def test_parameters_memory_and_throughput(results: Path) -> None:
    table = comparison_table(load_runs(results))
    lora8 = _row(table, "lora", rank=8)
    assert lora8["trainable_params"] == 100_000
    assert lora8["trainable_pct"] == pytest.approx(100 * 100_000 / (FULL_PARAMS + 100_000))
    assert lora8["peak_mem_bytes"] == 2 * GIB and lora8["mem_kind"] == "GPU"
    assert lora8["train_tokens_per_s"] == pytest.approx(2000.0)
    sst2 = _row(table, "lora", task="sst2")
    assert sst2["peak_mem_bytes"] == 1 * GIB and sst2["mem_kind"] == "RSS"  # CPU run: RSS


def test_relative_figures_against_full_fine_tuning(results: Path) -> None:
    table = comparison_table(load_runs(results))
    lora8 = _row(table, "lora", rank=8)
    assert lora8["params_ratio"] == pytest.approx(100_000 / FULL_PARAMS)
    assert lora8["mem_ratio"] == pytest.approx(0.5)
    assert lora8["throughput_ratio"] == pytest.approx(2.0)
    assert lora8["score_delta"] == pytest.approx(-0.03)
    assert lora8["baseline_setting"] == "lr=2e-05"
    ia3 = _row(table, "ia3")
    assert ia3["mem_ratio"] == pytest.approx(0.375) and ia3["score_delta"] == pytest.approx(-0.12)
    full = _row(table, "full")
    assert full["params_ratio"] == 1.0 and full["score_delta"] == 0.0
    sst2 = _row(table, "lora", task="sst2")  # no full fine-tuning on sst2
    assert all(math.isnan(sst2[c]) for c in ("params_ratio", "mem_ratio", "throughput_ratio", "score_delta"))


def test_best_full_setting_is_the_baseline(tmp_path: Path) -> None:
    rows = [
        make_run(method="full", lr=1e-5, score=0.6),
        make_run(method="full", lr=1e-4, score=0.8),
        make_run(method="lora", score=0.7, trainable_params=10),
    ]
    write_runs(tmp_path, rows)
    table = comparison_table(load_runs(tmp_path))
    assert _row(table, "lora")["score_delta"] == pytest.approx(-0.1)
    assert _row(table, "lora")["baseline_setting"] == "lr=0.0001"


def test_pareto_set(results: Path) -> None:
    table = comparison_table(load_runs(results))
    vader = table[table["task"] == "vader"]
    front = {
        (row.method, None if pd.isna(row.rank) else int(row.rank)) for row in vader.itertuples() if row.pareto
    }
    assert front == {("ia3", None), ("lora", 8), ("lora", 16)}
    assert bool(_row(table, "lora", task="sst2")["pareto"]) is True


def test_pareto_front_function() -> None:
    params = [10, 100, 100, 200, 50, 1000, np.nan, 5]
    scores = [0.5, 0.9, 0.9, 0.9, 0.4, 0.95, 0.99, np.nan]
    assert pareto_front(params, scores).tolist() == [True, True, True, False, False, True, False, False]
    assert pareto_front([], []).tolist() == []


def test_duplicate_setting_and_seed_keeps_the_latest_run(tmp_path: Path) -> None:
    rows = [
        make_run(method="full", seed=0, score=0.1),
        make_run(method="full", seed=1, score=0.8),
        make_run(method="full", seed=0, score=0.6),  # rerun of seed 0, written later
    ]
    write_runs(tmp_path, rows)
    with pytest.warns(RunsFileWarning, match="only the latest"):
        table = comparison_table(load_runs(tmp_path))
    assert table.loc[0, "n_seeds"] == 2
    assert table.loc[0, "score_mean"] == pytest.approx(0.7)


def test_settings_with_different_lr_are_separate_rows(tmp_path: Path) -> None:
    rows = [
        make_run(method="lora", lr=lr, seed=s, method_settings=lora_settings(8))
        for lr in (1e-3, 1e-4)
        for s in (0, 1)
    ]
    write_runs(tmp_path, rows)
    table = comparison_table(load_runs(tmp_path))
    assert sorted(table["lr"]) == [1e-4, 1e-3]
    assert set(table["setting"]) == {
        "alpha=16 dropout=0 r=8 use_rslora=false lr=0.0001",
        "alpha=16 dropout=0 r=8 use_rslora=false lr=0.001",
    }


def test_no_successful_runs_gives_an_empty_table(tmp_path: Path) -> None:
    write_runs(tmp_path, [make_run(status="failed", error="boom", score="")])
    runs = load_runs(tmp_path)
    assert comparison_table(runs).empty
    assert len(failed_runs(runs)) == 1
    assert "No successful runs" in render(build_report(tmp_path), "text", wide=True)


# ------------------------------------------------------------------------------------ human formats


def test_human_units() -> None:
    assert report.human_bytes(2 * GIB) == "2 GiB"
    assert report.human_bytes(1536 * 1024**2) == "1.5 GiB"
    assert report.human_bytes(512) == "512 B"
    assert report.human_bytes(float("nan")) == "-"
    assert report.human_count(124_645_632) == "125M"
    assert report.human_count(8192) == "8.19k"
    assert report.human_count(7) == "7"


def test_text_report_states_ddof_and_lists_failures(results: Path) -> None:
    text = render(build_report(results), "text", wide=True)
    assert "ddof=1" in text
    assert "0.8900 ± 0.0100" in text and "0.9200 ± 0.0200" in text
    assert "2 GiB GPU" in text and "1 GiB RSS" in text
    failed_part = text.split("Failed or cancelled runs")[1]
    assert "CUDA out of memory" in failed_part and "KeyboardInterrupt" in failed_part
    assert "cancelled" in failed_part


def _markdown_tables(text: str) -> list[list[list[str]]]:
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            current.append(cells)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def test_markdown_parses_back(results: Path) -> None:
    text = render(build_report(results), "markdown")
    comparison, failed = _markdown_tables(text)
    header, rule, *rows = comparison
    assert header == list(report.DISPLAY_HEADERS)
    assert all(set(cell) <= set("-:") for cell in rule)
    assert len(rows) == 6 and all(len(r) == len(header) for r in rows)
    by_method = {(r[header.index("Method")], r[header.index("Setting")]): r for r in rows}
    lora16 = by_method[("lora", "alpha=16 dropout=0 r=16 use_rslora=false lr=0.001")]
    assert lora16[header.index("Score (mean ± std)")] == "0.9200 ± 0.0141"
    assert lora16[header.index("Seeds")] == "2"
    assert lora16[header.index("Pareto")] == "yes"
    assert lora16[header.index("Memory vs full")] == "0.625×"
    assert len(failed) == 2 + 2 and failed[2][2] == "failed" and "CUDA out of memory" in failed[2][-1]
    assert "ddof=1" in text


def test_csv_parses_back_with_raw_numbers(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "table.csv"
    assert report.main([str(results), "--output", str(out)]) == 0
    back = pd.read_csv(out)
    assert list(back.columns) == list(COMPARISON_COLUMNS)
    assert len(back) == 6
    lora8 = back[(back["method"] == "lora") & (back["rank"] == 8) & (back["task"] == "vader")].iloc[0]
    assert lora8["score_mean"] == pytest.approx(0.89) and lora8["score_std"] == pytest.approx(0.01)
    assert lora8["params_ratio"] == pytest.approx(100_000 / FULL_PARAMS)
    assert json.loads(lora8["method_settings"])["r"] == 8
    failed = pd.read_csv(tmp_path / "out" / "table_failed.csv")
    assert list(failed["status"]) == ["failed", "cancelled"]


def test_latex_output(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "table.tex"
    assert report.main([str(results), "--format", "latex", "--output", str(out)]) == 0
    tex = out.read_text(encoding="utf-8")
    assert tex.count(r"\begin{tabular}") == 2 and tex.count(r"\end{tabular}") == 2
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == 6 and all(line.endswith(r"\\") for line in body)
    assert all(line.count(" & ") == len(report.DISPLAY_HEADERS) - 1 for line in body)
    assert r"use\_rslora" in tex and r"0.8900 $\pm$ 0.0100" in tex and r"\%" in tex
    assert "±" not in tex and "×" not in tex  # everything escaped for LaTeX
    assert report.latex_escape("a_b & 5% {x}") == r"a\_b \& 5\% \{x\}"


def test_filters_and_sorting(results: Path) -> None:
    lora_only = build_report(results, methods=["lora"])
    assert set(lora_only.table["method"]) == {"lora"}
    # The method filter keeps the full baseline for the relative figures.
    assert _row(lora_only.table, "lora", rank=8)["params_ratio"] == pytest.approx(100_000 / FULL_PARAMS)
    assert list(lora_only.failed["method"]) == ["lora"]
    sst2 = build_report(results, tasks="sst2")
    assert list(sst2.table["task"]) == ["sst2"] and sst2.failed.empty
    swept = build_report(results, sweeps=["sweepB"])
    assert len(swept.table) == 1 and swept.n_runs == 2
    assert build_report(results, models=["roberta-base"]).table.empty
    by_score = build_report(results, sort="score", descending=True)
    scores = list(by_score.table["score_mean"])
    assert scores == sorted(scores, reverse=True)
    by_params = build_report(results, sort="trainable_params")
    assert list(by_params.table["trainable_params"]) == sorted(by_params.table["trainable_params"])
    with pytest.raises(ValueError, match="cannot sort"):
        build_report(results, sort="nonsense")


def test_default_order_puts_full_first(results: Path) -> None:
    table = comparison_table(load_runs(results))
    vader = table[table["task"] == "vader"]
    assert vader["method"].iloc[0] == "full"
    assert list(table["task"]) == sorted(table["task"])


# ------------------------------------------------------------------------------------- sweep table


def test_format_sweep_table(results: Path) -> None:
    text = format_sweep_table(results, "sweepA")
    lines = text.splitlines()
    assert lines[0] == "Sweep sweepA: 14 run(s): 12 success, 1 failed, 1 cancelled"
    header = lines[1].split()
    assert header[:4] == ["Method", "Rank", "LR", "Seed"] and header[-1] == "Status"
    body = lines[3 : 3 + 14]
    assert sum(line.split()[0] == "lora" for line in body) == 6
    failed_line = next(line for line in body if line.rstrip().endswith("failed"))
    assert sum(line.rstrip().endswith("failed") for line in body) == 1
    assert "0.0000" not in failed_line  # the failed run's score is not shown as a result
    assert any("0.8900 accuracy" in line and "2 GiB GPU" in line for line in body)
    tail = text.split("Failed or cancelled:")[1]
    assert "CUDA out of memory" in tail and "KeyboardInterrupt" in tail and "seed 3" in tail
    assert "sst2" not in text  # sweepB's runs are not shown


def test_format_sweep_table_without_runs(results: Path, tmp_path: Path) -> None:
    assert "no runs recorded" in format_sweep_table(results, "nope")
    assert "no runs file" in format_sweep_table(tmp_path / "missing", "sweepA")


# ---------------------------------------------------------------------------------------- the CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peftbench.report", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def test_cli_markdown(results: Path) -> None:
    done = _cli(str(results), "--format", "markdown")
    assert done.returncode == 0, done.stderr
    comparison = _markdown_tables(done.stdout)[0]
    assert len(comparison) == 2 + 6
    assert any("0.8000 ± 0.0000" in row for row in comparison)


def test_cli_filters_sort_and_errors(results: Path, tmp_path: Path) -> None:
    done = _cli(str(results), "--method", "lora", "--sort", "score", "--desc")
    assert done.returncode == 0, done.stderr
    assert "houlsby" not in done.stdout.split("Failed or cancelled")[0]
    assert done.stdout.index("r=16") < done.stdout.index("r=8 ")
    missing = _cli(str(tmp_path / "missing"))
    assert missing.returncode == 1 and "no runs file" in missing.stderr
    bad = _cli(str(results), "--sort", "bogus")
    assert bad.returncode == 2 and "cannot sort" in bad.stderr


def test_cli_writes_plots(results: Path, tmp_path: Path) -> None:
    assert (
        report.main([str(results), "--plots-dir", str(tmp_path / "plots"), "-o", str(tmp_path / "r.md")]) == 0
    )
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["score_vs_memory.png", "score_vs_params.png", "throughput.png"]
    assert all((tmp_path / "plots" / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)
    assert (tmp_path / "r.md").read_text(encoding="utf-8").startswith("# peftbench report")


def test_report_does_not_import_torch() -> None:
    code = "import sys, peftbench.report, peftbench.report.plots; assert 'torch' not in sys.modules, 'torch'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr


def test_speed_benchmark_runs_on_a_small_file() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "report_speed.py"), "--rows", "3000"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    match = re.search(r"report \(read \+ aggregate \+ text table\) on 3000 rows: ([\d.]+) s", done.stdout)
    assert match and float(match.group(1)) < 5.0
    assert "252 settings" in done.stdout
