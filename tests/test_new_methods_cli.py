"""prompt, vera and bitfit through the harness: their configs validate, bad settings are refused
before training naming the key, and a run records the method's own rank."""

from __future__ import annotations

import csv

import pytest
from hydra import compose, initialize_config_dir

from peftbench.config import register_configs, validate
from peftbench.errors import ConfigError
from peftbench.record import RunRecord
from peftbench.runner import describe
from tests.conftest import REPO, run_cli

register_configs()


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.mark.parametrize("method,lr,settings", [
    ("prompt", 0.3, {"num_virtual_tokens": 20, "init": "random_vocab"}),
    ("vera", 2e-2, {"rank": 1024, "d_initial": 0.1, "projection_seed": 0}),
    ("bitfit", 1e-3, {"biases": "all"}),
])
def test_the_recipes_validate(method, lr, settings):
    checked = validate(_compose([f"method={method}"]))
    assert checked.method_name == method and checked.lr == lr
    assert settings.items() <= checked.method_settings.items()


@pytest.mark.parametrize("overrides,expected", [
    (["method=vera", "method.rank=0"], "rank (VeRA's r, for example 256 or 1024) must be a positive integer, got 0"),
    (["method=prompt", "method.init=zeros"], "init='zeros' is not one of random_vocab, uniform, text"),
    (["method=prompt", "method.num_virtual_tokens=0"], "num_virtual_tokens must be a positive integer"),
    (["method=bitfit", "method.biases=some"], "biases='some' is not one of all, no_norm"),
])
def test_bad_settings_are_refused_naming_the_key(overrides, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        validate(_compose(overrides))


def test_the_record_holds_the_methods_own_rank():
    from omegaconf import OmegaConf

    for overrides, rank in ((["method=vera"], 1024), (["method=vera", "method.rank=64"], 64),
                            (["method=lora", "rank=4"], 4), (["method=bitfit"], None)):
        record = RunRecord()
        describe(record, OmegaConf.to_container(_compose(overrides), resolve=True))
        assert record.rank == rank, overrides


def test_cli_refuses_vera_rank_zero_before_training(tmp_path):
    proc = run_cli(["method=vera", "method.rank=0", f"results_dir={tmp_path}", "wandb.mode=disabled"],
                   cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "rank" in proc.stderr and "positive integer" in proc.stderr, proc.stderr
    assert "[train]" not in proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "runs.csv")))
    assert [r["status"] for r in rows] == ["failed"] and rows[0]["method"] == "vera"


FAST = ["train.steps=3", "train.batch_size=4", "train.eval_size=6", "train.eval_batch_size=4", "train.log_every=1",
        "train.measure_warmup_steps=0", "train.latency_batches=1", "wandb.mode=disabled", "task.max_new_tokens=4"]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    from tests.test_models import save_tiny

    root = tmp_path_factory.mktemp("tiny")
    return {family: save_tiny(family, root / family) for family in ("llama", "t5")}


def _run(overrides: list[str]):
    from peftbench.runner import run
    from tests.test_models import compose_run

    return run(compose_run(overrides))


def test_generation_tasks_run_end_to_end(tiny_dirs, tmp_path):
    arithmetic = ["task=arithmetic", f"model.name={tiny_dirs['llama']}", f"results_dir={tmp_path}",
                  "task.num_train=40", "task.num_eval=6", *FAST]
    # init=text reads the model folder's own tokenizer; the harness's left-padded batches and
    # position_ids go through the prompt's hook, in training and in generation.
    prompt = _run([*arithmetic, "method=prompt", "method.num_virtual_tokens=3", "method.init=text",
                   "method.init_text='Q: 1+1'"])
    assert prompt.status == "success", prompt.error
    assert prompt.trainable_params == 3 * 32 and prompt.metric == "exact_match"
    # The FLOPs per counted token include the 3 virtual positions every sample goes through.
    from transformers import AutoModelForCausalLM

    from peftbench.measure import train_flops_per_token

    base = train_flops_per_token(AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).requires_grad_(False))
    tokens, samples = prompt.train_tokens, prompt.train_samples
    assert prompt.train_flops_per_token == pytest.approx(base * (tokens + 3 * samples) / tokens, rel=1e-3)
    vera = _run([*arithmetic, "method=vera", "method.rank=8"])
    assert vera.status == "success", vera.error
    assert vera.rank == 8 and vera.infer_latency_merged_ms > 0
    bitfit = _run([*arithmetic, "method=bitfit"])  # Llama has no bias terms
    assert bitfit.status == "failed" and "no bias terms" in bitfit.error and bitfit.train_steps is None

    path = tmp_path / "pairs.csv"
    path.write_text("source,target\n" + "".join(f"{w},{w}\n" for w in ["ab", "cd", "ef", "gh"]))
    t5 = _run(["task=text2text", f"task.data_files.train={path}", f"task.data_files.validation={path}",
               f"model.name={tiny_dirs['t5']}", f"results_dir={tmp_path}", *FAST, "method=prompt",
               "method.num_virtual_tokens=3"])
    assert t5.status == "success", t5.error
    assert t5.trainable_params == 3 * 32
