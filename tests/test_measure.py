"""Measurements on known workloads: a tensor of known size, a fake step of known token count."""

from __future__ import annotations

import pytest
import torch

from peftbench.measure import MemoryMeter, ThroughputMeter, read_peak_rss_bytes

MB = 1 << 20


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throughput_excludes_warmup_steps_and_counts_tokens():
    clock = FakeClock()
    meter = ThroughputMeter(torch.device("cpu"), warmup_steps=2, clock=clock)
    meter.begin()
    for step in range(1, 8):
        clock.now += 10.0 if step <= 2 else 0.5  # slow warm-up steps must not count
        meter.step_done(samples=32, tokens=400)
    meter.end()
    assert meter.timed_steps == 5
    assert meter.elapsed_s == pytest.approx(2.5)
    assert meter.samples_per_s == pytest.approx(5 * 32 / 2.5)
    assert meter.tokens_per_s == pytest.approx(5 * 400 / 2.5)


def test_throughput_without_warmup_times_every_step():
    clock = FakeClock()
    meter = ThroughputMeter(torch.device("cpu"), warmup_steps=0, clock=clock)
    meter.begin()
    for _ in range(4):
        clock.now += 1.0
        meter.step_done(samples=8, tokens=50)
    meter.end()
    assert meter.tokens_per_s == pytest.approx(50.0)


def _allocate_and_touch(n_bytes: int) -> torch.Tensor:
    return torch.ones(n_bytes // 4, dtype=torch.float32)  # ones: pages are really written


@pytest.mark.skipif(read_peak_rss_bytes() is None, reason="needs Linux /proc/self/status")
def test_cpu_peak_includes_a_known_tensor_and_resets_between_runs():
    baseline = MemoryMeter(torch.device("cpu"))
    baseline.start()
    quiet = baseline.stop().peak_rss_bytes

    meter = MemoryMeter(torch.device("cpu"))
    meter.start()
    big = _allocate_and_touch(400 * MB)
    del big
    peak = meter.stop().peak_rss_bytes
    assert peak - quiet >= 380 * MB

    # A second run in the same process must not be charged for the first run's peak.
    second = MemoryMeter(torch.device("cpu"))
    second.start()
    small = _allocate_and_touch(40 * MB)
    del small
    second_peak = second.stop().peak_rss_bytes
    assert second_peak < peak - 300 * MB
    assert second_peak - quiet >= 30 * MB


def test_sampling_fallback_sees_a_known_tensor(monkeypatch):
    monkeypatch.setattr("peftbench.measure.CLEAR_REFS", "/nonexistent/clear_refs")
    meter = MemoryMeter(torch.device("cpu"), interval_s=0.001)
    meter.start()
    assert meter._thread is not None  # the kernel counter was unavailable: sampling instead
    import time

    start = meter._sampled_peak
    big = _allocate_and_touch(300 * MB)
    time.sleep(0.05)
    del big
    assert meter.stop().peak_rss_bytes - start >= 250 * MB


@pytest.mark.cuda
def test_cuda_peak_is_the_run_alone_and_refuses_leftovers():
    device = torch.device("cuda")
    meter = MemoryMeter(device)
    meter.start()
    x = torch.empty(256 * MB, dtype=torch.uint8, device=device)
    peak = meter.stop()
    assert peak.peak_gpu_mem_bytes >= 256 * MB
    assert peak.peak_gpu_reserved_bytes >= peak.peak_gpu_mem_bytes
    with pytest.raises(RuntimeError, match="already allocated"):
        MemoryMeter(device).start()
    del x
    torch.cuda.empty_cache()
    meter = MemoryMeter(device)
    meter.start()
    assert meter.stop().peak_gpu_mem_bytes < 256 * MB
