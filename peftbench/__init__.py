"""peftbench: compare parameter-efficient fine-tuning methods with numbers a reviewer can trust.

    from peftbench import apply_method, count_parameters
    model = apply_method(model, "lora", rank=8)
    trainable, total = count_parameters(model)

The names are loaded lazily so that ``peftbench.report`` stays free of torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["apply_method", "count_parameters", "merge_method", "unmerge_method"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from peftbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'peftbench' has no attribute {name!r}")
