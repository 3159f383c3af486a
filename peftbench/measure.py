"""Measurements that know nothing of methods: memory by the device, time by synchronized clocks."""

from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import dataclass

import psutil
import torch
from torch import nn

CLEAR_REFS = "/proc/self/clear_refs"


def synchronize(device: torch.device) -> None:
    """Waits for queued device work, so a clock read after it covers that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def read_peak_rss_bytes() -> int | None:
    """The process's peak resident size since the last reset (Linux ``VmHWM``), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class MemoryPeak:
    """Peak memory of one run.

    Attributes:
        peak_rss_bytes: the process's peak resident size during the run.
        peak_gpu_mem_bytes: ``torch.cuda.max_memory_allocated`` during the run (None on CPU).
        peak_gpu_reserved_bytes: ``torch.cuda.max_memory_reserved`` during the run (None on CPU).
    """

    peak_rss_bytes: int
    peak_gpu_mem_bytes: int | None = None
    peak_gpu_reserved_bytes: int | None = None


class MemoryMeter:
    """Peak memory of the run alone, even when several runs share one process.

    On CPU the kernel's peak-RSS counter is reset at the start (writing 5 to ``/proc/self/clear_refs``)
    so an earlier run's peak is not charged to this one; where that is not possible, a thread samples
    the resident size every ``interval_s``. On CUDA the allocator's peak statistics are reset.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.005) -> None:
        self.device = device
        self.interval_s = interval_s
        self._sampled_peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kernel_peak = False

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            held = torch.cuda.memory_allocated(self.device)
            if held:
                raise RuntimeError(
                    f"{held} bytes are already allocated on {self.device} before the run started "
                    "(a model left over from an earlier run?); the run's peak would include them"
                )
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            with open(CLEAR_REFS, "w") as f:
                f.write("5")
            self._kernel_peak = read_peak_rss_bytes() is not None
        except OSError:
            self._kernel_peak = False
        if not self._kernel_peak:
            self._sampled_peak = psutil.Process().memory_info().rss
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def restart_peak(self) -> None:
        """Starts the peak again from what is held now: what came before (loading the pretrained
        model, which the first run of a process does from disk and later ones from the cache, and
        the forgetting probe's pass over it, which only the first run makes) is left out of every
        run alike, while what is still held (the model) stays in."""
        gc.collect()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        if self._kernel_peak:
            try:
                with open(CLEAR_REFS, "w") as f:
                    f.write("5")
            except OSError:  # it worked at the start; if not now, the peak keeps what came before
                pass
        else:
            self._sampled_peak = psutil.Process().memory_info().rss

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(self.interval_s):
            self._sampled_peak = max(self._sampled_peak, process.memory_info().rss)

    def stop(self) -> MemoryPeak:
        synchronize(self.device)
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        rss = read_peak_rss_bytes() if self._kernel_peak else self._sampled_peak
        peak = MemoryPeak(peak_rss_bytes=int(rss or 0))
        if self.device.type == "cuda":
            peak.peak_gpu_mem_bytes = torch.cuda.max_memory_allocated(self.device)
            peak.peak_gpu_reserved_bytes = torch.cuda.max_memory_reserved(self.device)
        return peak


def parameter_numel(param: torch.Tensor) -> int:
    """The elements a parameter stands for: its ``numel``, or for a quantized weight that carries a
    ``quant_state`` with the original ``shape`` (bitsandbytes' ``Params4bit``: two 4-bit values per
    stored byte), the elements of that shape."""
    shape = getattr(getattr(param, "quant_state", None), "shape", None)
    return int(torch.Size(shape).numel()) if shape is not None else param.numel()


def model_weight_bytes(model: nn.Module) -> int:
    """Bytes of all the model's parameters and buffers as stored, each storage counted once.

    A quantized weight counts at its real size: its stored (packed) data plus every tensor reachable
    from its ``quant_state`` attribute (bitsandbytes keeps the blockwise absmax, the nested absmax of
    double quantization and the code tables there).
    """
    seen: set[tuple[str, int]] = set()
    total = 0

    def count(tensor: torch.Tensor) -> None:
        nonlocal total
        storage = tensor.untyped_storage()
        key = (str(tensor.device), storage.data_ptr())
        if storage.data_ptr() != 0 and key in seen:
            return
        seen.add(key)
        total += storage.nbytes()

    for tensor in (*model.parameters(), *model.buffers()):
        count(tensor)
        for extra in _tensors_in(getattr(tensor, "quant_state", None)):
            count(extra)
    return total


def _tensors_in(obj, depth: int = 0):
    """The tensors reachable from ``obj`` through attributes, dicts, lists and tuples (not modules)."""
    if obj is None or depth > 4 or isinstance(obj, nn.Module):
        return
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors_in(value, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors_in(value, depth + 1)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        for value in vars(obj).values():
            yield from _tensors_in(value, depth + 1)


def release_device_memory(device: torch.device) -> None:
    """Frees what the finished run left, so the next run in this process starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class ThroughputMeter:
    """Samples/s and tokens/s over the steps after a warm-up, with the device synchronized at the
    edges of the timed window (never inside it).

    Call :meth:`step_done` after every optimizer step with that step's sample and token counts.
    ``excluded_clock`` (seconds so far of work that is not training, such as ``torch.compile``'s
    recompiles) is read at the window's edges and what it grew by inside the window is left out. In a
    run on several processes ``barrier`` (``torch.distributed.barrier``) is called at each edge of
    the window too, so every rank times the same interval.
    """

    def __init__(self, device: torch.device, warmup_steps: int, clock=time.perf_counter,
                 excluded_clock=None, barrier=None) -> None:
        self.device = device
        self.barrier = barrier
        self.warmup_steps = warmup_steps
        self.clock = clock
        self.excluded_clock = excluded_clock
        self._excluded0 = 0.0
        self.steps = self.samples = self.tokens = 0
        self.timed_steps = 0
        self._t0: float | None = None
        self._paused = False
        self.elapsed_s = 0.0

    def step_done(self, samples: int, tokens: int) -> None:
        self.steps += 1
        if self.steps == self.warmup_steps:
            self._start_window()
        elif self.steps > self.warmup_steps:
            if self._t0 is None and not self._paused:
                raise RuntimeError("ThroughputMeter.begin() must be called before the first step")
            self.samples += samples
            self.tokens += tokens
            self.timed_steps += 1

    def begin(self) -> None:
        """Marks the start of training (opens the window at once when there is no warm-up)."""
        if self.warmup_steps == 0:
            self._start_window()

    def _start_window(self) -> None:
        synchronize(self.device)
        if self.barrier is not None:
            self.barrier()
        self._t0 = self.clock()
        if self.excluded_clock is not None:
            self._excluded0 = self.excluded_clock()

    def _window_s(self) -> float:
        excluded = self.excluded_clock() - self._excluded0 if self.excluded_clock is not None else 0.0
        return self.clock() - self._t0 - excluded

    def pause(self) -> None:
        """Stops the clock (for an evaluation inside training); :meth:`resume` restarts it."""
        if self._t0 is not None:
            synchronize(self.device)
            self.elapsed_s += self._window_s()
            self._t0 = None
            self._paused = True

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._start_window()

    def end(self) -> None:
        synchronize(self.device)
        if self.barrier is not None:
            self.barrier()
        if self._t0 is not None and self.timed_steps:
            self.elapsed_s += self._window_s()
            self._t0 = None

    def samples_per_s_so_far(self) -> float | None:
        """For progress display only: reads the clock without synchronizing the device."""
        if self._t0 is None or not self.timed_steps:
            return None
        return self.samples / max(self.elapsed_s + self.clock() - self._t0, 1e-9)

    def tokens_per_s_so_far(self) -> float | None:
        """For live logging only: reads the clock without synchronizing the device."""
        if self._t0 is None or not self.timed_steps:
            return None
        return self.tokens / max(self.elapsed_s + self.clock() - self._t0, 1e-9)

    @property
    def samples_per_s(self) -> float | None:
        return self.samples / self.elapsed_s if self.elapsed_s > 0 else None

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.elapsed_s if self.elapsed_s > 0 else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def matmul_parameters(model: nn.Module) -> tuple[int, int]:
    """``(all, trainable)`` elements of the parameters that act as matrix-multiply weights.

    That is every parameter with two or more dimensions except embedding tables (a lookup, not a
    matmul), unless another module also multiplies by the table (a tied ``lm_head``); vectors (biases, norms, IA3 scales) cost O(1) per element and are left out, as in the
    usual 6N estimate. Shared tensors count once; a quantized weight counts the elements it stands
    for (:func:`parameter_numel`). A module that multiplies by frozen matrices it does not own as
    parameters (VeRA's shared random ``A`` and ``B``, used by every layer) says how many elements
    one token goes through in an ``extra_matmul_elements()`` method; they count as frozen weights.
    """
    lookups = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    lookups -= {id(w) for m in model.modules() if not isinstance(m, nn.Embedding)
                if (w := m._parameters.get("weight")) is not None}  # tied output embeddings
    # A prompt's positions are inputs (what :func:`prepended_positions` counts), not weights.
    lookups |= {id(p) for m in model.modules() if hasattr(m, "extra_positions_per_sample") for p in m.parameters()}
    total = trainable = 0
    for param in model.parameters():
        if param.dim() >= 2 and id(param) not in lookups:
            total += parameter_numel(param)
            trainable += param.numel() if param.requires_grad else 0
    for module in model.modules():
        extra = getattr(module, "extra_matmul_elements", None)
        if callable(extra):
            total += int(extra())
    return total, trainable


def train_flops_per_token(model: nn.Module) -> int:
    """Model FLOPs of one training token: forward ``2N``, input-gradient backward ``2N``, and weight
    gradients ``2N_trainable`` only for the weights that train.

    Full fine-tuning gives the usual ``6N``; a frozen base with a small method gives about ``4N``.
    Attention-score FLOPs (which grow with sequence length) are not included, as in the 6N rule.
    """
    total, trainable = matmul_parameters(model)
    return 4 * total + 2 * trainable


def prepended_positions(model: nn.Module) -> int:
    """Positions a method prepends to every sample (prompt tuning's virtual tokens): modules say so
    with an ``extra_positions_per_sample`` attribute. Each goes through the model like a token."""
    return sum(int(getattr(m, "extra_positions_per_sample", 0) or 0) for m in model.modules())


# Dense peak FLOP/s per precision of GPUs we can name, from their vendors' data sheets. Order
# matters: the first name found in the device name wins.
PEAK_FLOPS = (
    ("H100 PCIe", {"bf16": 756e12, "fp16": 756e12, "fp32": 51e12}),
    ("H200", {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12}),
    ("H100", {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12}),
    ("A100", {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12}),
    ("L40S", {"bf16": 362e12, "fp16": 362e12, "fp32": 91.6e12}),
    ("L4", {"bf16": 121e12, "fp16": 121e12, "fp32": 30.3e12}),
    ("V100", {"fp16": 125e12, "fp32": 15.7e12}),
    ("RTX 4090", {"bf16": 165e12, "fp16": 165e12, "fp32": 82.6e12}),
)


def peak_flops(device_name: str, precision: str) -> float | None:
    """The device's peak dense FLOP/s at ``precision``, or None for an unknown device (and CPUs)."""
    for name, peaks in PEAK_FLOPS:
        if name in device_name:
            return peaks.get(precision)
    return None
