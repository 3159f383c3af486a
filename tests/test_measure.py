"""Measurements on known workloads: a tensor of known size, a fake step of known token count."""

from __future__ import annotations

import time

import psutil
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


def _counted_training_flops(model, inputs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = model(**inputs).last_hidden_state
        out.float().pow(2).mean().backward()
    return counter.get_total_flops()


def _tiny_bert_encoder(layers: int = 4):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=256, max_position_embeddings=64)
    return BertModel(config, add_pooling_layer=False)  # every matmul weight then acts per token


# VeRA at a rank near the hidden size: its products with the shared A and B (buffers, not
# parameters) are most of the adapted layers' work, so leaving them out would miss by far more.
@pytest.mark.parametrize("method,settings", [("full", {}), ("lora", {"rank": 8}), ("vera", {"rank": 48})])
def test_flops_formula_agrees_with_torch_flop_counter(method, settings):
    from peftbench import apply_method
    from peftbench.measure import train_flops_per_token

    model = apply_method(_tiny_bert_encoder(), method, **settings)
    batch, seq = 4, 8
    inputs = {"input_ids": torch.randint(1, 64, (batch, seq))}
    counted = _counted_training_flops(model, inputs)
    predicted = train_flops_per_token(model) * batch * seq
    # The formula leaves out attention-score matmuls (~seq/hidden of the total) and, for a frozen
    # base, counts input gradients of the first layer that autograd can skip.
    assert predicted == pytest.approx(counted, rel=0.12)


def _tiny_tied_causal_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)  # a vocabulary large against the width, as in SmolLM2: the head matters
    config = LlamaConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


@pytest.mark.parametrize("method,settings", [("full", {}), ("lora", {"rank": 8})])
def test_flops_formula_counts_a_tied_lm_head_as_a_matmul(method, settings):
    """The lm_head shares the embedding table but multiplies by it: it is a matmul weight."""
    from torch.utils.flop_counter import FlopCounterMode

    from peftbench import apply_method
    from peftbench.measure import matmul_parameters, train_flops_per_token

    model = apply_method(_tiny_tied_causal_lm(), method, **settings)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    total, _ = matmul_parameters(model)
    assert total >= 512 * 64 + sum(p.numel() for n, p in model.named_parameters()
                                   if p.dim() == 2 and n.startswith("model.layers."))
    batch, seq = 4, 8
    inputs = {"input_ids": torch.randint(1, 512, (batch, seq))}
    with FlopCounterMode(display=False) as counter:
        model(**inputs).logits.float().pow(2).mean().backward()
    assert train_flops_per_token(model) * batch * seq == pytest.approx(counter.get_total_flops(), rel=0.12)


def test_lora_on_a_tied_lm_head_adds_its_factors_to_the_head_it_counts():
    from peftbench import apply_method
    from peftbench.measure import matmul_parameters

    base, _ = matmul_parameters(_tiny_tied_causal_lm())
    head = apply_method(_tiny_tied_causal_lm(), "lora", rank=8, target_modules=["lm_head"])
    assert matmul_parameters(head) == (base + 8 * (64 + 512), 8 * (64 + 512))


def test_flops_formula_is_6n_for_full_and_about_4n_for_a_frozen_base():
    from peftbench import apply_method
    from peftbench.measure import matmul_parameters, train_flops_per_token

    full = apply_method(_tiny_bert_encoder(), "full")
    n, _ = matmul_parameters(full)
    assert train_flops_per_token(full) == 6 * n
    lora = apply_method(_tiny_bert_encoder(), "lora", rank=2)
    n_lora, trainable = matmul_parameters(lora)
    assert train_flops_per_token(lora) == 4 * n_lora + 2 * trainable
    assert train_flops_per_token(lora) < 0.7 * train_flops_per_token(full)


def test_peak_flops_known_and_unknown_devices():
    from peftbench.measure import peak_flops

    assert peak_flops("NVIDIA H200", "bf16") == 989e12
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert peak_flops("AMD EPYC 7B13", "fp32") is None


def test_throughput_pause_leaves_evaluation_out():
    clock = FakeClock()
    meter = ThroughputMeter(torch.device("cpu"), warmup_steps=0, clock=clock)
    meter.begin()
    for step in range(4):
        clock.now += 1.0
        meter.step_done(samples=10, tokens=100)
        if step == 1:
            meter.pause()
            clock.now += 50.0  # a long evaluation
            meter.resume()
    meter.end()
    assert meter.elapsed_s == pytest.approx(4.0)
    assert meter.samples_per_s == pytest.approx(10.0)


@pytest.mark.skipif(read_peak_rss_bytes() is None, reason="needs Linux /proc/self/status")
@pytest.mark.parametrize("kernel_counter", [True, False])
def test_restarting_the_peak_leaves_out_what_came_before_and_keeps_what_is_held(kernel_counter, monkeypatch):
    if not kernel_counter:
        monkeypatch.setattr("peftbench.measure.CLEAR_REFS", "/nonexistent/clear_refs")
    meter = MemoryMeter(torch.device("cpu"), interval_s=0.001)
    meter.start()
    held = _allocate_and_touch(100 * MB)
    big = _allocate_and_touch(400 * MB)
    del big
    time.sleep(0.05)
    meter.restart_peak()
    small = _allocate_and_touch(20 * MB)
    time.sleep(0.05)
    peak = meter.stop().peak_rss_bytes
    rss = psutil.Process().memory_info().rss
    assert rss - 20 * MB <= peak < rss + 200 * MB  # the 100 MB held is in, the 400 MB gone before is not
    del held, small
