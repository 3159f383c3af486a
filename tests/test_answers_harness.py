"""Issue 14, the harness side: the update's spectrum, forgetting, the majority baseline, contention."""

from __future__ import annotations

import pytest
import torch

from peftbench import forgetting, spectrum
from peftbench.api import apply_method
from peftbench.baseline import majority_baseline
from peftbench.config import ForgettingConfig, SpectrumConfig
from peftbench.contention import ContentionMeter
from peftbench.errors import ConfigError
from tests import tiny_models


def _lora(rank: int):
    model = apply_method(tiny_models.bert().model(), "lora", rank=rank)
    g = torch.Generator().manual_seed(rank)
    with torch.no_grad():  # a trained-looking update: B away from its zero init
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_lora_update_has_effective_rank_at_most_its_rank(rank):
    model = _lora(rank)
    snap = spectrum.snapshot(model, "lora", SpectrumConfig())
    weights_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = spectrum.measure(model, snap, SpectrumConfig())
    # 2 layers x (query, value), the defaults for BERT; the head is not an update of a pretrained matrix.
    assert [lay["name"].rsplit(".", 3)[-3:] for lay in result.layers] == [["self", "query", "weight"],
                                                                          ["self", "value", "weight"]] * 2
    for layer in result.layers:
        assert 0 < layer["effective_rank"] <= rank + 1e-6
        assert 1 - 1e-6 <= layer["stable_rank"] <= rank + 1e-6
        assert len(layer["singular_values"]) == rank  # the rest was rounding noise
        assert layer["right_vectors"]["shape"] == [32, min(rank, 8)]
    assert result.effective_rank == pytest.approx(sum(lay["effective_rank"] for lay in result.layers) / 4)
    for n, p in model.named_parameters():  # merged and unmerged again: the model is as it was
        torch.testing.assert_close(p, weights_before[n])


def test_lora_on_a_tied_lm_head_measures_its_update():
    """SmolLM2 and GPT-2 tie lm_head to the input embeddings: the tied weight is still watched by
    the lm_head's own name (it used to raise KeyError 'lm_head.weight' at the end of the run)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=48, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = apply_method(LlamaForCausalLM(cfg), "lora", rank=2, target_modules=["lm_head"])
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with torch.no_grad():
        model.lm_head.lora_B.normal_()
    embeddings_before = model.model.embed_tokens.weight.detach().clone()
    result = spectrum.measure(model, spectrum.snapshot(model, "lora", SpectrumConfig()), SpectrumConfig())
    assert [lay["name"] for lay in result.layers] == ["lm_head.weight"]
    assert 1.0 < result.layers[0]["effective_rank"] <= 2 + 1e-6
    torch.testing.assert_close(model.model.embed_tokens.weight, embeddings_before)  # unmerged again


def test_qlora_which_cannot_merge_gives_its_update_layer_by_layer():
    pytest.importorskip("bitsandbytes")
    model = apply_method(tiny_models.bert().model(), "qlora", rank=2)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "qlora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    result = spectrum.measure(model, spectrum.snapshot(model, "qlora", SpectrumConfig()), SpectrumConfig())
    assert [lay["name"].rsplit(".", 3)[-3:] for lay in result.layers] == [["self", "query", "weight"],
                                                                          ["self", "value", "weight"]] * 2
    for layer in result.layers:  # s B A: rank 2 at most, exactly LoRA's update on the 4-bit base
        assert 0 < layer["effective_rank"] <= 2 + 1e-6 and len(layer["singular_values"]) == 2
    query = model.get_submodule(result.layers[0]["name"].rpartition(".")[0])
    expected = torch.linalg.svdvals(query.delta_weight().detach().float())[:2]
    torch.testing.assert_close(torch.tensor(result.layers[0]["singular_values"]), expected, rtol=1e-4, atol=1e-6)


def test_an_untrained_lora_has_no_update_and_adapters_are_not_measured():
    model = apply_method(tiny_models.bert().model(), "lora", rank=4)
    result = spectrum.measure(model, spectrum.snapshot(model, "lora", SpectrumConfig()), SpectrumConfig())
    assert result.effective_rank is None and all(lay["effective_rank"] is None for lay in result.layers)
    houlsby = apply_method(tiny_models.bert().model(), "houlsby")
    assert spectrum.snapshot(houlsby, "houlsby", SpectrumConfig()) is None
    assert spectrum.measure(houlsby, None, SpectrumConfig()).effective_rank is None


def test_full_fine_tuning_diffs_its_trainable_matrices_against_a_snapshot_on_disk():
    model = apply_method(tiny_models.bert().model(), "full")
    snap = spectrum.snapshot(model, "full", SpectrumConfig())
    folder = snap.folder.name
    assert not any(n.startswith("classifier.") for n in snap.names)
    assert "bert.encoder.layer.0.attention.self.query.weight" in snap.names
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        query = model.bert.encoder.layer[0].attention.self.query.weight
        query += torch.randn(query.shape, generator=g) * 0.01  # a full-rank update of one matrix
    result = spectrum.measure(model, snap, SpectrumConfig())
    by_name = {lay["name"]: lay for lay in result.layers}
    assert by_name["bert.encoder.layer.0.attention.self.query.weight"]["effective_rank"] > 16  # of 32
    assert by_name["bert.encoder.layer.0.attention.self.key.weight"]["effective_rank"] is None  # unchanged
    assert not __import__("os").path.exists(folder)  # the snapshot is removed


def test_a_large_matrix_gets_the_randomized_svd_of_its_top_values():
    torch.manual_seed(0)
    low_rank = torch.randn(300, 5) @ torch.randn(5, 200)
    cfg = SpectrumConfig(exact_max_dim=100, top_k=20, vectors=4)
    state = torch.random.get_rng_state()
    layer = spectrum.layer_spectrum("m", low_rank, cfg)
    assert torch.equal(torch.random.get_rng_state(), state)  # the run's random stream is untouched
    exact = torch.linalg.svdvals(low_rank)[:5]
    assert not layer["exact"] and len(layer["singular_values"]) == 5
    assert layer["singular_values"] == pytest.approx(exact.tolist(), rel=1e-4)
    assert layer["effective_rank"] == pytest.approx(spectrum.effective_rank(exact.numpy()), rel=1e-4)


def test_a_wide_matrix_is_solved_on_its_transpose():
    torch.manual_seed(0)
    wide = torch.randn(3, 8) @ torch.randn(8, 40)  # out 3 x in 40: solved on its transpose
    s, v, exact = spectrum.singular_values(wide, SpectrumConfig())
    torch.testing.assert_close(s, torch.linalg.svdvals(wide))
    assert exact and v.shape == (40, 3)
    torch.testing.assert_close(v.T @ v, torch.eye(3), atol=1e-5, rtol=0)
    torch.testing.assert_close((wide @ v).norm(dim=0), s)  # the columns are the right singular vectors


def test_effective_rank_formula():
    assert spectrum.effective_rank([1.0, 1.0, 1.0, 1.0]) == pytest.approx(4.0)
    assert spectrum.effective_rank([3.0]) == pytest.approx(1.0)
    assert 1.0 < spectrum.effective_rank([2.0, 1.0]) < 2.0
    assert spectrum.effective_rank([0.0, 0.0]) is None


def test_linear_cka_is_one_for_a_rotated_copy_and_low_for_noise():
    torch.manual_seed(0)
    x = torch.randn(100, 16)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16))
    assert forgetting.linear_cka(x, 3 * x @ rotation + 1) == pytest.approx(1.0)
    assert forgetting.linear_cka(x, torch.randn(100, 16)) < 0.3


def test_the_builtin_reference_is_real_prose_and_sampled_evenly():
    texts, label = forgetting.reference_texts(ForgettingConfig(samples=200))
    assert len(texts) == 200 and label == "python_docs[200]"
    assert len(set(texts)) == 200
    assert all(6 <= len(t.split()) <= 60 and t[0].isupper() or t[0] in "\"'(" for t in texts)
    assert len(forgetting.python_docs_sentences()) > 1000


def test_a_local_reference_file_and_bad_references(tmp_path):
    path = tmp_path / "ref.txt"
    path.write_text("One sentence here.\n\nAnother one there.\nA third.\nA fourth.\n")
    texts, label = forgetting.reference_texts(ForgettingConfig(reference=str(path), samples=2))
    assert texts == ["One sentence here.", "A third."] and label == f"file:{path}[2]"
    with pytest.raises(ConfigError, match="forgetting.samples"):
        ForgettingConfig(samples=0)
    with pytest.raises(ConfigError, match="forgetting.reference='no/such-dataset'"):
        forgetting.reference_texts(ForgettingConfig(reference="no/such-dataset"))
    with pytest.raises(ConfigError, match="spectrum.vectors"):
        SpectrumConfig(vectors=100)


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert_dir)


def test_drift_is_zero_at_the_identity_init_and_positive_after_a_change(tiny_bert_dir, tokenizer):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    probe = forgetting.Probe(ForgettingConfig(samples=64), causal_lm=False, device=torch.device("cpu"))
    probe.take_base(model, tokenizer)
    model = apply_method(model, "lora", rank=4)  # B = 0: the same function as the base model
    assert probe.measure(model).representation_drift == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    result = probe.measure(model)
    assert result.representation_drift > 1e-3 and result.ref_loss_delta is None
    assert result.reference == "python_docs[64]"


def test_ref_loss_delta_for_a_causal_lm(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=128))
    probe = forgetting.Probe(ForgettingConfig(samples=32), causal_lm=True, device=torch.device("cpu"))
    probe.take_base(model, tokenizer)
    assert probe.base_loss == pytest.approx(torch.log(torch.tensor(tokenizer.vocab_size)).item(), rel=0.05)
    assert probe.measure(model).ref_loss_delta == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.normal_(0, 1.0)
    changed = probe.measure(model)
    assert changed.ref_loss_delta != pytest.approx(0.0, abs=1e-4) and changed.representation_drift > 0


class _Kind:
    name = "classification"

    def __init__(self, num_labels: int) -> None:
        self.task = type("Task", (), {"num_labels": num_labels})()


def test_majority_baseline_is_the_metric_of_the_constant_prediction():
    from peftbench.tasks import TaskData

    def data(labels, metric, num_labels=2):
        return TaskData(train=None, eval={"labels": labels}, metric=metric, kind=_Kind(num_labels))

    assert majority_baseline(data([1, 1, 0, 1, 0], "accuracy")) == pytest.approx(0.6)
    assert majority_baseline(data([0, 0, 0, 1], "matthews_correlation")) == pytest.approx(0.0)
    assert majority_baseline(data([0.5, 1.2], "accuracy", num_labels=1)) is None


def test_contention_meter_reads_the_machine():
    meter = ContentionMeter(torch.device("cpu")).start()
    x = torch.randn(256, 256)
    for _ in range(50):
        x = torch.tanh(x @ x.T / 256)
    busy = meter.stop()
    assert busy.cpu_count >= 1 and busy.load_avg_1m_start >= 0 and busy.load_avg_1m_end >= 0
    assert 0 < busy.cpu_util <= 1.5 and busy.gpu_other_mem_bytes is None


def test_drift_of_a_method_that_prepends_virtual_tokens(tiny_bert_dir, tokenizer):
    """Prompt tuning returns more positions than the text has: the text's own are compared."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    probe = forgetting.Probe(ForgettingConfig(samples=32), causal_lm=False, device=torch.device("cpu"))
    probe.take_base(model, tokenizer)
    model = apply_method(model, "prompt", num_virtual_tokens=4)
    drift = probe.measure(model).representation_drift
    assert 0.0 < drift < 1.0  # the prompt changes the states; they are still comparable with the base's
