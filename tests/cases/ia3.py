from tests.cases import MethodCase

# (IA)^3 adds one vector per targeted module: the output width for keys/values, the input width
# (the FFN's inner width) for the FFN's second linear. Widths written from tests/tiny_models.py:
PER_FAMILY = {
    # 2 layers x (key 32 + value 32 + output.dense input 64); attention.output.dense is not targeted.
    "bert": 2 * (32 + 32 + 64),
    "roberta": 2 * (32 + 32 + 64),
    # 2 layers x (k and v thirds of the fused c_attn: 2 * 32, + mlp.c_proj input 4 * 32 = 128).
    "gpt2": 2 * (2 * 32 + 128),
    # 2 layers x (k_proj 16 + v_proj 16 (2 kv heads x head_dim 8) + down_proj input 48).
    "llama": 2 * (16 + 16 + 48),
    # encoder: 2 blocks x (self k 32 + v 32 + wo input 64);
    # decoder: 2 blocks x (self k, v 32 + 32 + cross k, v 32 + 32 + wo input 64).
    "t5": 2 * (32 + 32 + 64) + 2 * (32 + 32 + 32 + 32 + 64),
    "vit": 2 * (32 + 32 + 64),  # k_proj, v_proj, mlp.fc2 input 64
    "mlp": 32 + 32 + 32,  # fc1, fc2 outputs (output scaling), head input 32 (input scaling)
}


def _config(family: str) -> dict:
    if family == "mlp":
        # The plain MLP has no task head that trains, so IA3 gets three vectors to fit the batch with.
        return {"target_modules": ["fc1", "fc2"], "feedforward_modules": ["head"]}
    return {}


def _expected(model, family: str, kwargs: dict) -> int:
    return PER_FAMILY[family]


CASE = MethodCase(
    method="ia3",
    families=["bert", "roberta", "gpt2", "llama", "t5", "vit", "mlp"],
    config=_config,
    expected_trainable=_expected,
    # Few, multiplicative parameters: the table's 30 steps need a larger step than LoRA's 1e-2
    # (with 3e-2, BERT and the MLP fall short of the 30% drop; 1e-1 diverges on T5).
    lr=5e-2,
)
