from tests.cases import MethodCase

# LoRA's trainable count is r * (in + out) per adapted layer (A: r x in, B: out x r).
# Layer shapes per family, written from the tiny configs in tests/tiny_models.py:
# (number of adapted layers, in, out) for the family's default targets.
_DEFAULT_SHAPES = {
    "bert": [(2 * 2, 32, 32)],  # query, value in 2 layers
    "roberta": [(2 * 2, 32, 32)],
    "gpt2": [(2, 32, 96)],  # fused c_attn: 32 -> 3 * 32
    "llama": [(2, 32, 32), (2, 32, 16)],  # q_proj 32->32; v_proj 32->16 (2 kv heads x 8)
    # q and v in encoder self-attention (2 layers), decoder self- and cross-attention (2 x 2 layers).
    "t5": [(2 * 2 + 2 * 2 * 2, 32, 32)],
    "vit": [(2 * 2, 32, 32)],
    "mlp": [(1, 12, 32), (1, 32, 32)],
}


def _config(family: str) -> dict:
    kwargs = {"rank": 4, "alpha": 8.0}
    if family == "mlp":
        kwargs["target_modules"] = ["fc1", "fc2"]
    return kwargs


def _expected(model, family: str, kwargs: dict) -> int:
    return sum(n * kwargs["rank"] * (i + o) for n, i, o in _DEFAULT_SHAPES[family])


CASE = MethodCase(
    method="lora",
    families=["bert", "roberta", "gpt2", "llama", "t5", "vit", "mlp"],
    config=_config,
    expected_trainable=_expected,
)
