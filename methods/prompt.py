"""Prompt tuning: trainable embeddings prepended to the embedded input (Lester et al. 2021).

Lester, Al-Rfou and Constant (2021, "The Power of Scale for Parameter-Efficient Prompt Tuning",
section 2) embed the ``n`` input tokens as ``X_e`` (``n x e``), prepend a trainable soft prompt
``P_e`` (``p x e``) and run the frozen model on ``[P_e; X_e]`` (``(p + n) x e``), maximising
``Pr(Y | [P; X])`` with only ``P_e`` trained. Unlike prefix tuning (``methods/prefix.py``), the
prompt enters once, as input embeddings, and every layer processes it like a token.

How it is wired (transformers 5.x). The prompt is one parameter, ``model.prompt_encoder.embedding``
(hence the parameter prefix ``prompt_``); the model keeps its class, ``.config`` and call signature.
A forward pre-hook (``with_kwargs=True``) on the stack that embeds the input (``model.base_model``
for encoder-only and decoder-only models, the encoder stack of an encoder-decoder) replaces
``input_ids`` by ``inputs_embeds`` with the ``p`` prompt rows in front (embedded by the model's own
``get_input_embeddings()``), and prepends ``p`` ones to a 2-D ``attention_mask`` and ``p`` zeros to
``token_type_ids``. Hooks on the backbone rather than a wrapper: the task head above it still sees
the call it was given (``input_ids`` included), which decides where outputs line up (below).

Decisions:

* Where the prompt goes: in front of everything, special tokens included, as in peft. On BERT the
  pooler (inside the backbone) then reads the first virtual token instead of ``[CLS]``, and on
  RoBERTa the classification head does too: this matches peft's ``PromptTuningConfig`` exactly
  (tested), and the prompt is then what the head pools, which trains it directly.
* Positions. Virtual tokens take positions ``0..p-1`` and every real token moves ``p`` further, in
  every family: encoders with absolute positions (BERT, RoBERTa) simply see a longer sequence, as in
  peft, so ``p`` plus the input length must fit ``max_position_embeddings``. Decoders (GPT-2, Llama)
  do the same; an explicit ``position_ids`` (left-padded batches, generation) is shifted by ``p``
  and the prompt gets ``0..p-1`` in front, so padded rows and generation see the same positions
  (peft drops ``position_ids`` instead). T5 uses relative position biases: nothing to shift.
* Decoders return outputs for the real tokens only. In a causal decoder the outputs at the virtual
  positions depend on the prompt alone, never on the input, and peft labels them -100, so the stack's
  ``last_hidden_state`` (and ``hidden_states``) drop the first ``p`` positions: logits line up with
  ``input_ids`` and ``labels`` as without prompt tuning, and heads that find the last real token
  from ``input_ids`` (GPT-2's and Llama's sequence classification) find it; peft's own such heads
  read the last position whatever the padding. Logits equal peft's at the real positions (tested).
  One difference in the loss: peft's last virtual position also predicts the first label; here, as
  for the model without a prompt, the first label has no earlier position predicting it (every
  harness task labels its first token -100, so their losses are the same). Encoders keep all
  ``p + n`` outputs: there the virtual positions depend on the input.
* Caches. The prompt is fed when a decoder starts (no cache, or an empty one); a non-empty cache is
  taken to hold it already (it is the cache an earlier call returned), so later steps only extend
  the mask and shift positions. ``generate`` therefore works, greedy or not, with a dynamic cache.
* T5: only the encoder's input gets the prompt (Lester et al. prompt T5's encoder); a pre-hook on
  the decoder prepends ``p`` ones to ``encoder_attention_mask`` whenever the encoder states are
  ``p`` longer, so cross-attention reads the virtual tokens' encodings too. (peft's seq2seq default,
  ``num_transformer_submodules=2``, also prompts the decoder; ``1`` is what we match.)
* Initialisation (``init``): ``random_vocab`` copies the embeddings of ``p`` token ids drawn
  uniformly from the whole vocabulary (peft's ``SAMPLE_VOCAB``; Lester et al. sample the 5,000 most
  frequent tokens of T5's frequency-sorted vocabulary, an order other vocabularies lack); ``uniform``
  draws from U(-0.5, 0.5), the paper's random initialisation; ``text`` embeds the tokens of
  ``init_text``, repeated or cut to ``p`` (as peft does, but without the tokenizer's special tokens,
  which would spend prompt positions on ``[CLS]``/``[SEP]`` embeddings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .base import (
    MethodConfigError,
    MethodSpec,
    accepts,
    call_kwargs,
    check_positive_int,
    freeze_all,
    positional_names,
    prepend_ones,
)

INITS = ("random_vocab", "uniform", "text")


@dataclass
class PromptConfig:
    """Settings of prompt tuning.

    Attributes:
        num_virtual_tokens: prompt length ``p`` (trainable embeddings prepended to the input).
        init: how the prompt starts: ``random_vocab`` (embeddings of random vocabulary tokens),
            ``uniform`` (U(-0.5, 0.5)) or ``text`` (the embeddings of ``init_text``'s tokens).
        init_text: the text whose token embeddings start the prompt (``init=text`` only).
        tokenizer_name_or_path: where the tokenizer of ``init_text`` loads from (``init=text`` only);
            ``None`` takes the model's own folder (``model.name_or_path``).
    """

    num_virtual_tokens: int = 20
    init: str = "random_vocab"
    init_text: str | None = None
    tokenizer_name_or_path: str | None = None

    def __post_init__(self) -> None:
        check_positive_int(self.num_virtual_tokens, "num_virtual_tokens")
        if self.init not in INITS:
            raise MethodConfigError(f"init={self.init!r} is not one of {', '.join(INITS)}")
        if self.init == "text":
            if not isinstance(self.init_text, str) or not self.init_text.strip():
                raise MethodConfigError(
                    f"init=text needs init_text, the text whose token embeddings start the prompt; got "
                    f"{self.init_text!r}"
                )
            return
        for key in ("init_text", "tokenizer_name_or_path"):
            if getattr(self, key) is not None:
                raise MethodConfigError(
                    f"{key} is used by init=text only; set init=text or leave {key} null (init={self.init!r})"
                )


class PromptEncoder(nn.Module):
    """Holds the soft prompt ``P_e``.

    Args:
        initial: the prompt's starting value, ``(p, e)``.
    """

    def __init__(self, initial: torch.Tensor) -> None:
        super().__init__()
        self.embedding = nn.Parameter(initial)

    @property
    def num_virtual_tokens(self) -> int:
        return self.embedding.shape[0]

    @property
    def extra_positions_per_sample(self) -> int:
        """What the FLOPs estimate adds per sample (:func:`peftbench.measure.prepended_positions`)."""
        return self.embedding.shape[0]

    def forward(self, batch_size: int) -> torch.Tensor:
        """Returns: the prompt for a batch, ``(batch_size, p, e)`` (expanded, not copied)."""
        return self.embedding.unsqueeze(0).expand(batch_size, -1, -1)

    def extra_repr(self) -> str:
        return f"p={self.embedding.shape[0]}, e={self.embedding.shape[1]}"


def _text_token_ids(model: nn.Module, config: PromptConfig, vocab_size: int) -> list[int]:
    """``init_text``'s token ids (no special tokens), repeated or cut to ``num_virtual_tokens``."""
    from transformers import AutoTokenizer

    source = config.tokenizer_name_or_path or getattr(model, "name_or_path", "") or ""
    if not source:
        raise MethodConfigError(
            "init=text needs a tokenizer for init_text: set tokenizer_name_or_path (the model has no "
            "name_or_path to load one from)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise MethodConfigError(
            f"init=text: no tokenizer could be loaded from {source!r} ({type(err).__name__}); set "
            "tokenizer_name_or_path to a folder or hub id holding the model's tokenizer"
        ) from None
    ids = list(tokenizer(config.init_text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise MethodConfigError(f"init_text={config.init_text!r} has no tokens for the tokenizer of {source!r}")
    if max(ids) >= vocab_size:
        raise MethodConfigError(
            f"the tokenizer of {source!r} gives token id {max(ids)}, outside the model's vocabulary of "
            f"{vocab_size}: tokenizer_name_or_path must name this model's tokenizer"
        )
    return (ids * math.ceil(config.num_virtual_tokens / len(ids)))[: config.num_virtual_tokens]


@torch.no_grad()
def initial_prompt(model: nn.Module, word_embeddings: nn.Module, config: PromptConfig) -> torch.Tensor:
    """The prompt's starting value under ``config.init``, ``(p, e)``, in the embeddings' dtype and device.

    ``random_vocab`` draws its token ids from torch's global generator (seed it for reproducibility).
    """
    weight = word_embeddings.weight
    vocab_size, dim = weight.shape
    p = config.num_virtual_tokens
    if config.init == "uniform":
        return torch.empty(p, dim, dtype=weight.dtype, device=weight.device).uniform_(-0.5, 0.5)
    if config.init == "random_vocab":
        ids = torch.randint(0, vocab_size, (p,), device=weight.device)
    else:
        ids = torch.tensor(_text_token_ids(model, config, vocab_size), device=weight.device)
    return weight[ids].detach().clone()


def _shift_positions(position_ids: torch.Tensor, p: int, with_prompt: bool) -> torch.Tensor:
    """Real tokens ``p`` further on; with the prompt, its positions ``0..p-1`` in front (last axis)."""
    shifted = position_ids + p
    if not with_prompt:
        return shifted
    front = torch.arange(p, dtype=position_ids.dtype, device=position_ids.device)
    return torch.cat([front.expand(*position_ids.shape[:-1], p), shifted], dim=-1)


def _drop_prompt_outputs(output: Any, p: int) -> Any:
    """A stack's output without its first ``p`` positions (``last_hidden_state``, ``hidden_states``)."""
    if isinstance(output, tuple):
        return (output[0][:, p:], *output[1:])
    output.last_hidden_state = output.last_hidden_state[:, p:]
    if getattr(output, "hidden_states", None) is not None:
        output.hidden_states = tuple(h[:, p:] for h in output.hidden_states)
    return output


class _InputHook:
    """Pre-hook (and, on decoders, forward hook) of the stack that embeds the input.

    A plain object (not a closure) so that ``copy.deepcopy`` of the model gives the copy hooks that
    point at the copy's prompt and embeddings.

    Args:
        encoder: the model's :class:`PromptEncoder`.
        word_embeddings: the model's input embeddings (``get_input_embeddings()``).
        stack: the hooked stack (for its signature).
        causal: the stack is a causal decoder (prompt fed only when a cache starts; outputs trimmed).
    """

    def __init__(self, encoder: PromptEncoder, word_embeddings: nn.Module, stack: nn.Module, causal: bool) -> None:
        self.encoder = encoder
        self.word_embeddings = word_embeddings
        self.positional = positional_names(stack)
        self.causal = causal
        self.prompted = False

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        kwargs = call_kwargs(module, self.positional, args, kwargs)
        p = self.encoder.num_virtual_tokens
        cache = kwargs.get("cache")
        self.prompted = not self.causal or cache is None or cache.get_seq_length() == 0
        if self.prompted:
            embeds = kwargs.get("inputs_embeds")
            if embeds is None:
                ids = kwargs.get("input_ids")
                if ids is None:
                    raise ValueError("prompt tuning needs input_ids or inputs_embeds")
                embeds = self.word_embeddings(ids)
            prompt = self.encoder(embeds.shape[0]).to(embeds.dtype)
            kwargs["input_ids"] = None
            kwargs["inputs_embeds"] = torch.cat([prompt, embeds], dim=1)
            token_types = kwargs.get("token_type_ids")
            if token_types is not None:
                kwargs["token_type_ids"] = torch.cat([token_types.new_zeros(token_types.shape[0], p), token_types], 1)
        if kwargs.get("position_ids") is not None:
            kwargs["position_ids"] = _shift_positions(kwargs["position_ids"], p, self.prompted)
        if kwargs.get("attention_mask") is not None:
            kwargs["attention_mask"] = prepend_ones(kwargs["attention_mask"], p, "prompt tuning")
        return (), kwargs

    def trim(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        """Forward hook of a decoder: drops the outputs at the virtual positions of a prompted call."""
        if not self.prompted:
            return output
        self.prompted = False
        return _drop_prompt_outputs(output, self.encoder.num_virtual_tokens)


class _CrossMaskHook:
    """Pre-hook of an encoder-decoder's decoder: extends the encoder mask over the virtual tokens."""

    def __init__(self, encoder: PromptEncoder, decoder: nn.Module) -> None:
        self.encoder = encoder
        self.positional = positional_names(decoder)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        kwargs = call_kwargs(module, self.positional, args, kwargs)
        p = self.encoder.num_virtual_tokens
        mask, states = kwargs.get("encoder_attention_mask"), kwargs.get("encoder_hidden_states")
        if mask is not None and states is not None and states.shape[1] == mask.shape[-1] + p:
            kwargs["encoder_attention_mask"] = prepend_ones(mask, p, "prompt tuning")
        return (), kwargs


def _stacks(model: nn.Module) -> tuple[nn.Module, bool, nn.Module | None]:
    """``(input stack, is a causal decoder, decoder of an encoder-decoder or None)`` of ``model``."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "get_input_embeddings"):
        raise MethodConfigError(
            f"prompt tuning needs a transformers model with a config and input embeddings; "
            f"{type(model).__name__} has none"
        )
    base = getattr(model, "base_model", model)
    if getattr(config, "is_encoder_decoder", False):
        encoder, decoder = base.get_encoder(), base.get_decoder()
        if encoder is None or decoder is None or encoder is base or decoder is base:
            raise MethodConfigError(f"could not find the encoder and decoder stacks of {type(model).__name__}")
        return encoder, False, decoder
    causal = any(getattr(m, "is_causal", False) is True for m in base.modules())
    return base, causal, None


def apply(model: nn.Module, config: PromptConfig) -> nn.Module:
    """Adds ``model.prompt_encoder`` and the hooks that prepend it to the input; freezes the rest.

    Args:
        model: a transformers model whose input is token embeddings (BERT, RoBERTa, GPT-2, Llama, T5
            families and look-alikes), with any head.
        config: the prompt tuning settings.

    Returns:
        ``model`` itself, called exactly as before.
    """
    if isinstance(getattr(model, "prompt_encoder", None), PromptEncoder):
        raise MethodConfigError("prompt tuning is already applied to this model")
    stack, causal, decoder = _stacks(model)
    if not accepts(stack, "inputs_embeds"):
        raise MethodConfigError(
            f"{type(stack).__name__}.forward takes no `inputs_embeds`; prompt tuning prepends its prompt "
            "to token embeddings, so it needs a model whose input is tokens"
        )
    word_embeddings = model.get_input_embeddings()
    if not isinstance(getattr(word_embeddings, "weight", None), torch.Tensor) or word_embeddings.weight.ndim != 2:
        raise MethodConfigError(f"{type(model).__name__}.get_input_embeddings() has no vocabulary x width weight")
    initial = initial_prompt(model, word_embeddings, config)  # before touching the model: may refuse

    freeze_all(model)
    model.prompt_encoder = PromptEncoder(initial)
    hook = _InputHook(model.prompt_encoder, word_embeddings, stack, causal)
    stack.register_forward_pre_hook(hook, with_kwargs=True)
    if causal:
        stack.register_forward_hook(hook.trim, with_kwargs=True)
    if decoder is not None:
        decoder.register_forward_pre_hook(_CrossMaskHook(model.prompt_encoder, decoder), with_kwargs=True)
    return model


SPEC = MethodSpec(
    name="prompt",
    config_cls=PromptConfig,
    apply=apply,
    param_prefix="prompt_",
    description="prompt tuning (Lester et al. 2021): trainable embeddings prepended to the input",
)
