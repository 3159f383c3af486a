"""What makes a run fast and says where its time went: stage timing, ``torch.compile``, autocast.

Knows no method: it times blocks, compiles a ``torch.nn.Module`` and picks an autocast dtype.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

import torch
from torch import nn

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class StageTimer:
    """Wall seconds of each stage of a run, in the order the stages ran.

    A stage entered twice (evaluation at the start and at the end) adds up. Use as
    ``with stages("train"): ...``; :meth:`as_json` is the record's ``stage_times_s`` cell.
    """

    def __init__(self, clock=time.perf_counter) -> None:
        self.clock = clock
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = self.clock()
        try:
            yield
        finally:  # a failed stage still tells how long it ran
            self.seconds[name] = self.seconds.get(name, 0.0) + self.clock() - started

    def as_json(self) -> str:
        return json.dumps({k: round(v, 4) for k, v in self.seconds.items()}) if self.seconds else ""


def used_precision(requested: str, device: torch.device) -> str:
    """The precision training runs in: ``requested`` where the device supports its autocast, else fp32.

    bf16 autocasts on CUDA devices that support bf16 and on CPUs (torch's CPU autocast); fp16
    autocasts (with gradient scaling) on CUDA only.
    """
    if requested == "bf16":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if torch.amp.is_autocast_available(device.type) else "fp32"
    if requested == "fp16":
        return "fp16" if device.type == "cuda" else "fp32"
    return "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a precision :func:`used_precision` returned (a no-op for fp32)."""
    dtype = AMP_DTYPES.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def compile_model(model: nn.Module, backend: str, mode: str) -> nn.Module:
    """Compiles ``model`` in place (``nn.Module.compile``): the same object, so its parameter names,
    ``train()``/``eval()``, merging and saving stay as they are; the compiled forward is used by
    training, evaluation and the latency measurement alike. Compilation happens lazily, on the
    first calls (and again for new shapes); :func:`compile_seconds` measures it."""
    model.compile(backend=backend, mode=None if mode == "default" else mode)
    return model


def compile_seconds() -> float:
    """Seconds this process has spent compiling so far: TorchDynamo's frame compiles (which include
    AOTAutograd and the backend's forward compile) plus the lazily compiled backward graphs."""
    from torch._dynamo.utils import calculate_time_spent

    return float(calculate_time_spent().get("total_wall_time", 0.0))
