"""Every config file composes and validates; the registry matches conf/method; bad input is refused."""

from __future__ import annotations

import csv

import pytest
import yaml
from hydra import compose, initialize_config_dir

from peftbench import methods
from peftbench.config import register_configs, validate
from peftbench.errors import ConfigError
from tests.conftest import REPO, run_cli

CONF = REPO / "conf"
register_configs()


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def group_options() -> list[tuple[str, str]]:
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        rel = path.relative_to(CONF)
        if len(rel.parts) > 1 and rel.parts[0] != "hydra":
            found.append(("/".join(rel.parts[:-1]), path.stem))
    return found


def test_conf_has_files():
    assert len(group_options()) >= 8


# Options that need a value of their own to validate (a budget's amount is required).
NEEDS = {("budget", "samples"): ["train.samples=1000"], ("budget", "tokens"): ["train.tokens=5000"]}


@pytest.mark.parametrize("group,option", group_options(), ids=lambda v: str(v))
def test_every_config_file_composes_and_validates(group, option):
    cfg = _compose([f"{group}={option}", *NEEDS.get((group, option), [])])
    checked = validate(cfg)
    assert checked.run.results_dir == "results"
    if group == "method":
        assert checked.method_name == method_file_name(option)


def method_file_name(stem: str) -> str:
    """The method a ``conf/method/<stem>.yaml`` selects: its own name, or, for a recipe that presets
    another method (``loha.yaml`` presets the peft bridge), that method's."""
    return yaml.safe_load((CONF / "method" / f"{stem}.yaml").read_text())["name"]


def test_registry_names_match_method_configs():
    stems = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
    assert sorted(s for s in stems if method_file_name(s) == s) == methods.method_names()
    recipes = [s for s in stems if method_file_name(s) != s]
    for stem in recipes:  # a recipe presets a registered method and shadows none
        assert method_file_name(stem) in methods.method_names() and stem not in methods.method_names(), stem


def test_registry_refuses_duplicate_names_and_prefixes():
    lora = methods.get_method("lora")
    with pytest.raises(ValueError, match="already registered"):
        methods.register(lora)
    clash = methods.MethodSpec(name="lora2", config_cls=lora.config_cls, apply=lora.apply, param_prefix="lora_")
    with pytest.raises(ValueError, match="clashes"):
        methods.register(clash)


def test_rank_reaches_lora_and_lr_comes_from_the_method():
    checked = validate(_compose(["rank=4"]))
    assert checked.method_settings["rank"] == 4
    assert checked.lr == checked.method_lr == 5e-4
    assert validate(_compose(["train.lr=1e-3"])).lr == 1e-3
    assert validate(_compose(["method=full"])).lr == 5e-5


@pytest.mark.parametrize("overrides,key", [
    (["rank=0"], "rank"), (["rank=-3"], "rank"), (["train.steps=null"], "train.steps"),
    (["train.batch_size=0"], "train.batch_size"), (["train.precision=fp8"], "train.precision"),
    (["wandb.mode=sometimes"], "wandb.mode"), (["device=tpu"], "device"), (["method.dropout=1.5"], "dropout"),
])
def test_bad_values_are_refused_with_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(_compose(overrides))


@pytest.mark.parametrize("arg,expected", [
    ("method=nosuch", ["method/nosuch", "full", "lora"]),
    ("model=nosuch", ["model/nosuch", "minilm", "roberta-base"]),
    ("task=nosuch", ["task/nosuch", "vader", "sst2"]),
    ("rank=0", ["rank", "positive integer"]),
    ("rank=-3", ["rank", "positive integer"]),
    ("rank=abc", ["rank=abc", "rank takes a whole number"]),
    ("model.name=nosuch/model", ["model.name='nosuch/model'", "minilm"]),
    ("nosuchkey=1", ["nosuchkey", "top-level keys are: method, model, task, rank"]),
    ("train.lrr=1", ["train.lrr", "Did you mean train.lr?"]),
    ("trian.steps=10", ["trian.steps", "Did you mean train.steps?"]),
    # A typo under a group's node: the chosen option's keys are listed (Hydra would say only "not in").
    ("method.alpah=32", ["method.alpah", "Did you mean method.alpha?", "keys of method=lora are", "method.rank"]),
    ("model.nme=x", ["model.nme", "Did you mean model.name?", "keys of model=minilm"]),
    ("task.txt_column=x", ["task.txt_column", "Did you mean task.text_column?", "keys of task=vader"]),
    # Hydra's "+" adds a key beside the real one, which the run then ignored: refused the same way.
    ("+method.alpah=32", ["'+method.alpah=32'", "Did you mean method.alpha?"]),
    ("+train.stpes=10", ["'+train.stpes=10'", "Did you mean train.steps?"]),
])
def test_cli_refuses_bad_input_before_training_and_keeps_recorded_rows(arg, expected, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "runs.csv").write_text("run_id,status\nkept,success\n")
    proc = run_cli([arg, f"results_dir={results}", "wandb.mode=disabled"], cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    for text in expected:
        assert text in proc.stderr, proc.stderr
    assert "[train]" not in proc.stderr  # refused before any training step
    rows = list(csv.DictReader(open(results / "runs.csv")))
    assert rows[0]["run_id"] == "kept"
    assert all(r["status"] != "success" for r in rows[1:])


@pytest.mark.parametrize("args,refused", [
    (["method=houlsby", "method.rank=4"], "keys of method=houlsby are"),  # Houlsby has no rank
    (["method=lora,houlsby", "method.rank=4", "-m"], "keys of method=houlsby are"),  # any job of the sweep
    (["method.rank=4"], None),
    (["method=peft", "+method.options.r=4"], None),  # inside a free-form dict: the bridge checks it
    (["method=houlsby", "method.reduction_factor=8"], None),
    (["--config-dir", "myconf", "+experiment=mine"], None),  # a group of the user's own --config-dir
    (["method=choice(lora,ia3)", "method.rank=4"], None),  # a sweep function: Hydra checks each job
    (["method=my-own", "method.anything=1"], None),  # an option that is not shipped: left to Hydra
    (["model=gpt2", "model.revision=main"], None),
])
def test_override_keys_are_checked_against_the_chosen_options_schema(args, refused):
    from peftbench.__main__ import check_override_keys

    message = check_override_keys(args)
    if refused is None:
        assert message is None, message
    else:
        assert message is not None and refused in message and "method.reduction_factor" in message


@pytest.mark.parametrize("arg", ["+experiment=mine", "+foo=1"])
def test_a_new_top_level_key_without_a_users_config_dir_is_refused_before_hydra(arg):
    # as rnak=4 is: one paragraph listing the top-level keys, not a refusal from inside the run
    from peftbench.__main__ import check_override_keys

    message = check_override_keys([arg])
    key = arg[1:].split("=")[0]
    assert message is not None and f"unknown config key {key!r}" in message and "top-level keys are" in message
    assert check_override_keys(["--config-dir", "myconf", arg]) is None


@pytest.mark.parametrize("args,refused", [
    (["train.lr=abc"], "train.lr takes a number (for example 3e-4), or null, and 'abc' is not one"),
    (["train.steps=1.5"], "train.steps takes a whole number"),
    (["train.compile=maybe"], "train.compile takes true or false"),
    (["rank=4,x", "-m"], "rank=x is refused: rank takes a whole number"),  # every value of a sweep
    (["method=houlsby", "method.reduction_factor=abc"], "(under method=houlsby) takes a whole number"),
    (["task.extra_eval_splits=3"], "task.extra_eval_splits takes a list in brackets ([a,b])"),
    (["model.trust_remote_code=perhaps"], "model.trust_remote_code takes true or false"),
    (["forgetting.enabled=sometimes"], "forgetting.enabled takes true or false"),
    (["train.lr=3e-4", "rank=2,4,8", "train.compile=true", "seed=range(3)", "-m"], None),
    (["train.lr=tag(log,interval(1e-5,1e-1))", "-m"], None),  # a search's interval: Hydra draws from it
    (["method.target_modules=[query,value]", "train.lr=null", "model.dtype=bfloat16"], None),
    (["method=peft", "+method.options.r=x"], None),  # inside a free-form dict: the bridge checks it
    (["train.lr=${oc.env:LR}"], None),  # an interpolation, resolved later
    (["model=nosuch", "method=nosuch"], None),  # a group's option: Hydra lists the options
])
def test_override_values_are_checked_against_the_keys_type(args, refused):
    from peftbench.overrides import check_override_values

    message = check_override_values(args)
    if refused is None:
        assert message is None, message
    else:
        assert message is not None and message.startswith("peftbench: ") and refused in message, message


def test_a_wrongly_typed_value_is_refused_before_hydra_starts(tmp_path):
    proc = run_cli(["train.lr=abc", f"results_dir={tmp_path / 'results'}"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "train.lr takes a number" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()  # nothing was started


@pytest.mark.parametrize("override,key,hint", [
    ("+method.alpah=32", "method.alpah", "did you mean 'alpha'?"),
    ("+train.stpes=10", "train.stpes", "did you mean 'steps'?"),
    ("+forgetting.sample=3", "forgetting.sample", "did you mean 'samples'?"),
])
def test_validate_refuses_a_key_a_typed_node_does_not_have(override, key, hint):
    # What reaches the runner another way than the command line's check (a YAML of one's own, the API).
    with pytest.raises(ConfigError, match="unknown config key") as err:
        validate(_compose([override]))
    assert f"{key!r}" in str(err.value) and hint in str(err.value)
    validate(_compose(["method=peft", "+method.options.r=4"]))  # a free-form dict takes new keys
