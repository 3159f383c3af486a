from tests.cases import MethodCase
from tests.cases.lora import _DEFAULT_SHAPES


def _config(family: str) -> dict:
    kwargs = {"rank": 4, "alpha": 8.0}
    if family == "mlp":
        kwargs["target_modules"] = ["fc1", "fc2"]
    return kwargs


def _expected(model, family: str, kwargs: dict) -> int:
    # The same as LoRA's: r * (in + out) per adapted layer; the 4-bit base adds nothing trainable.
    return sum(n * kwargs["rank"] * (i + o) for n, i, o in _DEFAULT_SHAPES[family])


CASE = MethodCase(
    method="qlora",
    families=["bert", "roberta", "gpt2", "llama", "t5", "vit", "mlp"],
    config=_config,
    expected_trainable=_expected,
    # The base is stored in 4 bits, so even with B = 0 the output is the quantized base model's, not
    # the full-precision one's (tests/test_qlora.py checks it equals the quantized base exactly).
    identity_at_init=False,
)
