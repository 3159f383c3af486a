"""Full fine-tuning: every parameter of the model is trained."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .base import MethodSpec


@dataclass
class FullConfig:
    """Full fine-tuning has no settings of its own; the learning rate belongs to the training run."""


def apply(model: nn.Module, config: FullConfig) -> nn.Module:
    """Makes every parameter of ``model`` trainable."""
    for param in model.parameters():
        param.requires_grad_(True)
    return model


SPEC = MethodSpec(
    name="full",
    config_cls=FullConfig,
    apply=apply,
    param_prefix=None,
    description="full fine-tuning: all parameters trainable",
)
