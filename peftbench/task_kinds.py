"""Kinds of task: how each is modelled (which head), fed (tokenize, collate) and scored.

The runner calls these hooks and never asks which kind it runs, so adding a kind (causal-LM
generation, sequence-to-sequence) is a subclass of :class:`TaskKind` registered in ``KINDS``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peftbench.config import TaskConfig


class TaskKind:
    """The hooks a kind of task provides. Subclasses override what differs."""

    name = ""

    def auto_model_class(self) -> Any:
        """The transformers ``AutoModelFor...`` class that adds this kind's head."""
        raise NotImplementedError

    def config_overrides(self, task: TaskConfig) -> dict[str, Any]:
        """Keyword arguments for ``AutoConfig.from_pretrained`` (e.g. ``num_labels``)."""
        return {}

    def tokenize(self, batch: dict[str, list], task: TaskConfig, tokenizer: Any, max_length: int) -> dict:
        """Turns a batch of raw rows into model inputs with ``labels``."""
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

    def tokenize(self, batch: dict[str, list], task: TaskConfig, tokenizer: Any, max_length: int) -> dict:
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


KINDS: dict[str, TaskKind] = {kind.name: kind for kind in (Classification(),)}


def get_kind(name: str) -> TaskKind:
    return KINDS[name]
