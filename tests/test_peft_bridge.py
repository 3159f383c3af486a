"""method=peft, the bridge to Hugging Face peft: counts and outputs against peft's own ``get_peft_model``,
merging, checkpoints, AdaLoRA's per-step work, the recipes, refusals before loading, and the CLI."""

from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys

import peft
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from peftbench import apply_method, count_parameters
from peftbench.api import is_mergeable, method_label, method_state
from peftbench.config import register_configs, validate
from peftbench.errors import ConfigError
from peftbench.methods import MethodConfigError, get_method
from tests.conftest import REPO, run_cli
from tests.tiny_models import bert, roberta

RECIPES = ["loha", "lokr", "adalora", "oft", "boft", "fourierft"]
register_configs()


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


def _recipe_options(name: str) -> dict:
    return yaml.safe_load((REPO / "conf" / "method" / f"{name}.yaml").read_text())["options"]


def _peft_config(name: str, options: dict, **extra):
    """peft's own config for a recipe, as a user of peft would write it (query and value targeted)."""
    kwargs = {k: v for k, v in options.items() if k != "target_modules"}
    if name == "adalora":
        kwargs["total_step"] = 100
    return peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING[peft.PeftType[name.upper()]](
        target_modules=["query", "value"], **kwargs, **extra)


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def roberta_base():
    """A roberta-base-sized model (RobertaConfig's defaults: 12 layers, hidden 768) with random weights."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    return RobertaForSequenceClassification(RobertaConfig(num_labels=2)).eval()


@pytest.mark.parametrize("name", RECIPES)
def test_counts_equal_peft_get_peft_model_on_roberta_base(name, roberta_base):
    options = _recipe_options(name)
    ours = apply_method(copy.deepcopy(roberta_base), "peft", peft_type=name, options=options)
    # peft with task_type SEQ_CLS keeps the classification head trainable too (a copy, in modules_to_save).
    theirs = peft.get_peft_model(copy.deepcopy(roberta_base), _peft_config(name, options, task_type="SEQ_CLS"))
    head = sum(p.numel() for p in roberta_base.classifier.parameters())
    assert count_parameters(ours)[0] == _trainable(theirs) > head
    theirs_trainable, _ = theirs.get_nb_trainable_parameters()
    assert count_parameters(ours)[0] == theirs_trainable


@pytest.mark.parametrize("name", RECIPES)
def test_outputs_equal_peft_with_the_same_weights(name):
    tiny = roberta()
    base = tiny.model()
    options = {**_recipe_options(name), **({"n_frequency": 50} if name == "fourierft" else {})}
    if name == "oft":
        options["oft_block_size"] = 8  # the tiny model's width, 32, must be a multiple
    ours = apply_method(copy.deepcopy(base), "peft", peft_type=name, options=options, train_head=False)
    theirs = peft.get_peft_model(copy.deepcopy(base), _peft_config(name, options))
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in (p for p in ours.parameters() if p.requires_grad):  # away from any identity init
            param.copy_(torch.randn(param.shape, generator=generator))
    state = {f"base_model.model.{k}": v for k, v in method_state(ours, "peft").items()}
    assert state
    _, unexpected = theirs.load_state_dict(state, strict=False)
    assert not unexpected
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        expected = tiny.logits(theirs)
        torch.testing.assert_close(tiny.logits(ours), expected, atol=1e-6, rtol=1e-5)
        assert (expected - tiny.logits(base)).abs().max() > 1e-4  # the adapter changed the output


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_merge_exactly_and_unmerge(name):
    tiny = bert()
    options = {**_recipe_options(name), **({"n_frequency": 50} if name == "fourierft" else {})}
    if name == "oft":
        options["oft_block_size"] = 8
    model = apply_method(tiny.model(), "peft", peft_type=name, options=options)
    generator = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for param in (p for p in model.parameters() if p.requires_grad):
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
        assert is_mergeable("peft", model)
        unmerged = tiny.logits(model)
        get_method("peft").merge(model)
        merged = tiny.logits(model)
        get_method("peft").unmerge(model)
        restored = tiny.logits(model)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(restored, unmerged, atol=1e-5, rtol=1e-4)


def test_a_type_without_merge_is_not_mergeable():
    # Poly's peft layers have no merge: latency is then measured unmerged only.
    model = apply_method(bert().model(), "peft", peft_type="poly", options={"r": 2})
    assert not is_mergeable("peft", model)
    assert is_mergeable("peft")  # in general the bridge merges; it is the applied type that decides
    assert is_mergeable("peft", apply_method(bert().model(), "peft", peft_type="loha"))


def test_checkpoint_state_is_peft_state_under_the_model_names():
    model = apply_method(bert().model(), "peft", peft_type="lokr", options={"r": 4})
    state = method_state(model, "peft")
    own = get_method("peft").state_dict(model)
    assert own and set(own) <= set(model.state_dict())
    assert all(".lokr_" in k for k in own)
    saved = peft.get_peft_model_state_dict(model, save_embedding_layers=False)  # keys without ".default"
    assert {k.replace(".default", "") for k in own} == set(saved)
    assert {k for k in state if k.startswith("classifier.")} == {"classifier.weight", "classifier.bias"}
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable <= set(state)


def test_peft_type_is_case_insensitive_and_labels_rows():
    model = apply_method(bert().model(), "peft", peft_type="LoHa", options={"r": 2})
    assert model.peft_bridge.type_name == "LOHA"
    assert method_label({"name": "peft", "peft_type": "LoHa", "options": {}}) == "peft:loha"
    assert method_label({"name": "lora", "rank": 8}) == "lora"
    assert method_label({"name": "nosuch"}) == "nosuch"


def test_peft_type_in_any_case_is_one_run_one_key_and_one_row(tiny_bert_dir, tmp_path):
    from omegaconf import OmegaConf

    from peftbench.identity import already_done, canonical_config
    from peftbench.record import RunRecord
    from peftbench.runner import describe, run

    def compose(peft_type: str):
        return _compose(["method=peft", f"method.peft_type={peft_type}", "method.options.r=2",
                         f"model.name={tiny_bert_dir}", f"results_dir={tmp_path}", "wandb.mode=disabled",
                         "train.steps=1", "train.batch_size=8", "train.eval_size=16", "train.log_every=1",
                         "train.measure_warmup_steps=1", "train.latency_batches=1", "spectrum.enabled=false",
                         "forgetting.enabled=false"])

    upper, lower = compose("LOHA"), compose("loha")
    rows = []
    for cfg in (upper, lower, compose("LoHa")):
        record = RunRecord()
        describe(record, canonical_config(OmegaConf.to_container(cfg, resolve=True)))  # as run() does
        rows.append((record.run_key, record.setting_key, record.method_settings, record.method))
    assert rows[0] == rows[1] == rows[2]
    assert json.loads(rows[0][2])["peft_type"] == "loha"
    assert validate(upper).method_settings["peft_type"] == "loha"
    record = run(upper)
    assert record.status == "success", record.error
    assert json.loads(record.method_settings)["peft_type"] == "loha"
    done = already_done(lower)  # resume: the lower-case spelling is the run already recorded
    assert done is not None and done["run_id"] == record.run_id


def _described(peft_type: str, options: dict):
    from peftbench.record import RunRecord
    from peftbench.runner import describe

    config = {"method": {"name": "peft", "peft_type": peft_type, "options": options, "lr": 5e-4,
                         "warmup_ratio": 0.06, "schedule": "linear"}, "model": {"name": "m"},
              "task": {"name": "vader"}, "rank": 8, "seed": 0}
    record = RunRecord()
    describe(record, config)
    return record


def test_describe_labels_bridge_rows_with_the_type_options_and_the_rank_peft_uses():
    record = _described("loha", {"r": 4})
    assert record.method == "peft:loha"
    assert record.rank == 4  # method.options.r, not the top-level rank (8)
    assert json.loads(record.method_settings) == {"options": {"r": 4}, "peft_type": "loha"}
    assert _described("lokr", {}).rank == 8  # peft's default r
    assert _described("lora", {"r": 2}).rank == 2
    assert _described("adalora", {"init_r": 6, "target_r": 3}).rank == 6  # its matrices' rank; r is unused
    for peft_type in ("oft", "fourierft", "ia3"):  # OFT's r counts blocks; the others have no rank
        assert _described(peft_type, {}).rank is None


@pytest.mark.parametrize("method,rank,expected", [
    ({"name": "peft", "peft_type": "loha", "options": {"r": 4}}, 2,
     "rank=2 is not read by method=peft (peft:loha): its own rank is method.options.r (now 4)"),
    ({"name": "peft", "peft_type": "adalora", "options": {}}, 2,
     "rank=2 is not read by method=peft (peft:adalora): its own rank is method.options.init_r (now 12)"),
    ({"name": "peft", "peft_type": "oft", "options": {"r": 0}}, 2,
     "rank=2 is not read by method=peft (peft:oft): it has no rank"),
    ({"name": "ia3"}, 4, "rank=4 is not read by method=ia3: it has no rank"),
])
def test_the_rank_note_names_the_bridge_types_own_rank(monkeypatch, method, rank, expected):
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from peftbench import __main__ as cli

    monkeypatch.setattr(cli.HydraConfig, "get", lambda: SimpleNamespace(overrides=SimpleNamespace(task=[f"rank={rank}"])))
    note = cli.unused_rank_note(OmegaConf.create({"rank": rank, "method": method}))
    assert note == f"peftbench: note: {expected}; the run goes on without it"


def test_a_value_peft_adjusts_is_recorded_as_used_and_noted(tiny_bert_dir, tmp_path, capsys):
    from peftbench.api import used_method_settings
    from peftbench.runner import run

    model = apply_method(bert().model(), "peft", peft_type="oft", options={"oft_block_size": 5, "r": 0})
    given = {"options": {"oft_block_size": 5, "r": 0, "target_modules": ["value", "query"], "coft": False},
             "peft_type": "oft"}
    settings, rank, changed = used_method_settings(model, "peft", given)
    # peft's OFT layers use block size 4 (32 is no multiple of 5) and so 8 blocks, warning only; peft's config says 5.
    assert model.peft_bridge.tuner.peft_config["default"].oft_block_size == 5
    assert settings == {"options": {"oft_block_size": 4, "r": 8, "target_modules": ["value", "query"], "coft": False},
                        "peft_type": "oft"}
    assert rank is None
    assert changed == ["method.options.oft_block_size=5 (used: 4)", "method.options.r=0 (used: 8)"]
    lora = apply_method(bert().model(), "peft", peft_type="lora", options={"r": 4, "lora_alpha": 8})
    assert used_method_settings(lora, "peft", {"options": {"r": 4, "lora_alpha": 8}, "peft_type": "lora"}) == (
        {"options": {"r": 4, "lora_alpha": 8}, "peft_type": "lora"}, 4, [])

    cfg = _compose(["method=oft", "method.options.oft_block_size=5", f"model.name={tiny_bert_dir}",
                    f"results_dir={tmp_path}", "wandb.mode=disabled", "train.steps=1", "train.batch_size=8",
                    "train.eval_size=16", "train.log_every=1", "train.measure_warmup_steps=1",
                    "train.latency_batches=1", "spectrum.enabled=false", "forgetting.enabled=false"])
    record = run(cfg)
    assert record.status == "success", record.error
    assert json.loads(record.method_settings)["options"]["oft_block_size"] == 4
    assert json.loads(record.config_json)["method"]["options"]["oft_block_size"] == 5  # what was given, as run_key
    err = capsys.readouterr().err
    assert "peftbench: note: peft:oft ran with other values than given: method.options.oft_block_size=5 " \
           "(used: 4); method.options.r=0 (used: 8)." in err


# --- the update's spectrum: W - W0 of each adapted weight, as for our own methods ------------------------

def _spectrum(model, method: str, seed: int = 9):
    """The spectrum after the method's trainable tensors are moved away from their init (B = 0...)."""
    from peftbench import spectrum
    from peftbench.config import SpectrumConfig

    snap = spectrum.snapshot(model, method, SpectrumConfig())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in (p for p in model.parameters() if p.requires_grad):
            param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    return spectrum.measure(model, snap, SpectrumConfig())


def test_peft_lora_spectrum_equals_our_lora_with_the_same_weights():
    tiny = bert()
    targets = ["query", "value"]
    ours = apply_method(tiny.model(), "lora", rank=4, alpha=8.0, target_modules=targets, train_head=False)
    theirs = apply_method(tiny.model(), "peft", peft_type="lora", train_head=False,
                          options={"r": 4, "lora_alpha": 8, "target_modules": targets})
    ours_spectrum = _spectrum(ours, "lora")
    with torch.no_grad():  # the same A and B in peft's layers
        for name, module in ours.named_modules():
            if hasattr(module, "lora_A") and isinstance(module.lora_A, torch.nn.Parameter):
                layer = theirs.get_submodule(name)
                layer.lora_A["default"].weight.copy_(module.lora_A)
                layer.lora_B["default"].weight.copy_(module.lora_B)
    from peftbench import spectrum
    from peftbench.config import SpectrumConfig

    theirs_spectrum = spectrum.measure(theirs, spectrum.snapshot(theirs, "peft", SpectrumConfig()), SpectrumConfig())
    assert [lay["name"] for lay in theirs_spectrum.layers] == [lay["name"] for lay in ours_spectrum.layers]
    assert len(ours_spectrum.layers) == 4 and not theirs_spectrum.note
    for mine, peft_layer in zip(ours_spectrum.layers, theirs_spectrum.layers, strict=True):
        assert peft_layer["shape"] == mine["shape"] == [32, 32]
        torch.testing.assert_close(torch.tensor(peft_layer["singular_values"]), torch.tensor(mine["singular_values"]),
                                   rtol=1e-4, atol=1e-6)
        assert len(peft_layer["singular_values"]) == 4  # rank 4: the adapter's own tensors would say otherwise
    assert theirs_spectrum.effective_rank == pytest.approx(ours_spectrum.effective_rank, rel=1e-4)
    assert theirs_spectrum.stable_rank == pytest.approx(ours_spectrum.stable_rank, rel=1e-4)


@pytest.mark.parametrize("name,options", [("fourierft", {"n_frequency": 50}), ("oft", {"oft_block_size": 8}),
                                          ("loha", {"r": 4})])
def test_peft_spectrum_is_the_svd_of_the_merged_update(name, options):
    tiny = bert()
    model = apply_method(tiny.model(), "peft", peft_type=name, options=options)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("base_layer.weight")}
    update = _spectrum(model, "peft")
    get_method("peft").merge(model)
    merged = dict(model.named_parameters())
    assert len(update.layers) == len(base) == 4 and not update.note
    for layer in update.layers:
        stored = layer["name"].removesuffix(".weight") + ".base_layer.weight"
        expected = torch.linalg.svdvals(merged[stored].detach() - base[stored])
        got = torch.tensor(layer["singular_values"])
        torch.testing.assert_close(got, expected[: len(got)], rtol=1e-3, atol=1e-5)
        assert len(got) > 4  # W - W0 is not low-rank here (LoHa r=4: up to 16); the adapter's own tensors say less


def test_peft_spectrum_of_gpt2_conv1d_is_out_by_in():
    from tests.tiny_models import gpt2

    model = apply_method(gpt2().model(), "peft", peft_type="lora",
                         options={"r": 2, "target_modules": ["c_attn"], "fan_in_fan_out": True})
    update = _spectrum(model, "peft")
    assert [lay["shape"] for lay in update.layers] == [[96, 32], [96, 32]]
    assert [len(lay["singular_values"]) for lay in update.layers] == [2, 2]


def test_a_type_peft_cannot_merge_has_an_empty_spectrum_and_says_why():
    update = _spectrum(apply_method(bert().model(), "peft", peft_type="poly", options={"r": 2}), "peft")
    assert update.layers == [] and update.effective_rank is None
    assert "poly" in update.note and "no merge" in update.note and "4 of 4" in update.note


# --- AdaLoRA: the per-step hook, the run's length, the orthogonality penalty ---------------------------

def _adalora(options: dict):
    tiny = bert()
    return tiny, apply_method(tiny.model(), "peft", peft_type="adalora",
                              options={"init_r": 4, "target_r": 2, **options})


def test_adalora_total_step_comes_from_the_run_and_the_budget_is_allocated():
    tiny, model = _adalora({"tinit": 1, "tfinal": 2, "deltaT": 1})
    spec = get_method("peft")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    total = 8
    for step in range(1, total + 1):
        loss = model(**tiny.inputs, labels=tiny.labels).loss
        loss.backward()
        optimizer.step()
        spec.on_step(model, step, total)
        optimizer.zero_grad()
    config = model.peft_bridge.tuner.peft_config["default"]
    assert config.total_step == total
    assert config.rank_pattern  # the final allocation happened (at step total - tfinal)
    ranks = [int((m.lora_E["default"] != 0).sum()) for m in model.modules() if hasattr(m, "lora_E")]
    # 4 adapted layers x target_r 2 = 8 singular values kept in all, out of 4 x init_r 4 = 16.
    assert len(ranks) == 4 and sum(ranks) == 8, ranks


def test_adalora_refuses_a_schedule_longer_than_the_run():
    _, model = _adalora({"tinit": 3, "tfinal": 3})
    with pytest.raises(MethodConfigError, match=r"tinit=3 and tfinal=3 .* 5 optimizer steps"):
        get_method("peft").on_step(model, 1, 5)


def test_adalora_adds_peft_orthogonal_penalty_to_the_loss():
    tiny = bert()
    base = tiny.model()
    ours = apply_method(copy.deepcopy(base), "peft", peft_type="adalora", train_head=False,
                        options={"init_r": 4, "target_r": 2, "orth_reg_weight": 0.5, "target_modules": ["query", "value"]})
    # peft adds the penalty in AdaLoraModel.forward, which a task PeftModel (task_type) calls.
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.AdaLoraConfig(
        init_r=4, target_r=2, orth_reg_weight=0.5, total_step=10, target_modules=["query", "value"],
        task_type="SEQ_CLS"))
    generator = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for param in (p for p in ours.parameters() if p.requires_grad):
            param.copy_(torch.randn(param.shape, generator=generator))
    theirs.load_state_dict({f"base_model.model.{k}": v for k, v in method_state(ours, "peft").items()}, strict=False)
    with torch.no_grad():
        plain = torch.nn.functional.cross_entropy(ours(**tiny.inputs).logits, tiny.labels)
        ours_loss = ours(**tiny.inputs, labels=tiny.labels).loss
        theirs_loss = theirs(**tiny.inputs, labels=tiny.labels).loss
    torch.testing.assert_close(ours_loss, theirs_loss)
    assert ours_loss > plain + 0.1


def test_the_training_loop_calls_the_step_hook(tiny_bert_dir, tmp_path, monkeypatch):
    from peftbench import runner

    calls = []

    def recording(method):
        hook = get_method(method).on_step
        return lambda model, step, total: (calls.append((step, total)), hook(model, step, total))

    monkeypatch.setattr(runner, "step_hook", recording)
    cfg = _compose(["method=adalora", f"model.name={tiny_bert_dir}", f"results_dir={tmp_path}", "wandb.mode=disabled",
                    "train.steps=4", "train.batch_size=8", "train.eval_size=16", "train.log_every=2",
                    "train.measure_warmup_steps=1", "train.latency_batches=1"])
    record = runner.run(cfg)
    assert record.status == "success", record.error
    assert record.method == "peft:adalora"
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


# --- refusals, before any model loads ---------------------------------------------------------------

@pytest.mark.parametrize("overrides,expected", [
    (["method.peft_type=nosuch"], ["method.peft_type='nosuch'", "loha", "lokr", "adalora"]),
    (["method.peft_type=prompt_tuning"], ["prompt-learning", "method=prefix", "method=prompt"]),
    (["method.peft_type=vera"], ["shared across layers", "method=vera"]),
    (["method.peft_type=loha", "method.options.rr=3"], ["method.options.rr", "LoHaConfig", "alpha", "rank_dropout"]),
    (["method.options.modules_to_save=[classifier]"], ["method.options.modules_to_save", "task head"]),
    (["method.peft_type=loha", "method.options.r=0"], ["method.options.r=0", "LoHaConfig", "positive integer", "2, 4, 8"]),
    (["method.peft_type=lora", "method.options.r=-2"], ["method.options.r=-2", "positive integer"]),
    (["method=adalora", "method.options.init_r=0"], ["method.options.init_r=0", "AdaLoraConfig", "positive integer"]),
])
def test_bad_settings_are_refused_at_validation_naming_the_key(overrides, expected):
    with pytest.raises(ConfigError) as err:
        validate(_compose(["method=peft", *overrides]))
    for text in expected:
        assert text in str(err.value)


def test_without_peft_the_bridge_is_refused_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    with pytest.raises(ConfigError, match=r'pip install "peftbench\[peft\]"'):
        validate(_compose(["method=peft", "method.peft_type=loha"]))


def test_the_methods_package_imports_without_peft():
    code = ("import sys; sys.modules['peft'] = None\n"
            "from peftbench.methods import get_method, method_names\n"
            "assert 'peft' in method_names() and get_method('lora').name == 'lora'\n"
            "print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_a_value_peft_refuses_at_injection_is_named_by_its_key():
    # MiSS's default r (64) is wider than the tiny model's layers (32): peft says so only when injecting.
    with pytest.raises(MethodConfigError) as err:
        apply_method(bert().model(), "peft", peft_type="miss")
    assert "set method.options.r (now 64)" in str(err.value) and "target_modules" not in str(err.value)


def test_a_target_peft_cannot_wrap_is_refused_with_the_reason():
    from tests.tiny_models import gpt2

    with pytest.raises(MethodConfigError, match=r"peft_type=loha.*Conv1D.*target_modules"):
        apply_method(gpt2().model(), "peft", peft_type="loha")


# --- the CLI, end to end ----------------------------------------------------------------------------

FAST = ["train.steps=3", "train.batch_size=8", "train.eval_size=32", "train.log_every=1", "train.measure_warmup_steps=1"]


def test_cli_runs_loha_through_the_bridge_and_records_it(tiny_bert_dir, tmp_path):
    results = tmp_path / "results"
    proc = run_cli(["method=peft", "method.peft_type=loha", "method.options.r=4", f"model.name={tiny_bert_dir}",
                    f"results_dir={results}", "wandb.mode=disabled", *FAST], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (row,) = list(csv.DictReader(open(results / "runs.csv")))
    assert row["status"] == "success" and row["method"] == "peft:loha" and row["rank"] == "4"
    # bitsandbytes' warning at import about its optional `kernels` package (CPUs with AVX-512 BF16) is noise.
    assert "kernels" not in proc.stderr, proc.stderr
    assert json.loads(row["method_settings"]) == {"options": {"r": 4}, "peft_type": "loha"}
    # LoHa: 2 layers x (query, value) x 2 r (32 + 32) at r = 4, plus the classifier 32 x 2 + 2.
    trainable = 2 * 2 * 2 * 4 * 64 + 66
    assert int(row["trainable_params"]) == trainable
    assert 4 * trainable < int(row["checkpoint_bytes"]) < 4 * trainable + 4096
    assert float(row["infer_latency_ms"]) > 0 and float(row["infer_latency_merged_ms"]) > 0
    assert int(row["train_steps"]) == 3 and 0 <= float(row["score"]) <= 1
    # The spectrum of W - W0 of the 4 adapted weights, named as our LoRA names them (not loha_* tensors).
    layers = json.loads((results / "runs" / f"{row['run_id']}.json").read_text())["update_spectrum"]
    assert [lay["name"].rsplit(".", 3)[-3:] for lay in layers] == [["self", "query", "weight"],
                                                                   ["self", "value", "weight"]] * 2
    assert 0 < float(row["update_effective_rank"]) <= 16  # LoHa at r = 4: rank at most r^2


def test_cli_refuses_an_unknown_peft_type_before_training(tmp_path):
    results = tmp_path / "results"
    proc = run_cli(["method=peft", "method.peft_type=nosuch", f"results_dir={results}", "wandb.mode=disabled"],
                   cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    for text in ("refused", "method.peft_type='nosuch'", "loha", "lokr", "fourierft"):
        assert text in proc.stderr, proc.stderr
    assert "[train]" not in proc.stderr
    assert "kernels" not in proc.stderr
    (row,) = list(csv.DictReader(open(results / "runs.csv")))
    assert row["status"] == "failed" and row["method"] == "peft:nosuch" and row["trainable_params"] == ""
