"""Prefix tuning: trainable key/value prefixes in every attention layer (Li and Liang 2021).

Li and Liang (2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation", section 4.2)
prepend ``P`` virtual positions to the sequence and make their activations free parameters
``h_i = P_theta[i, :]`` at every layer; the frozen model computes every other position as usual,
so token ``i`` attends over ``[prefix; x]``. For one attention head with frozen projections this is

    head(x) = softmax(q(x) [P_k; k(x)]^T / sqrt(d)) [P_v; v(x)]

with trainable per-layer prefixes ``P_k, P_v`` of shape ``P x head_dim`` for each key/value head.
Section 4.3's reparameterisation ``P_theta[i, :] = MLP(P'_theta[i, :])`` (a smaller embedding fed
through ``Linear -> tanh -> Linear``) is available with ``reparameterize=True``; it stabilises
training and is folded back into plain prefixes by :func:`flatten_prefix` for evaluation and storage.

How it is wired (transformers 5.x). The prefixes are the parameters of one submodule,
``model.prefix_encoder`` (hence the method's parameter prefix ``prefix_``); the model keeps its class,
its ``.config`` and its call signature. A forward pre-hook (``with_kwargs=True``) on each attention
*stack* builds, on every call, a fresh ``DynamicCache`` holding the prefix keys and values of each
layer (``batch x kv_heads x P x head_dim``) and passes it as ``cache=``; the model's own attention
concatenates it in front of the current keys (``cache.update`` appends). The same hook prepends ``P``
ones to a 2-D ``attention_mask``, so prefix positions are always attended and padding stays masked.
Hooks rather than a wrapper: the model stays the object the harness built (``isinstance`` checks,
``.config``, ``save_pretrained``, heads reached by attribute all keep working), and the hook sits on
the backbone, below the task head, so heads that read the mask or ``input_ids`` see them unchanged.

Stacks, and where the layer/width numbers come from (``model.config``, never the class):

* encoder-only (BERT, RoBERTa) and decoder-only (GPT-2, Llama): one stack, ``model.base_model``,
  with ``num_hidden_layers`` layers.
* encoder-decoder (T5): ``get_encoder()`` with ``num_layers`` layers and ``get_decoder()`` with
  ``num_decoder_layers`` layers (falling back to ``num_layers``). T5's encoder stack discards any
  cache it is given, so its cache is handed to each block of the stack (the one ``ModuleList`` child
  holding that many blocks) by a pre-hook on the block instead. The decoder gets an
  ``EncoderDecoderCache`` whose self-attention part holds the prefix and whose cross-attention part
  starts empty.
* key/value width of a layer: ``num_key_value_heads * head_dim`` where ``num_key_value_heads``
  falls back to ``num_attention_heads`` (grouped-query attention: Llama's prefixes are as narrow as
  its ``k_proj``) and ``head_dim`` to ``d_kv``, then ``hidden_size // num_attention_heads``.

The flat prefix tensor is ``P x W`` with ``W = sum over stacks of layers * 2 * kv_width``; each
stack's columns are laid out ``(layer, key/value, head, head_dim)``, the layout peft uses, so a
peft prefix can be copied in unchanged.

Decisions:

* Positions. Decoders (GPT-2, Llama, BERT with ``is_decoder``) derive positions from the cache
  length, so real tokens start at position ``P``: the prefix acts as ``P`` earlier tokens. We keep
  that: it is what passing the prefix as past keys/values has always meant in transformers, and
  what peft does, so logits match peft exactly.
  Encoders with absolute positions (BERT, RoBERTa) would shift the same way (transformers passes
  ``cache_length`` to their embeddings), which would move every token off the positions it was
  pretrained on and make inputs longer than ``max_position_embeddings - P`` fail; there a pre-hook
  on the embeddings subtracts ``P`` again, so the real tokens keep the positions they would have
  without prefix tuning (the prefix has no position of its own). T5 uses relative position
  biases; with a cache of length ``P`` transformers places the prefix keys just before the
  sequence, in the encoder as in the decoder, which we keep.
* T5 cross-attention gets no prefix: its keys and values are the encoder's outputs, which the
  encoder prefix already steers, and the cross-attention cache is left to transformers (it is
  filled once and reused while generating). So the prefix tensor covers encoder self-attention
  and decoder self-attention only. (peft 0.21 also leaves T5's cross-attention cache empty, and
  prefixes only the decoder's self-attention, not the encoder.)
* A caller may pass its own cache (incremental decoding): an empty one is filled with the prefix,
  a non-empty one is taken to hold the prefix already (it is the cache an earlier call returned),
  and the 2-D mask is extended by ``P`` either way.
* Gradient checkpointing makes transformers drop the cache during training, which would silently
  remove the prefix; the hook raises instead.
"""

from __future__ import annotations

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


@dataclass
class PrefixConfig:
    """Settings of prefix tuning.

    Attributes:
        num_virtual_tokens: prefix length ``P`` (virtual positions per attention layer).
        reparameterize: learn the prefix through Li and Liang's MLP (embedding ``P x E`` ->
            ``Linear(E, encoder_hidden_size)`` -> tanh -> ``Linear(encoder_hidden_size, W)``), with
            ``E`` the key/value width of a layer (the hidden size unless the model uses grouped-query
            attention, as in peft). ``False`` learns the ``P x W`` prefix directly.
        encoder_hidden_size: hidden width of that MLP; ``None`` takes ``E``. Only with
            ``reparameterize=True``.
    """

    num_virtual_tokens: int = 20
    reparameterize: bool = False
    encoder_hidden_size: int | None = None

    def __post_init__(self) -> None:
        check_positive_int(self.num_virtual_tokens, "num_virtual_tokens")
        if not isinstance(self.reparameterize, bool):
            raise MethodConfigError(f"reparameterize must be true or false, got {self.reparameterize!r}")
        if self.encoder_hidden_size is not None:
            check_positive_int(self.encoder_hidden_size, "encoder_hidden_size")
            if not self.reparameterize:
                raise MethodConfigError(
                    "encoder_hidden_size sizes the reparameterisation MLP; set reparameterize=true "
                    "or leave encoder_hidden_size null"
                )


@dataclass(frozen=True)
class StackLayout:
    """Where one attention stack's prefixes live in the flat ``P x W`` prefix tensor.

    Attributes:
        name: qualified module name of the stack (``""`` for the model itself).
        num_layers: attention layers in the stack.
        kv_heads: key/value heads per layer.
        head_dim: width of one head.
        offset: first column of this stack in the flat tensor.
    """

    name: str
    num_layers: int
    kv_heads: int
    head_dim: int
    offset: int

    @property
    def width(self) -> int:
        """Columns this stack takes: ``num_layers * 2 * kv_heads * head_dim``."""
        return self.num_layers * 2 * self.kv_heads * self.head_dim


class PrefixEncoder(nn.Module):
    """Holds the trainable prefix and produces it as one ``P x W`` tensor.

    Args:
        num_virtual_tokens: ``P``.
        layouts: the stacks served, in column order.
        embedding_dim: ``E``, width of the reparameterisation embedding.
        encoder_hidden_size: hidden width of the MLP, or ``None`` for plain prefixes.
        factory: ``device``/``dtype`` of the new parameters.
    """

    def __init__(
        self,
        num_virtual_tokens: int,
        layouts: list[StackLayout],
        embedding_dim: int,
        encoder_hidden_size: int | None,
        factory: dict[str, Any],
    ) -> None:
        super().__init__()
        self.num_virtual_tokens = num_virtual_tokens
        self.layouts = layouts
        width = sum(layout.width for layout in layouts)
        if encoder_hidden_size is None:
            # Same initial distribution as an nn.Embedding (standard normal), as in peft.
            self.prefix = nn.Parameter(torch.randn(num_virtual_tokens, width, **factory))
        else:
            self.embedding = nn.Parameter(torch.randn(num_virtual_tokens, embedding_dim, **factory))
            self.mlp = nn.Sequential(
                nn.Linear(embedding_dim, encoder_hidden_size, **factory),
                nn.Tanh(),
                nn.Linear(encoder_hidden_size, width, **factory),
            )

    @property
    def reparameterized(self) -> bool:
        return hasattr(self, "mlp")

    def forward(self) -> torch.Tensor:
        """Returns: the prefix, ``(P, W)``."""
        return self.mlp(self.embedding) if self.reparameterized else self.prefix

    def key_values(self, layout: StackLayout, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One stack's prefix keys and values.

        Args:
            layout: the stack.
            batch_size: ``B``.

        Returns:
            per layer, ``(key, value)``, each ``(B, kv_heads, P, head_dim)`` (expanded, not copied).
        """
        flat = self()[:, layout.offset : layout.offset + layout.width]
        p = self.num_virtual_tokens
        # (P, layers, 2, heads, head_dim) -> (layers, 2, heads, P, head_dim)
        per_layer = flat.reshape(p, layout.num_layers, 2, layout.kv_heads, layout.head_dim).permute(
            1, 2, 3, 0, 4
        )
        shape = (batch_size, layout.kv_heads, p, layout.head_dim)
        return [(kv[0].expand(shape), kv[1].expand(shape)) for kv in per_layer]

    @torch.no_grad()
    def flatten(self) -> None:
        """Replaces the embedding and MLP by their output, stored as the plain ``prefix``."""
        if not self.reparameterized:
            return
        value = self().detach().clone()
        trainable = self.embedding.requires_grad
        del self.mlp
        del self.embedding
        self.prefix = nn.Parameter(value, requires_grad=trainable)

    def extra_repr(self) -> str:
        stacks = ", ".join(
            f"{s.name or 'model'}: {s.num_layers}x{s.kv_heads}x{s.head_dim}" for s in self.layouts
        )
        return f"P={self.num_virtual_tokens}, reparameterized={self.reparameterized}, stacks=[{stacks}]"


def _geometry(config: Any, decoder_of_encoder_decoder: bool) -> tuple[int, int, int]:
    """``(num_layers, kv_heads, head_dim)`` of a stack, read from a transformers config."""
    try:
        layers = config.num_hidden_layers
        if decoder_of_encoder_decoder:
            layers = getattr(config, "num_decoder_layers", None) or layers
        heads = config.num_attention_heads
    except AttributeError as err:
        raise MethodConfigError(
            f"prefix tuning reads the number of layers and heads from model.config; {err}"
        ) from None
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = (
        getattr(config, "head_dim", None) or getattr(config, "d_kv", None) or config.hidden_size // heads
    )
    return int(layers), int(kv_heads), int(head_dim)


def _gradient_checkpointing_on(module: nn.Module) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) is True for m in module.modules())


class _StackHook:
    """Forward pre-hook of one stack: extends the mask and supplies the prefix cache.

    A plain object (not a closure) so that ``copy.deepcopy`` of the model gives the copy hooks that
    point at the copy's prefix encoder.

    Args:
        encoder: the model's :class:`PrefixEncoder`.
        index: which of ``encoder.layouts`` this stack is.
        stack: the stack module (for its signature and checkpointing state).
        mode: ``"stack"`` passes the cache to the stack; ``"layers"`` leaves it to :class:`_LayerHook`.
        needs_mask: the stack builds its mask without looking at the cache (encoders), so a missing
            mask is replaced by ones to tell it the key length.
        cross_attention: the stack's cache must be an ``EncoderDecoderCache`` (encoder-decoder decoder).
    """

    def __init__(
        self,
        encoder: PrefixEncoder,
        index: int,
        stack: nn.Module,
        mode: str,
        needs_mask: bool,
        cross_attention: bool,
    ) -> None:
        self.encoder = encoder
        self.index = index
        self.positional = positional_names(stack)
        self.mode = mode
        self.needs_mask = needs_mask
        self.cross_attention = cross_attention
        self.active_cache: Any = None

    def _fresh_cache(self, batch_size: int) -> Any:
        from transformers import DynamicCache, EncoderDecoderCache

        cache = DynamicCache(self.encoder.key_values(self.encoder.layouts[self.index], batch_size))
        return EncoderDecoderCache(cache, DynamicCache()) if self.cross_attention else cache

    def _fill(self, cache: Any, batch_size: int) -> None:
        target = getattr(cache, "self_attention_cache", cache)
        for layer_idx, (key, value) in enumerate(
            self.encoder.key_values(self.encoder.layouts[self.index], batch_size)
        ):
            target.update(key, value, layer_idx)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if module.training and torch.is_grad_enabled() and _gradient_checkpointing_on(module):
            raise RuntimeError(
                "prefix tuning feeds its prefixes through the attention cache, which transformers drops "
                "under gradient checkpointing; disable gradient checkpointing to train prefixes"
            )
        kwargs = call_kwargs(module, self.positional, args, kwargs)
        inputs = kwargs.get("input_ids")
        if inputs is None:
            inputs = kwargs.get("inputs_embeds")
        if inputs is None:
            raise ValueError("prefix tuning needs input_ids or inputs_embeds to size the prefix batch")
        batch_size, seq_len, device = inputs.shape[0], inputs.shape[1], inputs.device
        p = self.encoder.num_virtual_tokens

        if self.mode == "layers":
            self.active_cache = self._fresh_cache(batch_size)
        else:
            cache = kwargs.get("cache")
            if cache is None:
                kwargs["cache"] = self._fresh_cache(batch_size)
            elif cache.get_seq_length() == 0:
                self._fill(cache, batch_size)
            # else: a cache returned by an earlier call, which starts with the prefix already

        mask = kwargs.get("attention_mask")
        if mask is None and self.needs_mask:
            mask = torch.ones(batch_size, seq_len, dtype=torch.long, device=device)
        if mask is not None:
            kwargs["attention_mask"] = prepend_ones(mask, p, "prefix tuning")
        return (), kwargs

    def clear(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self.active_cache = None


class _LayerHook:
    """Pre-hook of one block of a stack that discards its cache: hands the block the stack's cache."""

    def __init__(self, stack_hook: _StackHook) -> None:
        self.stack_hook = stack_hook

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if self.stack_hook.active_cache is not None:
            kwargs = {**kwargs, "cache": self.stack_hook.active_cache}
        return args, kwargs


class _UnshiftPositions:
    """Pre-hook on an encoder's embeddings: positions are counted without the ``P`` prefix slots."""

    def __init__(self, num_virtual_tokens: int) -> None:
        self.num_virtual_tokens = num_virtual_tokens

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        cache_length = kwargs.get("cache_length", 0)
        if isinstance(cache_length, int) and cache_length >= self.num_virtual_tokens:
            kwargs = {**kwargs, "cache_length": cache_length - self.num_virtual_tokens}
        return args, kwargs


@dataclass
class _Stack:
    name: str
    module: nn.Module
    config: Any
    decoder_of_encoder_decoder: bool
    mode: str
    needs_mask: bool
    cross_attention: bool


def _stacks(model: nn.Module) -> list[_Stack]:
    """The attention stacks of ``model`` that receive prefixes (see the module docstring)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "num_attention_heads"):
        raise MethodConfigError(
            f"prefix tuning needs a transformers model with a config; {type(model).__name__} has none"
        )
    base = getattr(model, "base_model", model)
    names = {id(m): n for n, m in model.named_modules()}
    if getattr(config, "is_encoder_decoder", False):
        encoder, decoder = base.get_encoder(), base.get_decoder()
        if encoder is None or decoder is None or encoder is base or decoder is base:
            raise MethodConfigError(
                f"could not find the encoder and decoder stacks of {type(model).__name__}"
            )
        return [
            _Stack(
                names[id(encoder)], encoder, config, False, "layers", needs_mask=True, cross_attention=False
            ),
            _Stack(
                names[id(decoder)], decoder, config, True, "stack", needs_mask=False, cross_attention=True
            ),
        ]
    is_encoder = not getattr(config, "is_decoder", False) and hasattr(base, "embeddings")
    return [
        _Stack(names[id(base)], base, config, False, "stack", needs_mask=is_encoder, cross_attention=False)
    ]


def _layer_list(stack: nn.Module, num_layers: int) -> nn.ModuleList:
    lists = [c for c in stack.children() if isinstance(c, nn.ModuleList) and len(c) == num_layers]
    if len(lists) != 1:
        raise MethodConfigError(
            f"expected one list of {num_layers} blocks in {type(stack).__name__}, found {len(lists)}"
        )
    return lists[0]


def apply(model: nn.Module, config: PrefixConfig) -> nn.Module:
    """Adds ``model.prefix_encoder`` and the hooks that feed it to every attention layer; freezes the rest.

    Args:
        model: a transformers model (BERT, RoBERTa, GPT-2, Llama, T5 families and look-alikes).
        config: the prefix tuning settings.

    Returns:
        ``model`` itself, called exactly as before.
    """
    if isinstance(getattr(model, "prefix_encoder", None), PrefixEncoder):
        raise MethodConfigError("prefix tuning is already applied to this model")
    stacks = _stacks(model)
    for stack in stacks:
        if not accepts(stack.module, "cache") or not accepts(stack.module, "attention_mask"):
            raise MethodConfigError(
                f"{type(stack.module).__name__}.forward takes no `cache`/`attention_mask`; prefix tuning "
                "needs a transformers 5 model whose attention reads a Cache"
            )
    layouts, offset = [], 0
    for stack in stacks:
        layers, kv_heads, head_dim = _geometry(stack.config, stack.decoder_of_encoder_decoder)
        layouts.append(StackLayout(stack.name, layers, kv_heads, head_dim, offset))
        offset += layouts[-1].width
    param = next(model.parameters())
    embedding_dim = layouts[0].kv_heads * layouts[0].head_dim
    hidden = (config.encoder_hidden_size or embedding_dim) if config.reparameterize else None

    freeze_all(model)
    encoder = PrefixEncoder(
        config.num_virtual_tokens,
        layouts,
        embedding_dim,
        hidden,
        {"device": param.device, "dtype": param.dtype},
    )
    model.prefix_encoder = encoder
    for index, stack in enumerate(stacks):
        hook = _StackHook(encoder, index, stack.module, stack.mode, stack.needs_mask, stack.cross_attention)
        stack.module.register_forward_pre_hook(hook, with_kwargs=True)
        if stack.mode == "layers":
            stack.module.register_forward_hook(hook.clear, with_kwargs=True, always_call=True)
            for block in _layer_list(stack.module, layouts[index].num_layers):
                block.register_forward_pre_hook(_LayerHook(hook), with_kwargs=True)
        embeddings = getattr(stack.module, "embeddings", None)
        if stack.needs_mask and embeddings is not None and accepts(embeddings, "cache_length"):
            embeddings.register_forward_pre_hook(
                _UnshiftPositions(config.num_virtual_tokens), with_kwargs=True
            )
    return model


def flatten_prefix(model: nn.Module) -> nn.Module:
    """Folds the reparameterisation MLP into plain prefixes, in place (no-op without it).

    The MLP's output is computed once and stored as ``prefix_encoder.prefix`` (``P x W``); the
    embedding and MLP are dropped. The outputs of the model are unchanged, and its prefix state
    then loads into a model prefix-tuned with ``reparameterize=False``.

    Args:
        model: a model returned by :func:`apply`.

    Returns:
        ``model``, now holding a plain ``P x W`` prefix.
    """
    encoder = getattr(model, "prefix_encoder", None)
    if not isinstance(encoder, PrefixEncoder):
        raise MethodConfigError("flatten_prefix: the model has no prefix tuning applied")
    encoder.flatten()
    return model


def prefix_key_values(
    model: nn.Module, batch_size: int = 1
) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The prefix keys and values each stack receives, keyed by stack name.

    Args:
        model: a model returned by :func:`apply`.
        batch_size: ``B``, the batch the keys and values are expanded to.

    Returns:
        stack name -> per layer ``(key, value)``, each ``(batch_size, kv_heads, P, head_dim)``.
    """
    encoder = getattr(model, "prefix_encoder", None)
    if not isinstance(encoder, PrefixEncoder):
        raise MethodConfigError("prefix_key_values: the model has no prefix tuning applied")
    return {layout.name: encoder.key_values(layout, batch_size) for layout in encoder.layouts}


SPEC = MethodSpec(
    name="prefix",
    config_cls=PrefixConfig,
    apply=apply,
    param_prefix="prefix_",
    description="prefix tuning (Li and Liang 2021): trainable key/value prefixes in every attention layer",
)
