"""eval_on=search: a hyperparameter search scores on a slice of the training split, never on the
split final scores are reported on."""

from __future__ import annotations

import csv

import pytest
from hydra import compose, initialize_config_dir
from transformers import AutoTokenizer

from peftbench.config import register_configs, validate
from peftbench.errors import ConfigError
from peftbench.tasks import load_task
from tests.conftest import REPO, run_cli
from tests.test_e2e import FAST


def _write(path, prefix, n):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([f"{prefix} {i}", i % 2] for i in range(n))


def _checked(tmp_path, overrides):
    _write(tmp_path / "train.csv", "train", 100)
    _write(tmp_path / "dev.csv", "dev", 30)
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["task=local", f"task.data_files.train={tmp_path / 'train.csv'}",
                                           f"task.data_files.validation={tmp_path / 'dev.csv'}", *overrides])
    return validate(cfg)


def _texts(dataset, tokenizer):
    return {tokenizer.decode(ids, skip_special_tokens=True) for ids in dataset["input_ids"]}


def test_search_slice_is_disjoint_from_training_and_reported_splits(tiny_bert_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    checked = _checked(tmp_path, ["eval_on=search", "task.search_fraction=0.2"])
    data = load_task(checked.run.task, tokenizer, checked.run.train, eval_on=checked.run.eval_on)
    search, train = _texts(data.eval, tokenizer), _texts(data.train, tokenizer)
    assert len(search) == 20 and len(train) == 80
    assert all(t.startswith("train ") for t in search)  # carved from the training file
    assert not search & train
    assert "search" in data.scored_on and "0.2" in data.scored_on

    reported = load_task(checked.run.task, tokenizer, checked.run.train)
    assert _texts(reported.eval, tokenizer) == {f"dev {i}" for i in range(30)}
    assert not search & _texts(reported.eval, tokenizer)
    assert reported.scored_on == "validation"


def test_search_slice_is_fixed_by_split_seed(tiny_bert_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    slices = []
    for split_seed, run_seed in ((0, 0), (0, 5), (1, 0)):
        checked = _checked(tmp_path, ["eval_on=search", f"task.split_seed={split_seed}", f"seed={run_seed}"])
        slices.append(_texts(load_task(checked.run.task, tokenizer, checked.run.train, "search").eval, tokenizer))
    assert slices[0] == slices[1] != slices[2]


def test_bad_eval_on_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="eval_on='test' is not one of eval, search"):
        _checked(tmp_path, ["eval_on=test"])


def test_a_search_run_records_what_it_scored_on(tiny_bert_dir, tmp_path):
    proc = run_cli([f"model.name={tiny_bert_dir}", "eval_on=search", f"results_dir={tmp_path}",
                    "wandb.mode=disabled", *FAST], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (row,) = csv.DictReader(open(tmp_path / "runs.csv"))
    assert row["scored_on"].startswith("search: 0.1 of train")
