"""One module per method, each defining ``CASE``: what the generic method table checks for it.

Adding a method's row to the table = adding ``tests/cases/<method>.py``; the table finds it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn


@dataclass
class MethodCase:
    """How the table exercises one method.

    Attributes:
        method: registered method name.
        families: tiny-model families (``tests.tiny_models.FAMILIES``) the method must work on.
        config: family -> keyword arguments of the method's config dataclass.
        expected_trainable: closed-form count of the method's trainable parameters, computed
            independently of the implementation from (base model, family, config kwargs).
        identity_at_init: the method promises the base model's output at init.
        init_atol: tolerance for that promise (exact methods use 0).
        lr: learning rate for the few optimizer steps of the table.
        xfail: family -> reason, for combinations known not to hold yet (shown in the test report).
        cannot_overfit: family -> reason, where only the overfitting check is known to fail (a strict
            xfail of that one test, so a change that makes it pass is reported too).
    """

    method: str
    families: list[str]
    config: Callable[[str], dict]
    expected_trainable: Callable[[nn.Module, str, dict], int]
    identity_at_init: bool = True
    init_atol: float = 0.0
    lr: float = 1e-2
    xfail: dict[str, str] = field(default_factory=dict)
    cannot_overfit: dict[str, str] = field(default_factory=dict)


def all_cases() -> list[MethodCase]:
    cases = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        cases.append(module.CASE)
    return sorted(cases, key=lambda c: c.method)
