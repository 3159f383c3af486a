"""How busy the machine was while a run trained: throughput is only meaningful on a quiet machine.

:class:`ContentionMeter` is started just before training and stopped just after it. It records:

- ``load_avg_1m_start``/``load_avg_1m_end``: the system's 1-minute load average (runnable threads,
  this run's own included) and ``cpu_count``, the cores this process may run on;
- ``cpu_util`` (CPU runs): this process's CPU time over ``wall time x torch threads`` while training.
  Near 1 when the run had its threads' cores to itself; well below 1 when other processes took them;
- ``gpu_other_mem_bytes`` (CUDA runs): device memory in use at the start that this process's
  allocator does not hold (other processes, plus this process's CUDA context, some hundreds of MiB),
  and ``gpu_util_pct``, the device's utilisation at the start, if ``pynvml`` is installed.

The report's rule for "measured under contention" is in ``docs/answers.md``.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import psutil
import torch


@dataclass
class Contention:
    """How busy the machine was during training (see the module doc); None where it does not apply."""

    load_avg_1m_start: float | None = None
    load_avg_1m_end: float | None = None
    cpu_count: int | None = None
    cpu_util: float | None = None
    gpu_other_mem_bytes: int | None = None
    gpu_util_pct: float | None = None


def load_avg_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_utilisation_pct(device: torch.device) -> float | None:
    """The device's utilisation now (all processes), through NVML if ``pynvml`` is installed."""
    with contextlib.suppress(Exception):
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        return float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    return None


class ContentionMeter:
    """Watches the machine from :meth:`start` to :meth:`stop` (the training loop).

    Args:
        device: the run's device.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.result = Contention()
        self._wall = self._cpu = 0.0

    def start(self) -> ContentionMeter:
        self.result = Contention(load_avg_1m_start=load_avg_1m(), cpu_count=usable_cpus())
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            self.result.gpu_other_mem_bytes = max(0, total - free - torch.cuda.memory_reserved(self.device))
            self.result.gpu_util_pct = gpu_utilisation_pct(self.device)
        times = psutil.Process().cpu_times()
        self._cpu, self._wall = times.user + times.system, time.perf_counter()
        return self

    def stop(self) -> Contention:
        times = psutil.Process().cpu_times()
        cpu, wall = times.user + times.system - self._cpu, time.perf_counter() - self._wall
        self.result.load_avg_1m_end = load_avg_1m()
        if self.device.type == "cpu" and wall > 0:
            self.result.cpu_util = cpu / (wall * torch.get_num_threads())
        return self.result
