"""BitFit: exactly the bias terms train, the paper's choice by default, the documented counts on
bert-base, and peft's every-bias selection (its LoRA with ``bias="all"``) as the reference count."""

from __future__ import annotations

import peft
import pytest
import torch

from peftbench.api import apply_method, count_parameters, method_state
from peftbench.methods import MethodConfigError, get_method
from peftbench.methods.bitfit import BitFitConfig, bias_names
from tests.tiny_models import FAMILIES

SPEC = get_method("bitfit")


def test_config_refuses_an_unknown_choice_naming_the_allowed_ones():
    with pytest.raises(MethodConfigError, match="biases='some' is not one of all, no_norm"):
        BitFitConfig(biases="some")


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_models_without_biases_outside_the_head_are_refused(family):
    model = FAMILIES[family]().model()
    with pytest.raises(MethodConfigError, match="no bias terms outside its task head"):
        SPEC.apply(model, BitFitConfig())
    assert all(n.startswith(("score.", "classification_head.")) for n in bias_names(model))
    # T5's relative position biases are embeddings (`relative_attention_bias.weight`), not bias terms.
    assert not any("relative_attention_bias" in n for n in bias_names(model))


@pytest.mark.parametrize("biases", ["all", "no_norm"])
def test_exactly_the_chosen_biases_train(biases):
    model = SPEC.apply(FAMILIES["bert"]().model(), BitFitConfig(biases=biases))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    every_bias = {n for n, _ in model.named_parameters() if n.endswith(".bias")}
    norm_biases = {n for n in every_bias if "LayerNorm" in n}
    assert trainable == (every_bias if biases == "all" else every_bias - norm_biases)
    assert norm_biases and "bert.pooler.dense.bias" in trainable


def _bert_base():
    from transformers import BertConfig, BertForSequenceClassification

    with torch.device("meta"):  # bert-base's shapes, no weights: counting needs no values
        return BertForSequenceClassification(BertConfig(num_labels=2))


def test_the_documented_counts_on_bert_base():
    h, i, layers = 768, 3072, 12
    # per layer q, k, v, attention output, FFN (i + h), two layer norms; embeddings' layer norm, pooler, classifier
    every_bias = layers * (4 * h + i + h + 2 * h) + h + h + 2
    all_biases = count_parameters(apply_method(_bert_base(), "bitfit", train_head=False))[0]
    assert all_biases == every_bias == 102_914
    no_norm = count_parameters(apply_method(_bert_base(), "bitfit", train_head=False, biases="no_norm"))[0]
    assert no_norm == every_bias - (layers * 2 * h + h) == 83_714
    assert count_parameters(apply_method(_bert_base(), "bitfit"))[0] == 102_914 + 768 * 2 == 104_450


def _roberta_base():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    with torch.device("meta"):
        return RobertaForSequenceClassification(RobertaConfig(num_labels=2))


@pytest.mark.parametrize("build", [_roberta_base, _bert_base], ids=["roberta-base", "bert-base"])
def test_trainable_count_equals_peft_every_bias_selection(build):
    # peft has no BitFit; its LoRA with bias="all" also trains every parameter named "*bias*", so its
    # trainable count minus its LoRA matrices is the reference.
    theirs = peft.get_peft_model(build(), peft.LoraConfig(r=1, target_modules=["query"], bias="all"))
    lora = sum(p.numel() for n, p in theirs.named_parameters() if "lora_" in n)
    assert lora > 0
    ours = apply_method(build(), "bitfit", train_head=False)
    assert count_parameters(ours)[0] == theirs.get_nb_trainable_parameters()[0] - lora


def test_the_checkpoint_holds_the_biases_and_the_head():
    model = apply_method(FAMILIES["bert"]().model(), "bitfit")
    state = method_state(model, "bitfit")
    assert {k for k in state if not k.endswith(".bias")} == {"classifier.weight"}
    assert sum(v.numel() for v in state.values()) == count_parameters(model)[0]
