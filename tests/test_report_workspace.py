"""The sweep's wandb workspace view, built offline (nothing is uploaded): its panels and their keys."""

from __future__ import annotations

import csv

import pytest

pytest.importorskip("wandb_workspaces")

from peftbench.report import main  # noqa: E402
from peftbench.report.workspace import build_workspace, eval_metrics, memory_key  # noqa: E402


def _panels(view) -> dict[str, dict]:
    spec = view._to_model().model_dump(by_alias=True)["spec"]["section"]["panelBankConfig"]["sections"]
    return {panel["config"]["chartTitle"]: {**panel, "section": section["name"]}
            for section in spec for panel in section["panels"]}


def test_the_view_has_every_panel_on_the_right_keys():
    view = build_workspace("me", "peftbench", "sweep-1", memory="peak_gpu_mem_bytes",
                           metrics=["eval/accuracy", "eval/f1"])
    assert view.entity == "me" and view.project == "peftbench" and view.name == "peftbench sweep-1"
    panels = _panels(view)
    params = panels["Score vs trainable parameters (log)"]
    assert params["viewType"] == "Scatter Plot" and params["section"] == "Comparison"
    assert (params["config"]["xAxis"], params["config"]["yAxis"]) == ("summary:trainable_params", "summary:score")
    assert params["config"]["xAxisLogScale"] is True
    memory = panels["Score vs peak memory (peak_gpu_mem_bytes)"]["config"]
    assert (memory["xAxis"], memory["yAxis"]) == ("summary:peak_gpu_mem_bytes", "summary:score")
    parallel = panels["Method, rank, lr and score"]
    assert parallel["viewType"] == "Parallel Coordinates Plot"
    assert [c["accessor"] for c in parallel["config"]["columns"]] == [
        "config:method.value", "config:rank.value", "config:lr.value", "summary:score"]
    bars = panels["Training throughput per method (tokens/s, median, min-max)"]
    assert bars["viewType"] == "Bar Chart" and bars["config"]["metrics"] == ["summary_metrics.train_tokens_per_s"]
    assert bars["config"]["groupBy"] == "method.value" and bars["config"]["groupAgg"] == "median"
    loss = panels["Training loss by method (mean over runs)"]
    assert loss["viewType"] == "Run History Line Plot" and loss["section"] == "Training"
    assert loss["config"]["metrics"] == ["train/loss"] and loss["config"]["groupBy"] == "method.value"
    assert loss["config"]["groupAgg"] == "mean" and loss["config"]["xAxis"] == "_step"
    assert panels["eval/f1 by method (mean over runs)"]["config"]["metrics"] == ["eval/f1"]
    assert panels["Training loss against tokens seen"]["config"]["xAxis"] == "train/tokens_seen"
    runset = view._to_model().model_dump(by_alias=True)["spec"]["section"]["runSets"][0]
    assert "sweep-1" in str(runset["filters"]) and "sweep_id" in str(runset["filters"])
    assert "method" in str(runset["grouping"])


def test_keys_come_from_the_sweeps_rows():
    cpu = [{"peak_gpu_mem_bytes": "", "metric": "accuracy"}, {"peak_gpu_mem_bytes": "", "metric": "accuracy"}]
    assert memory_key(cpu) == "peak_rss_bytes" and eval_metrics(cpu) == ["eval/accuracy"]
    gpu = [{"peak_gpu_mem_bytes": "123", "metric": "matthews_correlation"}]
    assert memory_key(gpu) == "peak_gpu_mem_bytes" and eval_metrics(gpu) == ["eval/matthews_correlation"]


def test_saving_needs_a_logged_in_wandb_and_says_so(tmp_path, monkeypatch, capsys):
    with open(tmp_path / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["run_id", "sweep_id", "metric", "peak_gpu_mem_bytes"])
        writer.writeheader()
        writer.writerow({"run_id": "a", "sweep_id": "s1", "metric": "accuracy", "peak_gpu_mem_bytes": ""})
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert main([str(tmp_path), "--wandb-workspace", "--sweep", "s1"]) == 2
    assert "needs a logged-in wandb (online): run `wandb login`" in capsys.readouterr().err
    assert main([str(tmp_path), "--wandb-workspace", "--sweep", "nosuch"]) == 2
    assert "no runs of sweep 'nosuch'" in capsys.readouterr().err
    assert main([str(tmp_path), "--wandb-workspace"]) == 2
    assert "--wandb-workspace needs one --sweep" in capsys.readouterr().err
