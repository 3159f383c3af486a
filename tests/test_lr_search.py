"""Learning-rate search with the Optuna sweeper (conf/hydra/sweeper/lr_search.yaml), through the real CLI."""

from __future__ import annotations

import csv
import math
import shlex

import pytest
import yaml

from peftbench import best
from peftbench.__main__ import FAILED_TRIAL_SCORE, sweep_objective
from tests.conftest import run_cli
from tests.test_e2e import FAST

QUICK = [*FAST, "train.latency_batches=0", "wandb.mode=disabled"]


def _rows(results):
    return list(csv.DictReader(open(results / "runs.csv")))


def _optuna_results(results):
    (path,) = results.glob("hydra/*/optimization_results.yaml")
    return yaml.safe_load(path.read_text())


def test_sweep_objective_reports_a_failed_run_as_the_worst_score():
    assert sweep_objective(0.75) == 0.75
    assert sweep_objective("0.5") == 0.5
    for failed in (None, "", math.nan, math.inf):
        assert sweep_objective(failed) == FAILED_TRIAL_SCORE == -math.inf


def test_search_records_every_trial_and_picks_the_best_row(tiny_bert_dir, tmp_path):
    results = tmp_path / "results"
    proc = run_cli(["hydra/sweeper=lr_search", "hydra.sweeper.n_trials=3", f"model.name={tiny_bert_dir}",
                    f"results_dir={results}", *QUICK, "-m"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # Optuna's storage layer (alembic) logs each of its plugins at INFO as the search starts: not ours to show.
    output = proc.stderr + proc.stdout
    assert "Study name" in output and "setup plugin" not in output
    assert "A new study created" not in output  # optuna's duplicate of the sweeper's "Study name" line
    rows = _rows(results)
    assert len(rows) == 3 and all(r["status"] == "success" for r in rows)
    assert len({r["sweep_id"] for r in rows}) == 1  # every trial is tagged with its search
    lrs = [float(r["lr"]) for r in rows]
    assert len(set(lrs)) == 3 and all(1e-5 <= lr <= 1e-1 for lr in lrs)  # drawn from the log interval
    scores = [float(r["score"]) for r in rows]

    # Optuna's own record of the best trial is the row with the highest score.
    found = _optuna_results(results)
    assert found["best_value"] == pytest.approx(max(scores))
    best_lr = found["best_params"]["train.lr"]
    (best_row,) = [r for r in rows if float(r["lr"]) == pytest.approx(best_lr, rel=1e-12)]
    assert float(best_row["score"]) == max(scores)

    # The rerun of the best setting over seeds: printed at the end of the search and by peftbench.best.
    (setting,) = best.best_settings(results)
    assert setting.method == "lora" and setting.n_trials == 3 and setting.n_failed == 0
    assert setting.score == max(scores) and setting.params["train.lr"] == pytest.approx(best_lr, rel=1e-12)
    command = best.rerun_command(setting, "0,1,2")
    assert command[:3] == ["python", "-m", "peftbench"] and command[-2:] == ["seed=0,1,2", "-m"]
    assert f"model.name={tiny_bert_dir}" in command and f"results_dir={results}" in command
    assert "train.steps=6" in command
    assert [c for c in command if c.startswith("train.lr=")] == [f"train.lr={setting.params['train.lr']!r}"]
    assert not any(c.startswith(("hydra/sweeper", "hydra.sweeper", "eval_on", "seed=0 ")) for c in command)
    assert shlex.join(command) in proc.stdout


def test_a_failed_trial_does_not_stop_the_search(tiny_bert_dir, tmp_path, capsys):
    # The grid visits both values; a negative learning rate is refused, so that trial's run fails.
    results = tmp_path / "results"
    proc = run_cli(["hydra/sweeper=lr_search", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2",
                    "train.lr=choice(-1.0,0.001)", f"model.name={tiny_bert_dir}",
                    f"results_dir={results}", *QUICK, "-m"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # a search expects some trials to fail
    rows = _rows(results)
    assert sorted(r["status"] for r in rows) == ["failed", "success"]
    assert "did not succeed" in proc.stderr
    found = _optuna_results(results)
    assert found["best_params"]["train.lr"] == 0.001
    (ok,) = [r for r in rows if r["status"] == "success"]
    assert found["best_value"] == pytest.approx(float(ok["score"]))

    assert best.main([str(results), "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "best of 2 trial(s) (1 failed)" in out and "train.lr=0.001 " in out and "seed=0,1 -m" in out


def test_the_rerun_of_a_search_keeps_its_budget(tiny_bert_dir, tmp_path):
    results = tmp_path / "results"
    quick = [a for a in QUICK if not a.startswith("train.steps=")]
    proc = run_cli(["hydra/sweeper=lr_search", "hydra.sweeper.n_trials=2", f"model.name={tiny_bert_dir}",
                    "budget=samples", "train.samples=40", f"results_dir={results}", *quick, "-m"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = _rows(results)
    assert [(r["budget_unit"], r["train_samples"]) for r in rows] == [("samples", "40")] * 2
    (setting,) = best.best_settings(results)
    command = best.rerun_command(setting, "0,1,2")
    assert "budget=samples" in command and "train.samples=40" in command  # the seeds get the same budget


def test_without_the_search_folder_the_rerun_names_the_method_group_and_its_own_rank(tmp_path):
    """A row alone (its Hydra sweep folder deleted) still gives a command that reruns the right
    method: the bridge's config group with its peft type, and VeRA's rank as ``method.rank``."""
    import json

    from peftbench.record import RunRecord, append_csv_row

    rows = [("vera", {"name": "vera", "rank": 256}, 256, 0.71),
            ("peft:loha", {"name": "peft", "peft_type": "LOHA", "options": {"r": 8}}, None, 0.69),
            ("lora", {"name": "lora", "rank": 4}, 4, 0.72),
            ("peft:lokr", {"name": "peft", "peft_type": "lokr",
                           "options": {"r": 8, "alpha": 16, "target_modules": None}}, None, 0.70)]
    for i, (label, method, rank, score) in enumerate(rows):
        record = RunRecord(run_id=f"r{i}", sweep_id="s1", status="success", model="m", task="t", method=label,
                           seed=0, rank=rank, lr=0.002, score=score, metric="accuracy",
                           config_json=json.dumps({"method": method, "train": {"lr": 0.002}}))
        append_csv_row(tmp_path / "runs.csv", record.to_row())
    found = {s.method: s for s in best.best_settings(tmp_path, searches=["s1"])}
    assert not any(s.complete for s in found.values())  # said in the printed comment: only method, lr, rank
    assert found["vera"].overrides == ["method=vera", "train.lr=0.002", "method.rank=256"]
    assert found["peft:loha"].overrides == ["method=peft", "method.peft_type=LOHA", "train.lr=0.002"]
    assert found["lora"].overrides == ["method=lora", "train.lr=0.002", "rank=4"]  # LoRA follows the top-level rank
    assert found["peft:lokr"].overrides == ["method=lokr", "train.lr=0.002"]  # the shipped recipe's options


def test_a_search_whose_best_trial_did_not_learn_says_so(tmp_path):
    import json

    from peftbench.record import RunRecord, append_csv_row

    for i, (method, score) in enumerate([("ia3", 0.556), ("ia3", 0.552), ("lora", 0.71)]):
        record = RunRecord(run_id=f"r{i}", sweep_id="s1", status="success", model="m", task="t", method=method,
                           seed=0, lr=0.002 * (i + 1), score=score, metric="accuracy", baseline_score=0.5535,
                           config_json=json.dumps({"method": {"name": method}, "train": {"lr": 0.002}}))
        append_csv_row(tmp_path / "runs.csv", record.to_row())
    found = {s.method: s for s in best.best_settings(tmp_path, searches=["s1"])}
    assert found["ia3"].did_not_learn and not found["lora"].did_not_learn
    assert "it did not learn (the majority-class baseline scores 0.5535), nor did any other trial" in best.describe(
        found["ia3"])
    assert "did not learn" not in best.describe(found["lora"])


def test_a_generation_search_whose_best_trial_scored_zero_did_not_learn(tmp_path):
    """Exact match has no majority class: the best trial must beat the zero-shot score (and 0)."""
    import json

    from peftbench.record import RunRecord, append_csv_row

    for i, (method, score, zero_shot) in enumerate([("ia3", 0.0, 0.0), ("lora", 0.0, None), ("full", 0.25, 0.0)]):
        record = RunRecord(run_id=f"r{i}", sweep_id="s1", status="success", model="m", task="arithmetic",
                           method=method, seed=0, lr=0.002, score=score, metric="exact_match",
                           zero_shot_score=zero_shot,
                           config_json=json.dumps({"method": {"name": method}, "train": {"lr": 0.002}}))
        append_csv_row(tmp_path / "runs.csv", record.to_row())
    found = {s.method: s for s in best.best_settings(tmp_path, searches=["s1"])}
    assert found["ia3"].did_not_learn and found["lora"].did_not_learn and not found["full"].did_not_learn
    assert "it did not learn (it does not beat the pretrained model's zero-shot 0.0000 by 0.01)" in best.describe(
        found["ia3"])
    assert "it did not learn (it does not beat 0 by 0.01)" in best.describe(found["lora"])
