"""log_sweep_to_wandb, run offline, read back from the run's own ``.wandb`` transaction log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftbench.report import load_runs
from tests.test_report_data import known_runs, write_runs

wandb = pytest.importorskip("wandb")

from peftbench.report.wandb_table import WANDB_TABLE_COLUMNS, log_sweep_to_wandb  # noqa: E402
from tests.wandb_log import _nested, _records_once_complete  # noqa: E402


def test_sweep_table_and_scatter_are_in_the_offline_run(offline: Path) -> None:
    results = offline / "results"
    write_runs(results, known_runs())
    runs = load_runs(results)
    sweep = runs[runs["sweep_id"] == "sweepA"]
    run_dir = offline / "wb"

    run_id = log_sweep_to_wandb(sweep, "sweepA", project="peftbench-test", mode="offline", dir=run_dir)

    files = list(run_dir.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1, list(run_dir.rglob("*"))
    records = _records_once_complete(files[0])
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "run" in kinds and "history" in kinds and "exit" in kinds

    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_id == run_id and run.job_type == "report" and run.run_group == "sweepA"
    assert run.project == "peftbench-test"

    history = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            history.update(_nested(record.history.item))
    assert history["comparison._type"] == "table-file"
    assert history["comparison.nrows"] == 5  # sweepA: full, lora r=8, lora r=16, ia3, houlsby
    assert history["failed_runs._type"] == "table-file" and history["failed_runs.nrows"] == 2

    # The table file the history points at holds the comparison rows.
    table_path = files[0].parent / "files" / history["comparison.path"]
    table = json.loads(table_path.read_text(encoding="utf-8"))
    assert table["columns"] == list(WANDB_TABLE_COLUMNS)
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    lora8 = next(r for r in rows if r["method"] == "lora" and r["rank"] == 8)
    assert lora8["score_mean"] == pytest.approx(0.89) and lora8["n_seeds"] == 3
    assert lora8["params_ratio"] == pytest.approx(100_000 / 22_000_000)
    houlsby = next(r for r in rows if r["method"] == "houlsby")
    assert houlsby["score_std"] is None  # one seed: no std, logged as null rather than NaN
    # Each setting's budget: these runs predate budget columns, so it is the 100 steps they trained.
    assert {(r["budget_unit"], r["budget"], r["budget_inferred"]) for r in rows} == {("steps", 100, True)}
    assert lora8["n_stopped_early"] == 0 and lora8["train_steps"] == 100

    # The scatter is a custom chart over that table: x = trainable_params, y = score_mean.
    config = {}
    for record in records:
        if record.WhichOneof("record_type") == "config":
            config.update(_nested(record.config.update))
    assert _nested(run.config.update)["budgets"] == ["100 steps"]
    scatter = config["_wandb.visualize.score_vs_params"]
    assert scatter["panel_config"]["stringSettings"]["title"] == (
        "Score vs trainable parameters (sweep sweepA, 100 steps)"
    )
    assert scatter["panel_config"]["panelDefId"] == "wandb/scatter/v0"
    assert scatter["panel_config"]["fieldSettings"] == {"x": "trainable_params", "y": "score_mean"}
