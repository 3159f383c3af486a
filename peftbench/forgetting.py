"""Forgetting: how much a fine-tune changed what the pretrained model knew, on a reference text.

Two forward passes over ``forgetting.samples`` sentences of a reference text held out from the task:
one by the pretrained model before the method is applied (:meth:`Probe.take_base`, called by the
runner between loading the model and applying the method), one by the tuned model at the end
(:meth:`Probe.measure`).

- ``representation_drift`` = 1 - linear CKA (Kornblith et al. 2019, eq. 5) between the two models'
  final hidden states, each sentence mean-pooled over its non-padding tokens (``n x hidden``, ``n``
  sentences; for encoder-decoders the encoder's final states). 0: the representations are the same up
  to a rotation and scale; 1: unrelated.
- ``ref_loss_delta`` (causal LMs): tuned minus pretrained mean per-token cross-entropy of the
  reference text (nats/token), as peft's ``method_comparison`` does with a wiki sample. Positive:
  the model got worse at general text.

The default reference, ``python_docs``, is the English prose of Python's own documentation
(``pydoc_data.topics``: about 465k characters over 79 topics of the language reference), which every
CPython installation ships, so it works offline with the README's set-up and is not part of any task
peftbench ships. It is technical prose, not news or fiction: a drift measured on it says how much
general English representations moved, not how much any particular domain was forgotten. Code
samples (indented lines), grammar rules, headings, list bullets and emphasis marks are left out; sentences of 6 to 60 words are kept and
``samples`` of them are taken evenly spread over the whole text. ``forgetting.reference=`` also takes
a local text file (one sentence or paragraph per line) or a Hugging Face dataset id (with
``forgetting.config_name``, ``.split`` and ``.column``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from peftbench.config import REFERENCE_BUILTIN, ForgettingConfig
from peftbench.errors import ConfigError

MIN_WORDS, MAX_WORDS = 6, 60
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
BULLET = re.compile(r"^(\* |\[\d+\] |\d+\. )")  # list items and footnote marks of the docs' text
MARKUP = re.compile(r"\*(\S[^*]*?)\*")  # *emphasis*


@dataclass
class Forgetting:
    """What :meth:`Probe.measure` returns; None where it does not apply."""

    representation_drift: float | None = None
    ref_loss_delta: float | None = None
    reference: str = ""


def python_docs_sentences() -> list[str]:
    """English sentences of ``pydoc_data.topics``, in topic order (see the module doc)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise ConfigError(
            "forgetting.reference=python_docs needs Python's pydoc_data module, which this Python lacks; "
            "point forgetting.reference at a local text file or a hub dataset, or set forgetting.enabled=false"
        ) from None
    sentences = []
    for name in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[name]):
            lines = block.splitlines()
            if not lines or lines[0].startswith((" ", "\t")) or set(lines[-1].strip()) <= set("*=-"):
                continue  # a code sample, a grammar rule or a heading
            sentences += SENTENCE_END.split(" ".join(line.strip() for line in lines))
    cleaned = (MARKUP.sub(r"\1", BULLET.sub("", s)) for s in sentences)
    kept = [s for s in cleaned if MIN_WORDS <= len(s.split()) <= MAX_WORDS and (s[0].isupper() or s[0] in "\"'(")]
    return list(dict.fromkeys(kept))  # some topics repeat others' paragraphs: each sentence once


def reference_texts(cfg: ForgettingConfig) -> tuple[list[str], str]:
    """``(samples texts, a label of the source)``: evenly spread over the reference."""
    if cfg.reference == REFERENCE_BUILTIN:
        texts, label = python_docs_sentences(), REFERENCE_BUILTIN
    elif Path(cfg.reference).expanduser().is_file():
        lines = Path(cfg.reference).expanduser().read_text(encoding="utf-8", errors="replace").splitlines()
        texts, label = [line.strip() for line in lines if line.strip()], f"file:{cfg.reference}"
    else:
        texts, label = hub_texts(cfg), f"{cfg.reference}/{cfg.config_name or ''}:{cfg.split}.{cfg.column}"
    if not texts:
        raise ConfigError(f"forgetting.reference={cfg.reference!r} holds no text")
    n = min(cfg.samples, len(texts))
    return [texts[i * len(texts) // n] for i in range(n)], f"{label}[{n}]"


def hub_texts(cfg: ForgettingConfig) -> list[str]:
    import datasets

    try:
        data = datasets.load_dataset(cfg.reference, cfg.config_name, split=cfg.split)
    except Exception as err:
        raise ConfigError(
            f"forgetting.reference={cfg.reference!r} is neither {REFERENCE_BUILTIN!r}, nor a local file, nor a "
            f"dataset that loads (split {cfg.split!r}): {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    if cfg.column not in data.column_names:
        raise ConfigError(f"forgetting.column={cfg.column!r} is not a column of {cfg.reference}; it has: "
                          f"{', '.join(data.column_names)}")
    return [t for t in list(data[cfg.column]) if isinstance(t, str) and t.strip()]


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019): ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on centred
    columns. Args: x: ``(n, d1)``; y: ``(n, d2)``, rows the same examples. Returns a value in [0, 1]."""
    x = (x - x.mean(0)).double()
    y = (y - y.mean(0)).double()
    cross = (y.T @ x).pow(2).sum()
    norm = (x.T @ x).norm() * (y.T @ y).norm()
    return float(cross / norm) if norm > 0 else 1.0


class Probe:
    """The reference text's states of the pretrained model, kept to compare with the tuned model's.

    Args:
        cfg: the ``forgetting`` node.
        causal_lm: also measure the per-token cross-entropy (decoders generating text).
        device: where the forward passes run.
    """

    def __init__(self, cfg: ForgettingConfig, causal_lm: bool, device: torch.device) -> None:
        self.cfg, self.causal_lm, self.device = cfg, causal_lm, device
        self.batches: list[dict[str, torch.Tensor]] = []
        self.base_pooled: torch.Tensor | None = None
        self.base_loss: float | None = None
        self.label = ""

    def take_base(self, model: nn.Module, tokenizer: Any, memo: Callable[[Callable[[], Any]], Any] | None = None
                  ) -> None:
        """Before the method is applied: tokenize the reference and keep the base model's states.
        ``memo(compute)``: where the runner keeps them across runs of one process (the same base
        model gives the same states), else they are computed here."""
        if not self.cfg.enabled:
            return

        def compute() -> tuple[list[dict[str, torch.Tensor]], str, torch.Tensor, float | None]:
            texts, label = reference_texts(self.cfg)
            # Batched by length (the same order for the base and the tuned pass, which is all CKA
            # needs): prose sentences vary a lot, and padding each batch to its longest would double
            # the probe's cost.
            encoded = tokenizer(texts, truncation=True, max_length=self.cfg.max_length)  # tokenized once
            order = sorted(range(len(texts)), key=lambda i: len(encoded["input_ids"][i]))
            batches = [dict(tokenizer.pad({k: [encoded[k][i] for i in chunk] for k in encoded.keys()},
                                          return_tensors="pt"))
                       for chunk in (order[j: j + self.cfg.batch_size] for j in range(0, len(order), self.cfg.batch_size))]
            self.batches = batches
            return (batches, label, *self.states(model))

        self.batches, self.label, self.base_pooled, self.base_loss = memo(compute) if memo else compute()

    def measure(self, model: nn.Module) -> Forgetting:
        """After training: drift and loss change against the base model's states."""
        if self.base_pooled is None:
            return Forgetting()
        pooled, loss = self.states(model)
        delta = loss - self.base_loss if loss is not None and self.base_loss is not None else None
        drift = max(0.0, 1.0 - linear_cka(self.base_pooled, pooled))
        return Forgetting(representation_drift=drift, ref_loss_delta=delta, reference=self.label)

    @torch.no_grad()
    def states(self, model: nn.Module) -> tuple[torch.Tensor, float | None]:
        """Mean-pooled final hidden states ``(n, hidden)`` on the CPU, and the mean per-token loss."""
        was_training = model.training
        model.eval()
        pooled, loss_sum, tokens = [], 0.0, 0
        for batch in self.batches:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            mask = batch["attention_mask"]
            hidden, logits = self.forward(model, batch)
            # A method that prepends virtual tokens (prompt tuning) returns more positions than the
            # text has: the text's own are the last ones, and only they are compared with the base.
            hidden = hidden[:, hidden.shape[1] - mask.shape[1]:]
            logits = None if logits is None else logits[:, logits.shape[1] - mask.shape[1]:]
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled.append(((hidden * weights).sum(1) / weights.sum(1).clamp(min=1)).float().cpu())
            if logits is not None:
                targets = batch["input_ids"][:, 1:].masked_fill(mask[:, 1:] == 0, -100)
                loss_sum += float(nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                                                              ignore_index=-100, reduction="sum"))
                tokens += int((targets != -100).sum())
        model.train(was_training)
        return torch.cat(pooled), (loss_sum / tokens if tokens else None)

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final hidden states ``(batch, seq, hidden)`` and, for causal LMs, logits ``(batch, seq, vocab)``."""
        if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
            return model.get_encoder()(**batch).last_hidden_state, None
        out = model(**batch, output_hidden_states=True)
        return out.hidden_states[-1], (out.logits if self.causal_lm else None)
