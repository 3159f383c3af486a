"""QLoRA: LoRA trained on top of a frozen base whose linear layers are stored in 4 bits.

bitsandbytes (the library QLoRA's authors wrote for it) does the quantization and the 4-bit matmul;
it is imported only when QLoRA is used, so the rest of the package works without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .base import (
    MethodConfigError,
    MethodSpec,
    check_targets,
    is_linear,
    linear_dims,
    match_modules,
    refuse_reapply,
    replace_module,
    wrap_modules,
)
from .lora import LoraConfig, LoraLinear
from .targets import default_targets, head_names

QUANT_TYPES = ("nf4", "fp4")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
BLOCK_SIZE = 64  # weights per absmax block, the paper's (section 3, "Double Quantization")
INSTALL = '`pip install "peftbench[qlora]"` (or `pip install bitsandbytes`)'
NOT_MERGEABLE = (
    "QLoRA's base weights are stored in 4 bits, and W0 + s B A would have to be re-quantized to 4 bits, "
    "which rounds most of the low-rank update away; its inference latency is measured unmerged "
    "(to deploy a merged model, dequantize the base and merge in full precision)"
)


def bitsandbytes():
    """The ``bitsandbytes`` module, or a clear error saying how to install it."""
    try:
        import bitsandbytes
    except ImportError as err:
        raise MethodConfigError(
            f"method=qlora stores the frozen base in 4 bits with the bitsandbytes package, which is not "
            f"installed ({err}); install it with {INSTALL}"
        ) from None
    return bitsandbytes


@dataclass
class QLoraConfig(LoraConfig):
    """Settings of QLoRA: LoRA's (``rank``, ``alpha``, ``dropout``, ``target_modules``,
    ``use_rslora``) plus how the frozen base is stored.

    Attributes:
        quant_type: the 4-bit data type: ``nf4`` (4-bit NormalFloat, the paper's) or ``fp4``.
        double_quant: also quantize the per-block absmax constants (8-bit, blocks of 256), as the paper.
        compute_dtype: the dtype the 4-bit weights are dequantized to for the matmul (``float32``,
            ``bfloat16``, ``float16``); ``None``: each layer's original dtype (the model's).
        quantize_modules: the linear layers stored in 4 bits: module names (each matching a module
            named so or ending in ``.<name>``) or one regular expression over full module names;
            ``None``: every linear layer of the model except its task heads (``heads`` in
            ``methods/targets.yaml``), its output embedding, layers tied to an embedding and those a
            transformers model keeps in float32 (``_keep_in_fp32_modules``: T5's ``wo``). Every LoRA
            target must be among them.
    """

    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str | None = None
    quantize_modules: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.quant_type not in QUANT_TYPES:
            raise MethodConfigError(
                f"quant_type={self.quant_type!r} is not a 4-bit type QLoRA can store weights in; use one "
                f"of: {', '.join(QUANT_TYPES)} (nf4: 4-bit NormalFloat, the paper's)"
            )
        if not isinstance(self.double_quant, bool):
            raise MethodConfigError(f"double_quant must be true or false, got {self.double_quant!r}")
        if self.compute_dtype is not None and self.compute_dtype not in COMPUTE_DTYPES:
            raise MethodConfigError(
                f"compute_dtype={self.compute_dtype!r} is not one of: {', '.join(COMPUTE_DTYPES)} "
                "(or null for the model's dtype)"
            )
        self.quantize_modules = check_targets(self.quantize_modules, "quantize_modules")
        bitsandbytes()


def quantize_linear(base: nn.Module, config: QLoraConfig) -> nn.Module:
    """A bitsandbytes ``Linear4bit`` holding ``base``'s weight in 4 bits and its bias as it is.

    The weight (``out x in``; a GPT-2 ``Conv1D``'s is transposed first) is quantized on the device it
    is on, in blocks of :data:`BLOCK_SIZE`; a layer that is already a ``Linear4bit`` is returned as is.
    """
    bnb = bitsandbytes()
    if isinstance(base, bnb.nn.Linear4bit):
        if getattr(base.weight, "quant_state", None) is None:
            base.weight = base.weight.to(base.weight.device)  # bitsandbytes quantizes on the first move
        return no_cpu_repacking(base)
    fan_in_fan_out, in_features, out_features = linear_dims(base)
    weight = (base.weight.T if fan_in_fan_out else base.weight).detach().contiguous()
    compute_dtype = getattr(torch, config.compute_dtype) if config.compute_dtype else weight.dtype
    layer = bnb.nn.Linear4bit(in_features, out_features, bias=False, compute_dtype=compute_dtype,
                              compress_statistics=config.double_quant, quant_type=config.quant_type,
                              device="meta")
    layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, blocksize=BLOCK_SIZE,
                                     compress_statistics=config.double_quant, quant_type=config.quant_type,
                                     module=layer).to(weight.device)
    layer.bias = base.bias
    return no_cpu_repacking(layer)


def no_cpu_repacking(layer: nn.Module) -> nn.Module:
    """Turns off bitsandbytes' inference repacking on CPUs with AVX-512 BF16 (``Linear4bit.forward``,
    bitsandbytes 0.50): a forward without gradients in eval mode rewrites the weight in place into a
    CPU-only layout with bf16 block constants, whose matmul then has no autograd kernel. Measured on
    such a CPU: the evaluation's output differed from training's by 0.3%, and a training step after
    an evaluation (``train.eval_every``, ``train.eval_at_start``) gave the layer's input no gradient,
    so the adapters below it stopped learning; layers narrower than a block (tiny test models)
    failed outright. Every forward dequantizes to the compute dtype instead, as during training."""
    if hasattr(layer, "support_avx512bf16_for_cpu"):
        layer.support_avx512bf16_for_cpu = False
    return layer


class QLoraLinear(LoraLinear):
    """LoRA on a 4-bit frozen linear layer (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of
    Quantized LLMs", eq. 5).

    ``Y = X doubleDequant(c1, c2, W^NF4) + s X L1 L2``: the base weight ``W`` is stored in 4-bit
    NormalFloat (or FP4) in blocks of 64 with one absmax constant ``c2`` per block, itself quantized to
    8 bits in blocks of 256 with constants ``c1`` (double quantization, eq. 6); it is dequantized to
    the compute dtype for each matmul and never receives a gradient. ``L1 L2`` is LoRA's ``A^T B^T``,
    with LoRA's init (Kaiming-uniform ``A``, zero ``B``) and scaling ``s``, kept in the model's dtype.

    Parameters (prefix ``qlora_``): ``qlora_A`` (``r x in``), ``qlora_B`` (``out x r``); ``weight`` is
    bitsandbytes' packed ``Params4bit`` (with its ``quant_state``), ``bias`` the full-precision bias.
    It cannot be merged (:data:`NOT_MERGEABLE`).

    Args:
        base: an ``nn.Linear`` or GPT-2 ``Conv1D`` (quantized here), or a bitsandbytes ``Linear4bit``.
        config: the QLoRA settings.
    """

    prefix = "qlora_"

    def __init__(self, base: nn.Module, config: QLoraConfig) -> None:
        quantized = quantize_linear(base, config)
        super().__init__(quantized, config)
        self.compute_dtype = quantized.compute_dtype or self.weight.quant_state.dtype

    @property
    def factory(self) -> dict[str, Any]:
        """LoRA's tensors take the device of the 4-bit weight and the dtype it was quantized from."""
        return {"device": self.weight.device, "dtype": self.weight.quant_state.dtype}

    def base_weight(self) -> torch.Tensor:
        """The dequantized base weight, ``out x in`` (a new tensor: the stored one is 4-bit)."""
        return bitsandbytes().functional.dequantize_4bit(self.weight.data, self.weight.quant_state)

    def base_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``dequant(W) x + b`` in the compute dtype. Args: x: ``(..., in)``. Returns: ``(..., out)``."""
        bias = self.bias
        if bias is not None and bias.dtype != self.compute_dtype:
            bias = bias.to(self.compute_dtype)
        out = bitsandbytes().matmul_4bit(x.to(self.compute_dtype), self.weight, quant_state=self.weight.quant_state,
                                         bias=bias)
        return out.to(x.dtype)

    def merge(self) -> None:
        raise MethodConfigError(f"QLoRA cannot be merged: {NOT_MERGEABLE}")

    def unmerge(self) -> None:
        raise MethodConfigError(f"QLoRA cannot be merged: {NOT_MERGEABLE}")

    def extra_repr(self) -> str:
        state = self.weight.quant_state
        return f"{super().extra_repr()}, {state.quant_type}, double_quant={state.nested}, compute={self.compute_dtype}"


def quantize_targets(model: nn.Module, config: QLoraConfig) -> list[str]:
    """Names of the linear layers ``config`` stores in 4 bits (see ``QLoraConfig.quantize_modules``)."""
    if config.quantize_modules is not None:
        return match_modules(model, config.quantize_modules, is_linear, key="quantize_modules")
    # Heads, and the modules a transformers model keeps in float32 for every quantization (T5's FFN
    # output `wo`, whose input it casts to `wo.weight.dtype`), stay in full precision.
    kept = [*head_names(model), *(getattr(model, "_keep_in_fp32_modules", None) or ())]
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    try:  # a transformers model's LM head (kept in full precision, as in the paper and peft's practice)
        output = model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        output = None
    return [
        name for name, module in model.named_modules()
        if name and is_linear(module) and module is not output and id(module.weight) not in embedded
        and not any(name == k or name.startswith(k + ".") or name.endswith("." + k) for k in kept)
    ]


def quantize_base(model: nn.Module, config: QLoraConfig, names: list[str] | None = None) -> nn.Module:
    """Replaces the named linear layers (default: :func:`quantize_targets`) by 4-bit ``Linear4bit``
    layers, in place, on the device each is on; returns ``model``. This is QLoRA's base model before
    LoRA is added (the parity tests give the same quantized base to peft)."""
    for name in quantize_targets(model, config) if names is None else names:
        replace_module(model, name, quantize_linear(model.get_submodule(name), config))
    return model


def apply(model: nn.Module, config: QLoraConfig) -> nn.Module:
    """Stores the chosen linear layers of ``model`` in 4 bits, wraps the LoRA targets among them in
    :class:`QLoraLinear` and freezes the rest. Quantization happens on the device the model is on."""
    bitsandbytes()
    refuse_reapply(model, QLoraLinear, "QLoRA")
    targets = config.target_modules if config.target_modules is not None else default_targets(model, "qlora")
    adapted = match_modules(model, targets, is_linear)
    quantized = quantize_targets(model, config)
    outside = sorted(set(adapted) - set(quantized))
    if outside:
        raise MethodConfigError(
            f"QLoRA adapts 4-bit layers, but quantize_modules={config.quantize_modules!r} leaves these "
            f"target_modules in full precision: {', '.join(outside[:5])}. Add them to quantize_modules "
            "(or leave it null), or use method=lora for a full-precision base."
        )
    quantize_base(model, config, quantized)
    return wrap_modules(model, adapted, lambda _, base: QLoraLinear(base, config))


SPEC = MethodSpec(
    name="qlora",
    config_cls=QLoraConfig,
    apply=apply,
    param_prefix="qlora_",
    description="QLoRA (Dettmers et al. 2023): LoRA on a frozen base whose linear layers are stored in 4 bits (NF4)",
    not_mergeable_because=NOT_MERGEABLE,
)
