"""Task configs: every GLUE config through the hub loader (``datasets.load_dataset`` replaced by
small local data of that task's columns), local files with their errors, and the shipped metrics
against hand computations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftbench.config import TaskConfig, TrainConfig, validate
from peftbench.errors import ConfigError
from peftbench.metrics import load_metric, shipped_metrics
from peftbench.tasks import load_task
from tests.conftest import REPO
from tests.test_models import compose_run, minilm_tokenizer, one_torch_thread  # noqa: F401 (autouse)

FAST = ["train.steps=2", "train.batch_size=4", "train.eval_size=12", "train.log_every=1",
        "train.measure_warmup_steps=0", "train.latency_batches=1", "wandb.mode=disabled"]

# GLUE config -> (text column, pair column, labels, eval splits as the hub names them, metric keys)
GLUE = {
    "cola": ("sentence", None, [0, 1], ["validation"], {"matthews_correlation"}),
    "sst2": ("sentence", None, [0, 1], ["validation"], {"accuracy"}),
    "mrpc": ("sentence1", "sentence2", [0, 1], ["validation"], {"accuracy", "f1"}),
    "qqp": ("question1", "question2", [0, 1], ["validation"], {"accuracy", "f1"}),
    "stsb": ("sentence1", "sentence2", [0.0, 1.4, 2.5, 5.0], ["validation"], {"pearsonr", "spearmanr"}),
    "mnli": ("premise", "hypothesis", [0, 1, 2], ["validation_matched", "validation_mismatched"],
             {"accuracy", "validation_mismatched/accuracy"}),
    "qnli": ("question", "sentence", [0, 1], ["validation"], {"accuracy"}),
    "rte": ("sentence1", "sentence2", [0, 1], ["validation"], {"accuracy"}),
    "wnli": ("sentence1", "sentence2", [0, 1], ["validation"], {"accuracy"}),
}


def fake_glue(name: str, calls: list):
    """A stand-in for ``datasets.load_dataset`` returning GLUE-shaped splits of the task ``name``."""
    import datasets

    text, pair, labels, evals, _ = GLUE[name]

    def load_dataset(path, config_name=None, **kwargs):
        calls.append((path, config_name))

        def rows(n, offset):
            out = []
            for i in range(n):
                row = {text: f"first text {i + offset} is {'good' if i % 2 else 'bad'}",
                       "label": labels[i % len(labels)], "idx": i}
                if pair:
                    row[pair] = f"second text {i}"
                out.append(row)
            return datasets.Dataset.from_list(out)

        return datasets.DatasetDict({"train": rows(24, 0), **{s: rows(12, 100) for s in evals},
                                     "test": rows(4, 200)})

    return load_dataset


def test_every_task_config_is_covered():
    covered = set(GLUE) | {"vader", "local", "arithmetic", "gsm8k", "instruct", "text2text", "cnn_dailymail"}
    assert {p.stem for p in (REPO / "conf" / "task").glob("*.yaml")} == covered


@pytest.mark.parametrize("task", sorted(GLUE))
def test_glue_configs_run_through_the_hub_loader(task, tiny_bert_dir, tmp_path, monkeypatch):
    import datasets

    from peftbench.runner import run

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", fake_glue(task, calls))
    cfg = compose_run([f"task={task}", f"model.name={tiny_bert_dir}", f"results_dir={tmp_path}", *FAST])
    record = run(cfg, sweep_id="test")
    assert record.status == "success", record.error
    assert calls == [("glue", task)]
    metrics = json.loads(record.metrics_json)
    assert set(metrics) == GLUE[task][4]
    assert record.score == metrics[record.metric]
    assert -1.0 <= record.score <= 1.0


@pytest.mark.parametrize("task", ["mrpc", "stsb", "mnli"])
def test_glue_pairs_and_label_types_reach_the_model(task, tiny_bert_dir, monkeypatch):
    import datasets
    from transformers import AutoTokenizer

    monkeypatch.setattr(datasets, "load_dataset", fake_glue(task, []))
    run_cfg = validate(compose_run([f"task={task}"])).run
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    data = load_task(run_cfg.task, tokenizer, TrainConfig(eval_size=None))
    row = data.train[0]
    assert 1 in row["token_type_ids"]  # the second sentence is encoded as the pair segment
    sep = tokenizer.sep_token_id
    assert row["input_ids"].count(sep) == 2
    if task == "stsb":
        assert run_cfg.task.num_labels == 1 and data.train[2]["labels"] == pytest.approx(2.5)
    if task == "mnli":
        assert run_cfg.task.eval_split == "validation_matched"
        assert list(data.extra_evals) == ["validation_mismatched"] and len(data.extra_evals["validation_mismatched"]) == 12


def test_unknown_extra_split_is_refused_with_the_splits_that_exist(tiny_bert_dir, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_glue("mnli", []))
    run_cfg = validate(compose_run(["task=mnli", "task.extra_eval_splits=[validation_mismatchd]"])).run
    with pytest.raises(ConfigError, match=r"task.extra_eval_splits='validation_mismatchd'.*validation_mismatched"):
        load_task(run_cfg.task, minilm_tokenizer(), TrainConfig())


# ---- local files ----------------------------------------------------------------------------------

ROWS = [{"text": f"text number {i}", "label": i % 2, "score": i / 10} for i in range(30)]


def write(path: Path, rows: list[dict]) -> Path:
    import pandas as pd

    frame = pd.DataFrame(rows)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def local(**settings) -> TaskConfig:
    return TaskConfig(name="local", source="local", text_column="text", **settings)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_local_files_of_each_format_with_a_seeded_split(suffix, tmp_path):
    path = write(tmp_path / f"train{suffix}", ROWS)
    tokenizer = minilm_tokenizer()
    cfg = local(data_files={"train": str(path)}, validation_fraction=0.2, split_seed=3)
    first = load_task(cfg, tokenizer, TrainConfig(eval_size=None))
    again = load_task(cfg, tokenizer, TrainConfig(eval_size=None))
    other = load_task(local(data_files={"train": str(path)}, split_seed=4), tokenizer, TrainConfig(eval_size=None))
    assert (len(first.train), len(first.eval)) == (24, 6)
    assert list(first.eval["input_ids"]) == list(again.eval["input_ids"])  # the split is fixed by split_seed
    assert list(first.eval["input_ids"]) != list(other.eval["input_ids"])
    assert sorted(list(first.eval["labels"]) + list(first.train["labels"])) == sorted(r["label"] for r in ROWS)


def test_local_validation_file_regression_and_label_names(tmp_path):
    train = write(tmp_path / "train.csv", [{"text": r["text"], "y": r["score"], "c": "pos" if r["label"] else "neg"}
                                          for r in ROWS])
    dev = write(tmp_path / "dev.jsonl", [{"text": "x", "y": "2.5", "c": "neg"}])
    tokenizer = minilm_tokenizer()
    files = {"train": str(train), "validation": str(dev)}
    reg = load_task(local(data_files=files, label_column="y", num_labels=1), tokenizer, TrainConfig())
    assert len(reg.train) == 30 and list(reg.eval["labels"]) == [2.5] and reg.train["labels"][3] == pytest.approx(0.3)
    named = load_task(local(data_files=files, label_column="c", label_names=["neg", "pos"]), tokenizer, TrainConfig())
    assert list(named.train["labels"])[:3] == [0, 1, 0] and list(named.eval["labels"]) == [0]


@pytest.mark.parametrize("case,pattern", [
    ("missing_column", r"task.label_column='label' is not a column of file .*train.csv.*columns are: text, other"),
    ("bad_label", r"task.label_column='label' of file .*train.csv.*'maybe' in data row 2 does not parse.*task.label_names"),
    ("out_of_range", r"task.label_column='label' of file .*train.csv.*value 7 in data row 1.*class id in 0..1"),
    ("bad_number", r"task.label_column='label' of file .*train.csv.*'high' in data row 1.*not a number"),
    ("empty_file", r"task.data_files.train='.*train.csv': the file .*train.csv is empty"),
    ("header_only", r"task.data_files.train='.*train.csv': the file .*train.csv has no rows"),
    ("no_such_file", r"task.data_files.train='.*nosuch.csv': no such file"),
    ("unknown_split", r"task.data_files names the split\(s\) tset, which the task does not use"),
    ("no_data_files", r"needs task.data_files with a 'train' file"),
    ("bad_suffix", r"unknown file type '.txt'"),
    ("empty_label", r"task.label_column='label' of file .*train.csv.*data row 1 does not parse as a label: it is empty"),
])
def test_local_data_errors_name_the_file_and_column(case, pattern, tmp_path):
    path = tmp_path / "train.csv"
    settings = {}
    if case == "missing_column":
        write(path, [{"text": "a", "other": 1}])
    elif case == "bad_label":
        write(path, [{"text": "a", "label": "1"}, {"text": "b", "label": "maybe"}])
    elif case == "out_of_range":
        write(path, [{"text": "a", "label": 7}])
    elif case == "bad_number":
        write(path, [{"text": "a", "label": "high"}])
        settings["num_labels"] = 1
    elif case == "empty_file":
        path.write_text("")
    elif case == "header_only":
        path.write_text("text,label\n")
    elif case == "empty_label":
        path.write_text('text,label\na,""\nb,1\n')
    elif case == "bad_suffix":
        path = tmp_path / "train.txt"
        path.write_text("text\n")
    data_files = {"train": str(path)}
    if case == "no_such_file":
        data_files = {"train": str(tmp_path / "nosuch.csv")}
    if case == "unknown_split":
        write(path, ROWS)
        data_files["tset"] = str(path)
    if case == "no_data_files":
        data_files = None
    with pytest.raises(ConfigError, match=pattern):
        load_task(local(data_files=data_files, **settings), minilm_tokenizer(), TrainConfig())


def test_local_error_refuses_the_run_before_training(tiny_bert_dir, tmp_path):
    from tests.conftest import run_cli

    write(tmp_path / "train.csv", [{"sentence": "a", "label": 0}])
    proc = run_cli(["task=local", f"task.data_files.train={tmp_path / 'train.csv'}", f"model.name={tiny_bert_dir}",
                    f"results_dir={tmp_path / 'results'}", "wandb.mode=disabled"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert "task.text_column='text' is not a column of file" in proc.stderr and "train.csv" in proc.stderr
    assert "[train]" not in proc.stderr


def test_local_config_runs_end_to_end(tiny_bert_dir, tmp_path):
    from peftbench.runner import run

    path = write(tmp_path / "data.parquet", ROWS)
    cfg = compose_run(["task=local", f"task.data_files.train={path}", f"model.name={tiny_bert_dir}",
                       f"results_dir={tmp_path}", *FAST])
    record = run(cfg)
    assert record.status == "success", record.error
    assert record.task == "local" and json.loads(record.metrics_json) == {"accuracy": record.score}


# ---- metrics --------------------------------------------------------------------------------------

def compute(name: str, predictions: list, references: list) -> dict:
    return load_metric(name).compute(predictions=predictions, references=references)


def test_shipped_metrics():
    assert set(shipped_metrics()) >= {"accuracy", "f1", "matthews_correlation", "pearsonr", "spearmanr",
                                      "exact_match", "rouge"}


def test_f1_by_hand():
    # tp=2 (rows 0, 1), fp=1 (row 2), fn=1 (row 3): precision 2/3, recall 2/3, F1 2/3.
    assert compute("f1", [1, 1, 1, 0, 0], [1, 1, 0, 1, 0])["f1"] == pytest.approx(2 / 3)
    assert compute("f1", [0, 0], [1, 0])["f1"] == 0.0


def test_matthews_correlation_by_hand():
    # tp=2, tn=1, fp=1, fn=1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6.
    assert compute("matthews_correlation", [1, 1, 1, 0, 0], [1, 1, 0, 1, 0])["matthews_correlation"] == pytest.approx(1 / 6)
    assert compute("matthews_correlation", [1, 0, 1], [1, 0, 1])["matthews_correlation"] == pytest.approx(1.0)
    assert compute("matthews_correlation", [1, 1, 1], [1, 0, 1])["matthews_correlation"] == 0.0


def test_pearson_and_spearman_by_hand():
    # x = 1,2,3, y = 1,3,2: deviations (-1,0,1) and (-1,1,0); r = 1 / sqrt(2*2) = 0.5.
    assert compute("pearsonr", [1.0, 2.0, 3.0], [1.0, 3.0, 2.0])["pearsonr"] == pytest.approx(0.5)
    # Monotone but not linear: Spearman 1, Pearson below 1.
    assert compute("spearmanr", [1.0, 2.0, 3.0, 4.0], [1.0, 4.0, 9.0, 100.0])["spearmanr"] == pytest.approx(1.0)
    assert compute("pearsonr", [1.0, 2.0, 3.0, 4.0], [1.0, 4.0, 9.0, 100.0])["pearsonr"] < 0.9
    # Ties share the mean rank: x ranks (1.5, 1.5, 3), y ranks (1, 2, 3) -> r = 1.5 / sqrt(1.5 * 2).
    assert compute("spearmanr", [5.0, 5.0, 7.0], [1.0, 2.0, 3.0])["spearmanr"] == pytest.approx(1.5 / (1.5 * 2) ** 0.5)


def test_exact_match_and_rouge_by_hand():
    assert compute("exact_match", ["42", " 7", "x"], ["42", "7", "y"])["exact_match"] == pytest.approx(2 / 3)
    scores = compute("rouge", ["the cat sat on the mat"], ["the cat lay on the mat"])
    # 6 tokens each; unigram overlap 5 -> F1 5/6; bigrams: (the cat), (on the), (the mat) of 5 -> 3/5;
    # LCS "the cat on the mat" = 5 -> 5/6.
    assert scores["rouge1"] == pytest.approx(5 / 6) and scores["rouge2"] == pytest.approx(3 / 5)
    assert scores["rougeL"] == pytest.approx(5 / 6) and next(iter(scores)) == "rougeL"


def test_unshipped_metric_names_go_to_the_hub(monkeypatch):
    import evaluate

    asked = []
    monkeypatch.setattr(evaluate, "load", lambda name, *a, **k: asked.append(name) or "hub")
    assert load_metric("bleu") == "hub" and asked == ["bleu"]
    load_metric("f1")
    assert asked[1] == str(REPO / "peftbench" / "metrics" / "f1")
