"""Generation kinds: causal-LM loss masking, answer extraction, the arithmetic task, GSM8K and
instruction configs on tiny decoders, and seq2seq end to end on a tiny T5 with local data."""

from __future__ import annotations

import json

import pytest
import torch

from peftbench.config import TaskConfig, TrainConfig
from peftbench.errors import ConfigError
from peftbench.task_kinds import IGNORE_INDEX, extract_answer, make_kind
from peftbench.tasks import arithmetic_rows, load_task
from tests.test_models import (  # noqa: F401 (one_torch_thread: autouse)
    byte_tokenizer,
    compose_run,
    one_torch_thread,
    save_tiny,
    tiny_model,
)

FAST = ["train.steps=3", "train.batch_size=4", "train.eval_size=6", "train.eval_batch_size=4", "train.log_every=1",
        "train.measure_warmup_steps=0", "train.latency_batches=1", "wandb.mode=disabled", "task.max_new_tokens=4"]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {family: save_tiny(family, root / family) for family in ("gpt2", "llama", "t5")}


@pytest.mark.parametrize("text,extractor,expected", [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "gsm8k", "72"),
    ("so the total is $1,234.00.\n#### 1,234", "gsm8k", "1234"),
    ("He pays 3 * 5 = 15 dollars, so 20 - 15 = 5", "gsm8k", "5"),  # no ####: the last number
    ("no number here", "gsm8k", ""),
    ("-26\n\n57-83 is -26", "first_number", "-26"),
    ("121.\n\nThe probability", "first_number", "121"),
    ("  Paris \nis the capital", "first_line", "Paris"),
    ("  7.50 and 3.0 ", "last_number", "3"),
    ("  7.50 and 3.0 ", "first_number", "7.5"),
])
def test_answer_extraction(text, extractor, expected):
    assert extract_answer(text, extractor) == expected


def test_arithmetic_problems_are_seeded_correct_and_disjoint():
    cfg = TaskConfig(name="a", kind="causal_lm", source="arithmetic", num_train=300, num_eval=50, digits=2,
                     operations="+-*")
    train, evals = arithmetic_rows(cfg)
    assert (train, evals) == arithmetic_rows(cfg)
    assert arithmetic_rows(TaskConfig(name="a", kind="causal_lm", source="arithmetic", split_seed=1, num_train=300,
                                      num_eval=50, digits=2, operations="+-*"))[1] != evals
    assert len(train) == 300 and len(evals) == 50
    assert not {r["text"] for r in train} & {r["text"] for r in evals}
    for row in train + evals:
        assert str(eval(row["text"])) == row["answer"]  # the operands are plain integers
    assert {op for r in train for op in "+-*" if op in r["text"][1:]} == set("+-*")
    with pytest.raises(ConfigError, match="too many distinct problems"):
        arithmetic_rows(TaskConfig(name="a", source="arithmetic", num_train=300, digits=1, operations="+"))


def causal_task(**settings) -> TaskConfig:
    return TaskConfig(name="qa", kind="causal_lm", source="local", text_column="q", label_column="a",
                      prompt_template="Q: {text}\nA:", metric="exact_match", **settings)


def test_causal_lm_loss_is_on_the_answer_tokens_only():
    tokenizer = byte_tokenizer("gpt2")
    tokenizer.pad_token = tokenizer.eos_token
    task = causal_task()
    kind = make_kind(task)
    batch = {"q": ["2+2", "10+10"], "a": ["4", "20"]}
    rows = kind.tokenize(batch, task, tokenizer, max_length=64, split="train")
    prompt = tokenizer("Q: 2+2\nA:")["input_ids"]
    answer = tokenizer("4", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert rows["input_ids"][0] == prompt + answer
    assert rows["labels"][0] == [IGNORE_INDEX] * len(prompt) + answer
    collated = kind.collator(tokenizer)([{k: v[i] for k, v in rows.items()} for i in range(2)])
    assert collated["input_ids"].shape == collated["labels"].shape
    short = len(rows["input_ids"][0])
    pad = collated["input_ids"].shape[1] - short  # the first row is shorter: padded on the left
    assert pad == 3 and collated["attention_mask"][0].tolist() == [0] * pad + [1] * short
    assert collated["labels"][0, :pad].tolist() == [IGNORE_INDEX] * pad
    assert collated["position_ids"][0, pad:].tolist() == list(range(short))
    # The model's loss equals cross-entropy over the answer tokens alone.
    torch.manual_seed(0)
    model = tiny_model("gpt2", len(tokenizer)).eval()
    out = model(**collated)
    logits, labels = out.logits[:, :-1], collated["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    assert int(keep.sum()) == 2 + 3  # "4"+EOS and "20"+EOS
    manual = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, manual)
    # Evaluation rows: the prompt alone goes in, the answer is kept as the reference.
    evals = kind.tokenize(batch, task, tokenizer, max_length=64, split="eval")
    assert evals["input_ids"][0] == prompt and evals["labels"][0] == answer


def test_long_prompts_are_cut_on_the_left_so_the_answer_survives():
    tokenizer = byte_tokenizer("llama")
    task = causal_task()
    rows = make_kind(task).tokenize({"q": ["x" * 100], "a": ["42"]}, task, tokenizer, max_length=16, split="train")
    assert len(rows["input_ids"][0]) == 16
    assert [t for t in rows["labels"][0] if t != IGNORE_INDEX] == tokenizer("42", add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id]


class Oracle(torch.nn.Module):
    """Generates the right answer for each prompt (after any left padding), then EOS and junk."""

    def __init__(self, answers: dict[tuple, list[int]], eos: int) -> None:
        super().__init__()
        self.answers, self.eos = answers, eos

    def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        new = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            prompt = tuple(i for i, m in zip(ids, mask, strict=True) if m)
            new.append((self.answers[prompt] + [self.eos, 5, 6, 7])[:max_new_tokens])
        width = max(len(n) for n in new)
        return torch.cat([input_ids, torch.tensor([n + [self.eos] * (width - len(n)) for n in new])], dim=1)


def test_exact_match_reads_the_generated_continuation():
    tokenizer = byte_tokenizer("llama")
    task = causal_task(answer_extractor="first_line", max_new_tokens=8)
    kind = make_kind(task)
    batch = {"q": ["2+2", "100+100", "1+1"], "a": ["4", "200", "2"]}
    rows = kind.tokenize(batch, task, tokenizer, max_length=64, split="eval")
    said = {"2+2": "4", "100+100": "200", "1+1": "3"}  # the last one is wrong
    answers = {tuple(tokenizer(f"Q: {q}\nA:")["input_ids"]): tokenizer(said[q], add_special_tokens=False)["input_ids"]
               for q in batch["q"]}
    collated = kind.collator(tokenizer)([{k: v[i] for k, v in rows.items()} for i in range(3)])
    references = kind.references(collated.pop("labels"), tokenizer)
    predictions = kind.predict(Oracle(answers, tokenizer.eos_token_id), collated, tokenizer)
    assert references == ["4", "200", "2"] and predictions == ["4", "200", "3"]


def test_arithmetic_config_runs_on_a_tiny_llama(tiny_dirs, tmp_path, capsys):
    from peftbench.runner import run

    cfg = compose_run(["task=arithmetic", f"model.name={tiny_dirs['llama']}", f"results_dir={tmp_path}",
                       "task.num_train=40", "task.num_eval=6", "train.eval_at_start=true", *FAST])
    record = run(cfg)
    assert record.status == "success", record.error
    assert "reach train.max_seq_length" not in capsys.readouterr().err  # short problems: nothing cut
    assert record.metric == "exact_match" and 0.0 <= record.score <= 1.0
    assert json.loads(record.metrics_json) == {"exact_match": record.score}
    assert [step for step, _ in record.eval_curve] == [0, 3]  # zero-shot, then after training
    assert record.infer_latency_ms > 0 and record.train_tokens_per_s > 0


def test_gsm8k_config_goes_through_the_hub_loader(tiny_dirs, tmp_path, monkeypatch):
    import datasets

    from peftbench.runner import run

    calls = []
    rows = [{"question": f"Tom has {i} apples and buys 2. How many?",
             "answer": f"He has {i} + 2 = <<{i}+2={i + 2}>>{i + 2}.\n#### {i + 2}"} for i in range(12)]

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        return datasets.DatasetDict(train=datasets.Dataset.from_list(rows), test=datasets.Dataset.from_list(rows[:6]))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    cfg = compose_run(["task=gsm8k", f"model.name={tiny_dirs['gpt2']}", f"results_dir={tmp_path}", *FAST])
    record = run(cfg)
    assert record.status == "success", record.error
    assert calls == [("openai/gsm8k", "main")] and record.metric == "exact_match"
    # The references are the numbers after "####".
    data = load_task(_task("gsm8k"), byte_tokenizer("gpt2"), TrainConfig())
    kind = data.kind
    labels = torch.tensor(data.eval[0]["labels"])[None]
    assert kind.references(labels, byte_tokenizer("gpt2")) == ["2"]


def _task(name: str) -> TaskConfig:
    from peftbench.config import validate

    return validate(compose_run([f"task={name}"])).run.task


def test_instruct_config_on_local_json_lines(tiny_dirs, tmp_path):
    from peftbench.runner import run

    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Say {w}.", "answer": w}) + "\n"
                            for w in ["yes", "no", "maybe", "red", "blue", "green", "one", "two", "three", "four"]))
    cfg = compose_run(["task=instruct", f"task.data_files.train={path}", f"model.name={tiny_dirs['gpt2']}",
                       f"results_dir={tmp_path}", *FAST])
    record = run(cfg)
    assert record.status == "success", record.error
    assert record.task == "instruct" and record.metric == "exact_match"


def test_instruct_refuses_a_missing_answer_column(tiny_dirs, tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"instruction": "Say yes.", "output": "yes"}) + "\n")
    with pytest.raises(ConfigError, match=r"task.label_column='answer' is not a column of file .*qa.jsonl"):
        load_task(_task_with(path), byte_tokenizer("gpt2"), TrainConfig())


def _task_with(path) -> TaskConfig:
    from peftbench.config import validate

    return validate(compose_run(["task=instruct", f"task.data_files.train={path}"])).run.task


# ---- seq2seq ---------------------------------------------------------------------------------------

def test_seq2seq_batches_shift_the_labels_behind_the_start_token():
    tokenizer = byte_tokenizer("t5")
    task = TaskConfig(name="t", kind="seq2seq", source="local", text_column="s", label_column="t",
                      prompt_template="copy: {text}")
    kind = make_kind(task)
    rows = kind.tokenize({"s": ["ab", "abcd"], "t": ["x", "xyz"]}, task, tokenizer, max_length=32)
    assert rows["labels"][1] == tokenizer("xyz", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    batch = kind.collator(tokenizer)([{k: v[i] for k, v in rows.items()} for i in range(2)])
    labels, decoder = batch["labels"], batch["decoder_input_ids"]
    assert decoder[:, 0].tolist() == [tokenizer.pad_token_id] * 2
    assert decoder[1, 1:].tolist() == labels[1, :-1].tolist()
    assert labels[0].tolist()[2:] == [IGNORE_INDEX] * 2 and IGNORE_INDEX not in decoder.tolist()[0]
    torch.manual_seed(0)
    model = tiny_model("t5", len(tokenizer)).eval()
    with_decoder = model(**batch).loss
    from_labels = model(**{k: v for k, v in batch.items() if k != "decoder_input_ids"}).loss
    torch.testing.assert_close(with_decoder, from_labels)  # the same as T5's own shift


def test_text2text_config_on_a_tiny_t5_learns_to_copy(tiny_dirs, tmp_path):
    """End to end on local CSV data; full fine-tuning of a tiny T5 learns to copy short words."""
    from peftbench.runner import run

    words = ["ab", "cd", "ef", "gh", "ij", "kl", "mn", "op"]
    path = tmp_path / "pairs.csv"
    path.write_text("source,target\n" + "".join(f"{w},{w}\n" for w in words))
    common = ["task=text2text", f"task.data_files.train={path}", f"task.data_files.validation={path}",
              f"model.name={tiny_dirs['t5']}", f"results_dir={tmp_path}", *FAST]
    record = run(compose_run([*common, "method=full", "train.steps=80", "train.lr=6e-3", "train.batch_size=8",
                              "train.eval_size=8", "train.eval_batch_size=8", "train.log_every=50"]))
    assert record.status == "success", record.error
    assert record.metric == "exact_match" and record.score >= 0.75, record.score
    lora = run(compose_run([*common, "method=lora"]))
    assert lora.status == "success", lora.error
    assert lora.method == "lora" and lora.trainable_params < record.trainable_params / 5


def test_cnn_dailymail_config_goes_through_the_hub_loader_and_scores_rouge(tiny_dirs, tmp_path, monkeypatch):
    import datasets

    from peftbench.runner import run

    calls = []
    rows = [{"article": f"story {i} about things", "highlights": f"story {i}", "id": str(i)} for i in range(12)]

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        split = datasets.Dataset.from_list(rows)
        return datasets.DatasetDict(train=split, validation=split, test=split)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    record = run(compose_run(["task=cnn_dailymail", f"model.name={tiny_dirs['t5']}", f"results_dir={tmp_path}", *FAST]))
    assert record.status == "success", record.error
    assert calls == [("abisee/cnn_dailymail", "3.0.0")]
    metrics = json.loads(record.metrics_json)
    assert set(metrics) == {"rougeL", "rouge1", "rouge2"} and record.score == metrics["rougeL"]
