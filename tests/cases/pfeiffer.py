from tests.cases import MethodCase
from tests.cases.houlsby import HIDDEN, bottleneck
from tests.cases.houlsby import config as houlsby_config

# Pfeiffer et al. 2021: one adapter per layer, after the FFN output projection only.
# Per adapter: 2*h*m + m + h parameters (see tests/cases/houlsby.py), h = 32 everywhere.
ADAPTERS = {
    "bert": 2,  # 2 layers x output.dense (not attention.output.dense)
    "roberta": 2,
    "gpt2": 2,  # mlp.c_proj
    "llama": 2,  # down_proj
    "t5": 2 + 2,  # DenseReluDense.wo in 2 encoder and 2 decoder blocks
    "vit": 2,  # mlp.fc2
    "mlp": 1,  # explicit target fc2
}


def _config(family: str) -> dict:
    kwargs = houlsby_config(family)
    if family == "bert":  # one adapter per layer on tiny BERT needs a wide bottleneck to fit in 30 steps
        kwargs = {"bottleneck_size": 32}
    if family == "mlp":
        kwargs["target_modules"] = ["fc2"]
    return kwargs


def _expected(model, family: str, kwargs: dict) -> int:
    m = bottleneck(kwargs)
    return ADAPTERS[family] * (2 * HIDDEN * m + m + HIDDEN)


CASE = MethodCase(
    method="pfeiffer",
    families=["bert", "roberta", "gpt2", "llama", "t5", "vit", "mlp"],
    config=_config,
    expected_trainable=_expected,
)
