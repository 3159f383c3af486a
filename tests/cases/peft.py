from tests.cases import MethodCase
from tests.cases.lora import _DEFAULT_SHAPES  # the bridge's default targets are LoRA's (methods/targets.yaml)

# The bridge (method=peft) in the generic table, with LoHa: peft's layers, injected through peft's tuner.
# LoHa trains two rank-r products per adapted layer (W1a: out x r, W1b: r x in, W2a, W2b), so 2 r (in + out).
# Not on GPT-2: peft's LoHa cannot wrap GPT-2's Conv1D (its refusal is tested in tests/test_peft_bridge.py).


def _config(family: str) -> dict:
    options = {"r": 4, "alpha": 8}
    if family == "mlp":
        options["target_modules"] = ["fc1", "fc2"]
    return {"peft_type": "loha", "options": options}


def _expected(model, family: str, kwargs: dict) -> int:
    r = kwargs["options"]["r"]
    return sum(n * 2 * r * (i + o) for n, i, o in _DEFAULT_SHAPES[family])


CASE = MethodCase(
    method="peft",
    families=["bert", "roberta", "llama", "t5", "vit", "mlp"],
    config=_config,
    expected_trainable=_expected,
    init_atol=1e-6,  # W2b = 0 makes the update exactly 0; T5's adapted path adds in another order (2.7e-7 seen)
)
