"""Speed: per-process caches that change no number, stage times, compiled training, CPU autocast."""

from __future__ import annotations

import copy
import csv
import json
import os

import pytest
import torch

from peftbench import cache
from peftbench.config import ModelConfig, TaskConfig, TrainConfig
from peftbench.errors import ConfigError
from peftbench.measure import ThroughputMeter
from peftbench.methods import get_method, method_names
from peftbench.speed import StageTimer, compile_model, used_precision
from tests.cases import all_cases
from tests.conftest import run_cli
from tests.test_e2e import FAST
from tests.tiny_models import FAMILIES


@pytest.fixture
def fresh_cache():
    cache.clear()
    yield
    cache.clear()


def _task() -> TaskConfig:
    return TaskConfig(name="vader", source="vader", kind="classification")


def test_cached_model_is_a_fresh_copy_with_the_seeds_head(tiny_bert_dir, fresh_cache):
    from peftbench.models import load_model_with_info

    # The saved tiny BERT has a 2-class head: a 3-class task gets a new one, drawn from the seed.
    cfg, task = ModelConfig(name=str(tiny_bert_dir)), TaskConfig(name="t", source="vader", num_labels=3)
    torch.manual_seed(5)
    plain, _, info = load_model_with_info(cfg, task)
    plain_rng = torch.random.get_rng_state()
    assert info["new_keys"] == ["classifier.bias", "classifier.weight"]

    torch.manual_seed(7)
    first, _ = cache.load_model(cfg, task, loader=load_model_with_info)  # a miss: loads and caches
    with torch.no_grad():  # training the first run's model (full fine-tuning) must not reach the cache
        for p in first.parameters():
            p.add_(1.0)
    torch.manual_seed(5)
    second, tokenizer = cache.load_model(cfg, task, loader=load_model_with_info)  # a hit
    assert torch.equal(torch.random.get_rng_state(), plain_rng)  # the same random draws as a plain load
    expected, got = plain.state_dict(), second.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    cached = next(iter(cache._models.values()))
    assert all(t.data_ptr() != got[k].data_ptr() for k, t in cached.state_dict.items())
    assert cache.cached_bytes() == sum(t.numel() * 4 for t in cached.state_dict.values())
    assert tokenizer.pad_token is not None


def test_cache_off_loads_every_time(tiny_bert_dir, fresh_cache, monkeypatch):
    calls = []

    def loader(cfg, task):
        calls.append(cfg.name)
        from peftbench.models import load_model_with_info

        return load_model_with_info(cfg, task)

    monkeypatch.setenv(cache.ENV, "off")
    cfg = ModelConfig(name=str(tiny_bert_dir))
    cache.load_model(cfg, _task(), loader=loader)
    cache.load_model(cfg, _task(), loader=loader)
    assert len(calls) == 2 and not cache._models
    monkeypatch.delenv(cache.ENV)
    cache.load_model(cfg, _task(), loader=loader)
    cache.load_model(cfg, _task(), loader=loader)
    assert len(calls) == 3


def test_task_key_changes_with_what_decides_the_tokens(tmp_path):
    model, train, task = "m", TrainConfig(), _task()
    key = cache.task_key(task, model, train, "eval")
    assert key == cache.task_key(copy.deepcopy(task), model, TrainConfig(), "eval")
    assert key != cache.task_key(task, "other-model", train, "eval")
    assert key != cache.task_key(task, model, TrainConfig(max_seq_length=16), "eval")
    assert key != cache.task_key(task, model, TrainConfig(eval_size=10), "eval")
    assert key != cache.task_key(task, model, train, "search")
    assert key != cache.task_key(TaskConfig(name="vader", source="vader", min_abs_rating=1.0), model, train, "eval")
    data = tmp_path / "train.csv"
    data.write_text("sentence,label\na,0\n")
    local = TaskConfig(name="local", source="local", data_files={"train": str(data)})
    before = cache.task_key(local, model, train, "eval")
    data.write_text("sentence,label\na,0\nb,1\n")  # same path, new contents
    assert cache.task_key(local, model, train, "eval") != before


def _read(results):
    rows = list(csv.DictReader(open(results / "runs.csv")))
    curves = {r["run_id"]: json.loads((results / "runs" / f"{r['run_id']}.json").read_text())["loss_curve"]
              for r in rows}
    return [(r["method"], r["seed"], r["trainable_params"], r["total_params"], r["score"],
             r["final_train_loss"], r["representation_drift"], curves[r["run_id"]]) for r in rows], rows


def test_cached_sweep_equals_runs_in_separate_processes(tiny_bert_dir, tmp_path):
    """Full fine-tuning first (it trains the base weights in place), then LoRA, in one process with the
    caches, against each run alone in its own process without them: the same rows."""
    common = [f"model.name={tiny_bert_dir}", "seed=1", "wandb.mode=disabled", *FAST]
    sweep = run_cli([*common, "method=full,lora", f"results_dir={tmp_path / 'one'}", "-m"], cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr
    env_off = {**os.environ, cache.ENV: "off"}
    for method in ("full", "lora"):
        alone = run_cli([*common, f"method={method}", f"results_dir={tmp_path / 'apart'}"], cwd=tmp_path, env=env_off)
        assert alone.returncode == 0, alone.stderr
    together, rows = _read(tmp_path / "one")
    apart, _ = _read(tmp_path / "apart")
    assert together == apart and len(together) == 2
    assert all(r["representation_drift"] for r in rows)  # LoRA's drift is against the cached base states
    for row in rows:
        stages = json.loads(row["stage_times_s"])
        assert list(stages) == ["setup", "load", "data", "train", "evaluate", "latency", "record", "answers"]
        assert stages["train"] >= float(row["train_time_s"]) > 0  # the loop, plus building its loader and optimizer
        assert row["precision"] == "fp32" and row["compile_time_s"] == ""


def test_evaluation_batches_by_length_and_scores_in_the_split_order(tiny_bert_dir, fresh_cache, monkeypatch):
    from peftbench import runner
    from peftbench.config import validate
    from peftbench.record import RunRecord
    from peftbench.tasks import load_task
    from tests.test_models import compose_run

    checked = validate(compose_run([f"model.name={tiny_bert_dir}", "train.eval_size=60", "train.eval_batch_size=8",
                                    "wandb.mode=disabled"]))
    cpu = torch.device("cpu")
    model, tokenizer = runner.build_model(checked, cpu, RunRecord())
    data = cache.load_task(checked.run.task, checked.run.model, tokenizer, checked.run.train, checked.run.eval_on,
                           loader=load_task)
    widths, scored = [], []
    model.register_forward_pre_hook(lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[1]),
                                    with_kwargs=True)
    score = data.score
    monkeypatch.setattr(data, "score", lambda predictions, references: (scored.append((predictions, references)),
                                                                         score(predictions, references))[1])
    result, _, _ = runner.evaluate(model, tokenizer, data, checked, cpu)

    lengths = [len(ids) for ids in data.eval["input_ids"]]
    assert len(set(lengths)) > 2 and widths == sorted(widths, reverse=True) and widths[0] == max(lengths)
    in_order = list(runner.eval_loader(data.eval, data, tokenizer, checked))
    assert sum(w * 8 for w in widths) < sum(b["input_ids"].numel() for b in in_order)  # less padding
    predictions, references = scored[0]
    assert references == [int(v) for v in data.eval["labels"]]  # scored in the split's order
    model.eval()
    with torch.no_grad():  # each example alone, unpadded, in the split's order
        alone = [int(model(input_ids=torch.tensor([ids])).logits.argmax(-1)) for ids in data.eval["input_ids"]]
    assert predictions == alone and result == score(alone, references)[0]


def test_stage_timer_adds_up_repeated_stages_and_times_a_failed_one():
    ticks = iter([0.0, 1.0, 1.0, 3.5, 10.0, 10.25])
    stages = StageTimer(clock=lambda: next(ticks))
    with stages("evaluate"):
        pass
    with stages("train"):
        pass
    with pytest.raises(ValueError), stages("evaluate"):
        raise ValueError
    assert stages.seconds == {"evaluate": 1.25, "train": 2.5}
    assert json.loads(stages.as_json()) == {"evaluate": 1.25, "train": 2.5}
    assert StageTimer().as_json() == ""


def test_throughput_leaves_out_the_excluded_clock():
    now, compiled = [0.0], [0.0]
    meter = ThroughputMeter(torch.device("cpu"), warmup_steps=1, clock=lambda: now[0],
                            excluded_clock=lambda: compiled[0])
    meter.begin()
    now[0], compiled[0] = 30.0, 29.0  # the first step compiled for 29 s: warm-up, not timed
    meter.step_done(4, 40)
    now[0] = 32.0
    meter.step_done(4, 40)
    now[0], compiled[0] = 39.0, 34.0  # a recompile of 5 s inside the timed window
    meter.step_done(4, 40)
    meter.end()
    assert meter.elapsed_s == pytest.approx(4.0) and meter.samples_per_s == pytest.approx(2.0)


def test_precision_used_on_the_cpu():
    cpu = torch.device("cpu")
    assert used_precision("fp32", cpu) == "fp32"
    assert used_precision("bf16", cpu) == ("bf16" if torch.amp.is_autocast_available("cpu") else "fp32")
    assert used_precision("fp16", cpu) == "fp32"  # fp16 autocast with gradient scaling is CUDA only


def test_bad_compile_settings_are_refused():
    with pytest.raises(ConfigError, match="train.compile_backend='tvm' is not one of inductor, aot_eager, eager"):
        TrainConfig(compile_backend="tvm")
    with pytest.raises(ConfigError, match="train.compile_mode='fast' is not one of"):
        TrainConfig(compile_mode="fast")
    with pytest.raises(ConfigError, match="needs train.compile_backend=inductor"):
        TrainConfig(compile_mode="max-autotune", compile_backend="aot_eager")


def _case_for(method: str):
    case = next((c for c in all_cases() if c.method == method), None)
    assert case is not None, f"method {method} has no row in tests/cases: add tests/cases/{method}.py"
    return case, "bert" if "bert" in case.families else case.families[0]


# Inductor needs a C++ compile per kernel: on this project's shared 2-core CPU the first step of a
# tiny BERT took 300 s, so the method table compiles with aot_eager (the same Dynamo graph capture
# and AOTAutograd forward/backward split as inductor, without the code generation).
@pytest.mark.parametrize("method", method_names())
def test_every_method_trains_compiled(method):
    case, family = _case_for(method)
    tiny = FAMILIES[family]()
    spec = get_method(method)
    eager = spec.apply(tiny.model(0), spec.config_cls(**case.config(family)))
    compiled = compile_model(copy.deepcopy(eager), backend="aot_eager", mode="default")
    torch._dynamo.reset()
    for model in (eager, compiled):
        model.eval()  # no dropout: the two must agree
    eager_loss, compiled_loss = tiny.loss(eager), tiny.loss(compiled)
    eager_loss.backward()
    compiled_loss.backward()
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-6)
    eager_grads = {n: p.grad for n, p in eager.named_parameters() if p.requires_grad}
    compiled_grads = {n: p.grad for n, p in compiled.named_parameters() if p.requires_grad}
    assert eager_grads.keys() == compiled_grads.keys() and eager_grads
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU's fallback")
def test_a_precision_the_cpu_lacks_is_said_at_the_start_and_recorded(tiny_bert_dir, tmp_path, capsys):
    from peftbench import runner
    from tests.test_budget import _compose

    record = runner.run(_compose([f"model.name={tiny_bert_dir}", f"results_dir={tmp_path}", *FAST,
                                  "train.precision=fp16", "device=cpu", "wandb.mode=disabled"]))
    assert record.status == "success", record.error
    assert record.precision == "fp32"
    err = capsys.readouterr().err
    assert "train.precision=fp16 is not available on cpu" in err and "this run trains in fp32" in err
    assert err.index("train.precision=fp16") < err.index("[train]")  # said before training starts


def test_compiled_run_records_compile_time_apart(tiny_bert_dir, tmp_path):
    from peftbench import runner
    from tests.test_budget import _compose

    record = runner.run(_compose([f"model.name={tiny_bert_dir}", f"results_dir={tmp_path}", *FAST,
                                  "train.compile=true", "train.compile_backend=aot_eager", "train.latency_batches=1",
                                  "wandb.mode=disabled"]))
    assert record.status == "success", record.error
    assert record.compile_time_s > 0 and record.train_samples_per_s > 0
    assert json.loads(record.config_json)["train"]["compile"] is True
    stages = json.loads(record.stage_times_s)
    assert record.compile_time_s < stages["train"] + stages["evaluate"] + stages["latency"]
    assert 0 <= record.score <= 1 and record.infer_latency_merged_ms > 0


def test_the_base_models_reference_states_are_taken_once_per_process(tiny_bert_dir, tmp_path, monkeypatch):
    """The forgetting probe's pass over the pretrained model is the same for every run of one base
    model: a second run reuses it (one base pass and one tuned pass per run, not two of each)."""
    from peftbench import forgetting
    from peftbench.runner import run
    from tests.test_models import compose_run

    cache.clear()
    passes = []
    states = forgetting.Probe.states
    monkeypatch.setattr(forgetting.Probe, "states", lambda self, model: passes.append(1) or states(self, model))
    common = [f"model.name={tiny_bert_dir}", f"results_dir={tmp_path}", "wandb.mode=disabled", *FAST]
    first = run(compose_run([*common, "method=lora"]))
    second = run(compose_run([*common, "method=lora", "seed=1"]))
    assert first.status == second.status == "success"
    assert len(passes) == 3  # base once, then each run's tuned model
    assert first.representation_drift is not None and second.representation_drift is not None
    cache.clear()


@pytest.mark.skipif(__import__("peftbench.measure", fromlist=["x"]).read_peak_rss_bytes() is None,
                    reason="needs Linux's peak-RSS counter")
def test_the_memory_peak_leaves_out_the_load_and_the_probes_base_pass(tiny_bert_dir, tmp_path, monkeypatch):
    """Only the first run of a process makes the probe's pass over the pretrained model (a causal
    LM's full-vocabulary logits: ~1.2 GiB on SmolLM2): the peak starts after it in every run, so
    the runs of a sweep are measured over the same stages."""
    from peftbench import forgetting
    from peftbench.runner import run
    from tests.test_models import compose_run

    common = [f"model.name={tiny_bert_dir}", f"results_dir={tmp_path}", "wandb.mode=disabled", *FAST]
    take_base = forgetting.Probe.take_base
    quiet = run(compose_run([*common, "method=lora"]))

    def heavy_base_pass(self, *args, **kwargs):  # as a big pass over the pretrained model would
        transient = torch.ones(400 * 2**20 // 4)
        del transient
        return take_base(self, *args, **kwargs)

    monkeypatch.setattr(forgetting.Probe, "take_base", heavy_base_pass)
    heavy = run(compose_run([*common, "method=lora", "seed=1"]))
    assert quiet.status == heavy.status == "success"
    assert abs(heavy.peak_rss_bytes - quiet.peak_rss_bytes) < 150 * 2**20
