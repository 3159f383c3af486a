"""Tiny models of every family, built from transformers configs (nothing is downloaded).

Each builder returns a :class:`Tiny`: a fresh model (seeded, so two calls give equal weights),
a batch of inputs and labels for it, and the family's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

VOCAB = 64
BATCH, SEQ = 4, 7


@dataclass
class Tiny:
    family: str
    build: Callable[[], nn.Module]
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor

    def model(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        model = self.build()
        model.eval()
        return model

    def logits(self, model: nn.Module) -> torch.Tensor:
        out = model(**self.inputs)
        return out.logits if hasattr(out, "logits") else out

    def loss(self, model: nn.Module) -> torch.Tensor:
        return nn.functional.cross_entropy(self.logits(model), self.labels)


def _text_inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB, (BATCH, SEQ), generator=g)
    attention_mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    attention_mask[1, -2:] = 0  # one padded row, so masks are exercised
    input_ids[1, -2:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _labels(n_classes: int = 2) -> torch.Tensor:
    return torch.arange(BATCH) % n_classes


def bert() -> Tiny:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32, num_labels=2)
    return Tiny("bert", lambda: BertForSequenceClassification(cfg), _text_inputs(), _labels())


def roberta() -> Tiny:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    cfg = RobertaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=40, num_labels=2, pad_token_id=0)
    inputs = _text_inputs()
    inputs["input_ids"] = inputs["input_ids"].clamp(min=2) * inputs["attention_mask"]
    return Tiny("roberta", lambda: RobertaForSequenceClassification(cfg), inputs, _labels())


def gpt2() -> Tiny:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32, num_labels=2,
                     pad_token_id=0, bos_token_id=1, eos_token_id=1)
    return Tiny("gpt2", lambda: GPT2ForSequenceClassification(cfg), _text_inputs(), _labels())


def llama() -> Tiny:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    # Grouped-query attention: 4 query heads share 2 key/value heads.
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=48, max_position_embeddings=32,
                      num_labels=2, pad_token_id=0)
    return Tiny("llama", lambda: LlamaForSequenceClassification(cfg), _text_inputs(), _labels())


def t5() -> Tiny:
    from transformers import T5Config, T5ForSequenceClassification

    cfg = T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                   num_heads=4, num_labels=2, pad_token_id=0, decoder_start_token_id=0,
                   eos_token_id=1)
    inputs = _text_inputs()
    inputs["input_ids"][:, SEQ - 3] = 1  # T5's classification head reads the (single) EOS token
    inputs["input_ids"][:, SEQ - 2 :] = inputs["input_ids"][:, SEQ - 2 :].clamp(min=2)
    inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])
    inputs["input_ids"][1, SEQ - 2 :] = 0
    inputs["attention_mask"][1, SEQ - 2 :] = 0
    return Tiny("t5", lambda: T5ForSequenceClassification(cfg), inputs, _labels())


def vit() -> Tiny:
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, num_labels=2)
    g = torch.Generator().manual_seed(2)
    inputs = {"pixel_values": torch.randn(BATCH, 3, 16, 16, generator=g)}
    return Tiny("vit", lambda: ViTForImageClassification(cfg), inputs, _labels())


class MLP(nn.Module):
    """A plain PyTorch network with no transformers config at all."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 32)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(32, 32)
        self.head = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.fc2(self.act(self.fc1(x)))))


def mlp() -> Tiny:
    g = torch.Generator().manual_seed(3)
    return Tiny("mlp", MLP, {"x": torch.randn(BATCH, 12, generator=g)}, _labels())


FAMILIES: dict[str, Callable[[], Tiny]] = {
    "bert": bert, "roberta": roberta, "gpt2": gpt2, "llama": llama, "t5": t5, "vit": vit, "mlp": mlp,
}
