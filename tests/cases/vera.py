from tests.cases import MethodCase

# VeRA trains lambda_b (out) and lambda_d (rank) per adapted layer; A and B are frozen buffers.
# (number of adapted layers, out) for the family's default targets (LoRA's), from tests/tiny_models.py:
_DEFAULT_OUTS = {
    "bert": [(2 * 2, 32)],  # query, value in 2 layers
    "roberta": [(2 * 2, 32)],
    "gpt2": [(2, 96)],  # fused c_attn: 3 * 32
    "llama": [(2, 32), (2, 16)],  # q_proj; v_proj is narrower (2 kv heads x 8): slices of the shared B
    "t5": [(2 * 2 + 2 * 2 * 2, 32)],  # q, v of encoder self-, decoder self- and cross-attention
    "vit": [(2 * 2, 32)],
    "mlp": [(1, 32), (1, 32)],  # fc1 12 -> 32 (a slice of the shared A), fc2 32 -> 32
}


def _config(family: str) -> dict:
    kwargs = {"rank": 4, "projection_seed": 3}
    if family == "mlp":
        kwargs["target_modules"] = ["fc1", "fc2"]
    return kwargs


def _expected(model, family: str, kwargs: dict) -> int:
    return sum(n * (out + kwargs["rank"]) for n, out in _DEFAULT_OUTS[family])


CASE = MethodCase(
    method="vera",
    families=["bert", "roberta", "gpt2", "llama", "t5", "vit", "mlp"],
    config=_config,
    expected_trainable=_expected,
    lr=3e-2,
)
