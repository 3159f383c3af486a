"""PEFT methods, one module each, usable without the peftbench harness.

    from . import get_method
    spec = get_method("lora")
    model = spec.apply(model, spec.config_cls(r=8))

A new method is one module here with a config dataclass, ``apply`` and a ``SPEC``, registered
below, plus ``conf/method/<name>.yaml`` for the harness.
"""

from . import adapters, bitfit, dora, full, ia3, lora, peft_bridge, prefix, prompt, qlora, vera
from .base import MethodConfigError, MethodSpec, get_method, method_names, register

# One line per built-in method, in the order listings show them.
register(full.SPEC)
register(lora.SPEC)
register(adapters.HOULSBY_SPEC)
register(adapters.PFEIFFER_SPEC)
register(ia3.SPEC)
register(prefix.SPEC)
register(prompt.SPEC)
register(vera.SPEC)
register(bitfit.SPEC)
register(qlora.SPEC)
register(dora.SPEC)
register(peft_bridge.SPEC)  # method=peft: any Hugging Face peft method (peft imported lazily)

__all__ = ["MethodConfigError", "MethodSpec", "get_method", "method_names", "register"]
