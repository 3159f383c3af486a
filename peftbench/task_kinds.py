"""Kinds of task: how each is modelled (which head), fed (tokenize, collate) and scored.

The runner calls these hooks and never asks which kind it runs. A kind is a subclass of
:class:`TaskKind` registered in ``KINDS``; :func:`make_kind` binds one to a task's config, so the
generation kinds know their prompt template, answer extractor and generation length.

- ``classification``: a sequence-classification head (regression with ``num_labels: 1``).
- ``causal_lm``: a decoder reads ``prompt_template`` and is trained on the answer tokens only (the
  prompt and padding are labelled -100); it is scored by greedy generation of the answer.
- ``seq2seq``: an encoder-decoder (T5-style) reads the prompt and is trained on the target; it is
  scored by greedy generation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from peftbench.answers import extract_answer
from peftbench.config import TASK_KINDS, TaskConfig

IGNORE_INDEX = -100  # label of tokens the loss skips (prompt, padding)


class TaskKind:
    """The hooks a kind of task provides. Subclasses override what differs.

    Args:
        task: the task this kind serves (None where only the class-level hooks are needed).
    """

    name = ""

    def __init__(self, task: TaskConfig | None = None) -> None:
        self.task = task

    def auto_model_class(self) -> Any:
        """The transformers ``AutoModelFor...`` class that adds this kind's head."""
        raise NotImplementedError

    def config_overrides(self, task: TaskConfig) -> dict[str, Any]:
        """Keyword arguments for ``AutoConfig.from_pretrained`` (e.g. ``num_labels``)."""
        return {}

    def load_options(self) -> dict[str, Any]:
        """Keyword arguments for the model's ``from_pretrained``."""
        return {}

    def tokenize(self, batch: dict[str, list], task: TaskConfig, tokenizer: Any, max_length: int,
                 split: str = "train") -> dict:
        """Turns a batch of raw rows into model inputs with ``labels``.

        ``split`` is ``train`` or ``eval``: generation kinds feed the answer to the model only in
        training, and keep it as the reference in evaluation.
        """
        raise NotImplementedError

    def collator(self, tokenizer: Any) -> Any:
        """Pads a list of tokenized rows into a batch of tensors (``labels`` included)."""
        raise NotImplementedError

    def predict(self, model: nn.Module, inputs: dict[str, torch.Tensor], tokenizer: Any) -> list:
        """Predictions for one evaluation batch (``inputs`` on the device, without ``labels``)."""
        raise NotImplementedError

    def references(self, labels: torch.Tensor, tokenizer: Any) -> list:
        """The references of one evaluation batch, comparable with :meth:`predict`'s output."""
        return labels.tolist()


class Classification(TaskKind):
    """Sequence classification (``num_labels`` >= 2) or regression (``num_labels`` = 1) with a head
    on the encoder's (or decoder's last token's) representation."""

    name = "classification"

    def auto_model_class(self) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def config_overrides(self, task: TaskConfig) -> dict[str, Any]:
        return {"num_labels": task.num_labels}

    def load_options(self) -> dict[str, Any]:
        # A checkpoint saved with a head for another number of classes gets a new head.
        return {"ignore_mismatched_sizes": True}

    def tokenize(self, batch: dict[str, list], task: TaskConfig, tokenizer: Any, max_length: int,
                 split: str = "train") -> dict:
        texts = [batch[task.text_column]]
        if task.text_pair_column:
            texts.append(batch[task.text_pair_column])
        encoded = tokenizer(*texts, truncation=True, max_length=max_length)
        labels = batch[task.label_column]
        encoded["labels"] = [float(v) for v in labels] if task.num_labels == 1 else labels
        return encoded

    def collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, return_tensors="pt")

    def predict(self, model: nn.Module, inputs: dict[str, torch.Tensor], tokenizer: Any) -> list:
        logits = model(**inputs).logits
        if logits.shape[-1] == 1:
            return logits.squeeze(-1).float().cpu().tolist()
        return logits.argmax(-1).cpu().tolist()


def _pad(rows: list[list[int]], value: int, left: bool) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    return torch.tensor([[value] * (width - len(r)) + r if left else r + [value] * (width - len(r)) for r in rows],
                        dtype=torch.long)


class _Generation(TaskKind):
    """What the two generation kinds share: prompts, answers as text, greedy decoding, extraction."""

    def prompt(self, text: Any) -> str:
        return self.task.prompt_template.format(text=text)

    def extract(self, text: str) -> str:
        return extract_answer(text, self.task.answer_extractor if self.task else "strip")

    def references(self, labels: torch.Tensor, tokenizer: Any) -> list:
        texts = [tokenizer.decode([t for t in row if t != IGNORE_INDEX], skip_special_tokens=True)
                 for row in labels.tolist()]
        return [self.extract(t) for t in texts]

    def decode(self, generated: torch.Tensor, tokenizer: Any) -> list[str]:
        """The extracted answers of generated token rows, each cut at its first EOS."""
        texts = []
        for row in generated.tolist():
            if tokenizer.eos_token_id in row:
                row = row[: row.index(tokenizer.eos_token_id)]
            texts.append(tokenizer.decode(row, skip_special_tokens=True))
        return [self.extract(t) for t in texts]

    def generate(self, model: nn.Module, inputs: dict[str, torch.Tensor], tokenizer: Any) -> torch.Tensor:
        return model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                              max_new_tokens=self.task.max_new_tokens, do_sample=False, num_beams=1,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)


class CausalLM(_Generation):
    """A decoder continues ``prompt_template`` with the answer.

    Training rows are ``prompt + answer + EOS`` with labels -100 on the prompt (and padding), so
    the loss is on the answer tokens only. Evaluation rows hold the prompt alone as input and the
    answer as labels; the model generates greedily and the extracted answers are compared. Rows are
    padded on the left with explicit ``position_ids``, so generation continues right after the
    prompt and training sees the same positions as generation.
    """

    name = "causal_lm"

    def auto_model_class(self) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def tokenize(self, batch: dict[str, list], task: TaskConfig, tokenizer: Any, max_length: int,
                 split: str = "train") -> dict:
        prompts = tokenizer([self.prompt(t) for t in batch[task.text_column]])["input_ids"]
        answers = tokenizer([str(a) for a in batch[task.label_column]], add_special_tokens=False)["input_ids"]
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        rows: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
        for prompt, answer in zip(prompts, answers, strict=True):
            answer = (answer + eos)[: min(task.max_target_length, max_length - 1)]
            if split == "train":
                prompt = prompt[-(max_length - len(answer)):]  # the answer survives truncation
                ids, labels = prompt + answer, [IGNORE_INDEX] * len(prompt) + answer
            else:
                ids, labels = prompt[-max_length:], answer
            rows["input_ids"].append(ids)
            rows["attention_mask"].append([1] * len(ids))
            rows["labels"].append(labels)
        return rows

    def collator(self, tokenizer: Any) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

        def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
            mask = _pad([r["attention_mask"] for r in rows], 0, left=True)
            return {
                "input_ids": _pad([r["input_ids"] for r in rows], pad, left=True),
                "attention_mask": mask,
                "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
                "labels": _pad([r["labels"] for r in rows], IGNORE_INDEX, left=True),
            }

        return collate

    def predict(self, model: nn.Module, inputs: dict[str, torch.Tensor], tokenizer: Any) -> list:
        return self.decode(self.generate(model, inputs, tokenizer)[:, inputs["input_ids"].shape[1]:], tokenizer)


class Seq2Seq(_Generation):
    """An encoder-decoder (T5-style) maps ``prompt_template`` to the target text.

    Batches carry ``decoder_input_ids`` (the labels shifted right behind the decoder start token,
    which T5 models take to be the padding token), so a plain forward pass works in every stage.
    """

    name = "seq2seq"

    def auto_model_class(self) -> Any:
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM

    def tokenize(self, batch: dict[str, list], task: TaskConfig, tokenizer: Any, max_length: int,
                 split: str = "train") -> dict:
        encoded = tokenizer([self.prompt(t) for t in batch[task.text_column]], truncation=True, max_length=max_length)
        targets = tokenizer(text_target=[str(t) for t in batch[task.label_column]], truncation=True,
                            max_length=task.max_target_length)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                "labels": targets["input_ids"]}

    def collator(self, tokenizer: Any) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

        def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
            labels = _pad([r["labels"] for r in rows], IGNORE_INDEX, left=False)
            decoder_input_ids = torch.cat([torch.full_like(labels[:, :1], pad), labels[:, :-1]], dim=1)
            return {
                "input_ids": _pad([r["input_ids"] for r in rows], pad, left=False),
                "attention_mask": _pad([r["attention_mask"] for r in rows], 0, left=False),
                "decoder_input_ids": decoder_input_ids.masked_fill(decoder_input_ids == IGNORE_INDEX, pad),
                "labels": labels,
            }

        return collate

    def predict(self, model: nn.Module, inputs: dict[str, torch.Tensor], tokenizer: Any) -> list:
        generated = self.generate(model, inputs, tokenizer)[:, 1:]  # after the decoder start token
        return self.decode(generated, tokenizer)


KINDS: dict[str, type[TaskKind]] = {kind.name: kind for kind in (Classification, CausalLM, Seq2Seq)}
if tuple(KINDS) != TASK_KINDS:  # the config checks task.kind against TASK_KINDS without importing torch
    raise RuntimeError(f"task kinds {tuple(KINDS)} differ from config.TASK_KINDS {TASK_KINDS}")


def make_kind(task: TaskConfig) -> TaskKind:
    """The kind of ``task``, bound to its config."""
    return KINDS[task.kind](task)


def get_kind(name: str) -> TaskKind:
    """An unbound instance of the kind called ``name`` (for its head and config overrides)."""
    return KINDS[name]()
