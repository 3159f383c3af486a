"""BitFit: train only the bias terms of the model (Ben Zaken, Ravfogel and Goldberg 2022).

Ben Zaken et al. (2022, "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked
Language-models", section 3.1, eq. 1-5) freeze every weight ``W`` and normalisation gain ``g`` of
BERT and train only the additive bias terms ``b``: the query, key and value biases
``b_q, b_k, b_v``, the MLP biases ``b_m1, b_m2, b_m3`` and the layer-norm biases ``b_LN1, b_LN2`` of
every layer (plus the task's classifier). So ``biases="all"`` (every bias, normalisation layers'
included) is the default: it is the paper's equations and the authors' code (benzakenelad/BitFit,
``run_glue.py --bias-terms all``, which selects every parameter whose name contains ``bias``, the
pooler's and the embeddings' layer norm included). ``biases="no_norm"`` leaves the normalisation
layers' biases frozen and trains the other modules' biases only.

BitFit adds no module and no parameter: it only chooses which of the model's own parameters train.
Its parameter "prefix" is therefore the attribute name ``bias`` itself, which counting, saving and the
"only these parameters changed" test key off. With ``biases="no_norm"`` the saved method state still
holds the (frozen) normalisation biases, since they carry the same name.

Count on bert-base (``BertForSequenceClassification(BertConfig(), num_labels=2)``, random weights, no
download): 102,914 trainable biases with ``all`` (0.094% of its 109,483,778 parameters; the same
rule on BERT-large, the model of the paper's GLUE table, gives 272,386 or 0.081%, the paper's 0.08%), 83,714 with ``no_norm``; the harness also trains the
classifier's 1,536 weights, 104,450 in all (``tests/test_bitfit.py`` recounts these).

Merging is not needed: the trained biases are the model's own, so inference costs nothing extra.
Models without biases outside their task head (Llama's linears and RMSNorm, T5's linears and layer
norm) are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .base import MethodConfigError, MethodSpec, freeze_all
from .targets import head_names

BIASES = ("all", "no_norm")


@dataclass
class BitFitConfig:
    """Settings of BitFit.

    Attributes:
        biases: which bias terms train: ``all`` (the paper's choice, normalisation layers'
            included) or ``no_norm`` (every bias but those of normalisation layers).
    """

    biases: str = "all"

    def __post_init__(self) -> None:
        if self.biases not in BIASES:
            raise MethodConfigError(f"biases={self.biases!r} is not one of {', '.join(BIASES)}")


def is_norm(module: nn.Module) -> bool:
    """A normalisation layer: torch's LayerNorm, GroupNorm, batch/instance norms, or any class whose
    name ends in ``Norm`` (``T5LayerNorm``, ``LlamaRMSNorm``)."""
    norms = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.RMSNorm)
    return isinstance(module, norms) or type(module).__name__.endswith("Norm")


def bias_names(model: nn.Module, biases: str = "all") -> list[str]:
    """Qualified names of the bias parameters BitFit trains on ``model`` (a shared one once).

    A bias is a module's own parameter called ``bias`` (``query.bias``, ``LayerNorm.bias``); parameters
    merely named after biases (T5's ``relative_attention_bias.weight``) are not.
    """
    names, seen = [], set()
    for module_name, module in model.named_modules():
        bias = module._parameters.get("bias")
        if bias is None or id(bias) in seen or (biases == "no_norm" and is_norm(module)):
            continue
        seen.add(id(bias))
        names.append(f"{module_name}.bias" if module_name else "bias")
    return names


def apply(model: nn.Module, config: BitFitConfig) -> nn.Module:
    """Freezes ``model`` except the bias terms ``config.biases`` selects."""
    names = bias_names(model, config.biases)
    heads = [h for h in head_names(model) if hasattr(model, h)]
    if not [n for n in names if not any(n.startswith(f"{h}.") for h in heads)]:
        which = "bias terms" if config.biases == "all" else "bias terms outside normalisation layers"
        raise MethodConfigError(
            f"BitFit: {type(model).__name__} has no {which} outside its task head to train (Llama's and "
            "T5's linear and norm layers, for example, have no biases); use another method"
        )
    freeze_all(model)
    for name in names:
        model.get_parameter(name).requires_grad_(True)
    return model


SPEC = MethodSpec(
    name="bitfit",
    config_cls=BitFitConfig,
    apply=apply,
    param_prefix="bias",
    description="BitFit (Ben Zaken et al. 2022): only the bias terms train",
)
