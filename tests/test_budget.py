"""Equal budgets: steps, epochs, samples or tokens; per-method warm-up and schedule; early stopping."""

from __future__ import annotations

import csv
import math
import pickle

import pytest
import torch
from hydra import compose, initialize_config_dir

from peftbench.budget import BatchPlan
from peftbench.config import register_configs, validate
from peftbench.errors import ConfigError
from peftbench.runner import EarlyStopper, make_schedule
from tests.conftest import REPO, run_cli

register_configs()

FAST = ["train.batch_size=8", "train.eval_size=32", "train.log_every=2", "train.measure_warmup_steps=1",
        "train.latency_batches=0", "wandb.mode=disabled"]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


def _plan(unit: str, amount: float, lengths=None, batch_size: int = 4, seed: int = 0) -> list[list[int]]:
    return list(BatchPlan(lengths or [1 + i % 5 for i in range(10)], batch_size, unit, amount, seed))


# --- the batch plan ---------------------------------------------------------------------------------

def test_steps_and_epochs_budgets_count_batches():
    assert len(_plan("steps", 7)) == 7
    # 10 examples in batches of 4: 3 batches an epoch (4, 4, 2); 2.5 epochs = ceil(7.5) = 8 batches.
    batches = _plan("epochs", 2.5)
    assert len(batches) == 8 and [len(b) for b in batches[:3]] == [4, 4, 2]
    for epoch in range(2):  # every epoch is a permutation of the whole split, each a new one
        assert sorted(i for b in batches[3 * epoch: 3 * epoch + 3] for i in b) == list(range(10))
    assert batches[:3] != batches[3:6]
    assert len(BatchPlan([1] * 10, 4, "epochs", 2.5, seed=0)) == 8


def test_samples_budget_cuts_the_last_batch_at_the_budget():
    batches = _plan("samples", 13)
    assert [len(b) for b in batches] == [4, 4, 2, 3]  # the epoch's short batch, then the cut one
    assert sum(len(b) for b in batches) == 13


def test_the_same_examples_in_the_same_order_whatever_the_batch_size():
    small = [i for b in _plan("samples", 23, batch_size=3) for i in b]
    large = [i for b in _plan("samples", 23, batch_size=10) for i in b]
    # The order is the seed's; only where the batches are cut differs (epoch ends cut batches too).
    assert small == large and len(small) == 23
    assert small != [i for b in _plan("samples", 23, batch_size=3, seed=1) for i in b]


def test_tokens_budget_stops_at_the_first_example_that_reaches_it():
    lengths = [3, 7, 2, 9, 4, 6, 5, 8, 1, 10]
    batches = _plan("tokens", 40, lengths=lengths)
    seen = [i for b in batches for i in b]
    total = sum(lengths[i] for i in seen)
    assert total >= 40 and total - lengths[seen[-1]] < 40
    assert len(BatchPlan(lengths, 4, "tokens", 40, seed=0)) == len(batches)  # the schedule's length
    assert sum(lengths[i] for b in _plan("tokens", 1000, lengths=lengths) for i in b) >= 1000  # epochs cycle


def test_batch_plan_refuses_an_unknown_unit_and_an_empty_split():
    with pytest.raises(ValueError, match="minutes"):
        BatchPlan([1, 2], 2, "minutes", 5, seed=0)
    with pytest.raises(ValueError, match="empty"):
        BatchPlan([], 2, "steps", 5, seed=0)


# --- config -----------------------------------------------------------------------------------------

def test_budget_group_switches_the_unit_and_the_amount_is_required():
    assert validate(_compose([])).budget == ("steps", 150)
    assert validate(_compose(["budget=tokens", "train.tokens=5000"])).budget == ("tokens", 5000)
    assert validate(_compose(["budget=samples", "train.samples=640"])).budget == ("samples", 640)
    assert validate(_compose(["budget=epochs"])).budget == ("epochs", 3)
    with pytest.raises(ConfigError, match=r"got none\. Pick the unit with budget=<unit> and set its amount"):
        validate(_compose(["budget=tokens"]))


@pytest.mark.parametrize("overrides,message", [
    (["train.samples=100"], r"exactly one of .*got train\.steps=150, train\.samples=100"),
    (["train.steps=null"], r"exactly one of .*got none"),
    (["budget=tokens", "train.tokens=0"], r"train\.tokens must be a positive integer"),
    (["budget=epochs", "train.epochs=0"], r"train\.epochs must be positive"),
    (["train.early_stopping_patience=2"], r"needs evaluations during training.*train\.eval_every"),
    (["train.schedule=step"], r"train\.schedule='step' is not one of linear, cosine, constant"),
    (["train.warmup_ratio=1.0"], r"train\.warmup_ratio must be in \[0, 1\)"),
    (["method.schedule=exp"], r"method\.schedule='exp' is not one of linear, cosine, constant"),
])
def test_bad_budgets_and_schedules_are_refused_with_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(_compose(overrides))


def test_warmup_and_schedule_come_from_the_method_unless_train_sets_them():
    lora, houlsby, prefix = (validate(_compose([f"method={m}"])) for m in ("lora", "houlsby", "prefix"))
    assert (lora.warmup_ratio, lora.schedule) == (0.06, "linear")
    assert (houlsby.warmup_ratio, houlsby.schedule) == (0.1, "linear")
    assert prefix.warmup_ratio == 0.0
    override = validate(_compose(["method=houlsby", "train.warmup_ratio=0.2", "train.schedule=cosine"]))
    assert (override.warmup_ratio, override.schedule) == (0.2, "cosine")
    assert "warmup_ratio" not in override.method_settings  # the recipe is not a setting of the method


# --- schedule and early stopping --------------------------------------------------------------------

def _lrs(schedule: str, warmup: int, total: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_schedule(optimizer, schedule, warmup, total)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_schedules_warm_up_linearly_then_follow_their_shape():
    linear, cosine, constant = (_lrs(name, 4, 20) for name in ("linear", "cosine", "constant"))
    for lrs in (linear, cosine, constant):
        assert lrs[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert linear[12] == pytest.approx(0.5)  # halfway through the 16 decay steps
    assert cosine[12] == pytest.approx(0.5) and cosine[8] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert linear[19] == pytest.approx(1 / 16) and constant[19] == 1.0


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
@pytest.mark.parametrize(("warmup", "total"), [(0, 1), (0, 17), (3, 17), (5, 5), (1, 150), (15, 150)])
def test_schedules_equal_transformers_get_scheduler(schedule, warmup, total):
    # Ours computes the multipliers itself (importing transformers.optimization cost seconds); they
    # must be transformers' own, step for step, one past the end included.
    from transformers import get_scheduler

    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[schedule]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)
    expected = [reference.lr_lambdas[0](step) for step in range(total + 2)]
    ours = make_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), schedule, warmup, total)
    assert [ours.lr_lambdas[0](step) for step in range(total + 2)] == pytest.approx(expected, abs=1e-12)
    assert pickle.loads(pickle.dumps(ours.state_dict()))["base_lrs"] == [1.0]


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="linear, cosine or constant"):
        make_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), "cosine_with_restarts", 0, 5)


def test_early_stopper_counts_evaluations_without_a_gain():
    stopper = EarlyStopper(patience=2, min_delta=0.01)
    assert [stopper.should_stop(s) for s in (0.5, 0.6, 0.605, 0.7, 0.7, 0.69)] == [
        False, False, False, False, False, True]
    never = EarlyStopper(patience=None)
    assert not any(never.should_stop(0.5) for _ in range(10))


# --- end to end -------------------------------------------------------------------------------------

def _rows(results):
    return list(csv.DictReader(open(results / "runs.csv")))


def test_token_and_sample_budgets_are_spent_and_recorded(tiny_bert_dir, tmp_path):
    results = tmp_path / "results"
    base = [f"model.name={tiny_bert_dir}", f"results_dir={results}", *FAST]
    for args in (["budget=tokens", "train.tokens=600"], ["budget=samples", "train.samples=52"],
                 ["budget=samples", "train.samples=52", "train.batch_size=5"]):
        proc = run_cli([*base, *args], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    tokens, samples8, samples5 = _rows(results)
    assert tokens["budget_unit"] == "tokens" and float(tokens["budget"]) == 600
    assert 600 <= int(tokens["train_tokens"]) < 600 + 128  # cut at the example that reaches it
    assert tokens["budget_steps"] == tokens["train_steps"] and tokens["stopped_early"] == "False"
    assert tokens["schedule"] == "linear" and float(tokens["warmup_ratio"]) == 0.06
    for row, steps in ((samples8, 7), (samples5, 11)):  # ceil(52 / 8) and ceil(52 / 5)
        assert row["budget_unit"] == "samples" and int(row["train_samples"]) == 52
        assert int(row["train_steps"]) == int(row["budget_steps"]) == steps
    # The same 52 examples, whatever the batch size: the same tokens.
    assert samples8["train_tokens"] == samples5["train_tokens"]


def test_early_stopper_describes_each_evaluation_and_its_stop():
    stopper = EarlyStopper(patience=1, min_delta=0.01)
    stopper.should_stop(0.8)
    assert stopper.describe("accuracy", 10, 60, 0.8, False) == "[eval] step 10/60: accuracy=0.8000 (best 0.8000)"
    assert stopper.should_stop(0.75)
    line = stopper.describe("accuracy", 20, 60, 0.75, True)
    assert line.startswith("[eval] step 20/60: accuracy=0.7500 (best 0.8000)\n[train] early stopping at step 20 of 60")
    assert "not improved by more than 0.01 in 1 evaluation(s)" in line


def test_early_stopping_ends_the_run_before_its_budget_and_marks_it(tiny_bert_dir, tmp_path, capsys):
    from peftbench.runner import run

    # A learning rate too small to move the score: the second evaluation brings no gain.
    cfg = _compose([f"model.name={tiny_bert_dir}", f"results_dir={tmp_path}", *FAST, "train.steps=20",
                    "train.lr=1e-12", "train.eval_every=2", "train.early_stopping_patience=1"])
    record = run(cfg)
    assert record.status == "success", record.error
    assert record.stopped_early is True and record.stop_reason == "early_stopping"
    assert (record.train_steps, record.budget_steps) == (4, 20)
    assert [step for step, _ in record.eval_curve] == [2, 4]  # the final score is the step-4 point
    printed = capsys.readouterr().err  # each evaluation's score and the stop are on screen
    assert "[eval] step 2/20: accuracy=" in printed and "[train] early stopping at step 4 of 20" in printed
    (row,) = _rows(tmp_path)
    assert row["stopped_early"] == "True" and row["train_steps"] == "4"


def test_a_run_that_fails_during_training_records_how_far_it_went(tiny_bert_dir, tmp_path, monkeypatch):
    import peftbench.runner as runner

    real_build = runner.build_model

    def build_with_fault(*args, **kwargs):
        model, tokenizer = real_build(*args, **kwargs)
        forward, calls = model.forward, []

        def failing_forward(**batch):
            calls.append(1)
            if len(calls) == 4:  # an injected fault in the fourth training step
                raise RuntimeError("injected fault")
            return forward(**batch)

        model.forward = failing_forward
        return model, tokenizer

    monkeypatch.setattr(runner, "build_model", build_with_fault)
    record = runner.run(_compose([f"model.name={tiny_bert_dir}", f"results_dir={tmp_path}", *FAST,
                                  "train.steps=10"]))
    assert record.status == "failed" and "injected fault" in record.error
    assert (record.train_steps, record.budget_steps, record.train_samples) == (3, 10, 24)
    assert record.stopped_early is True and record.stop_reason == "failed"
