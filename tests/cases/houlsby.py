from tests.cases import MethodCase

# A bottleneck adapter on a projection of output width h with bottleneck m has
# down (h*m weights + m biases) and up (m*h weights + h biases): 2*h*m + m + h parameters.
# Every tiny model has hidden width 32 (tests/tiny_models.py), and so has the MLP's fc1 and fc2.
HIDDEN = 32

# Houlsby et al. 2019: one adapter after the attention output projection and one after the FFN
# output projection of every layer. Counts written from the tiny configs:
ADAPTERS = {
    "bert": 2 * 2,  # 2 layers x (attention.output.dense, output.dense)
    "roberta": 2 * 2,
    "gpt2": 2 * 2,  # 2 layers x (attn.c_proj, mlp.c_proj)
    "llama": 2 * 2,  # 2 layers x (o_proj, down_proj)
    # encoder: 2 blocks x (SelfAttention.o, wo); decoder: 2 blocks x (SelfAttention.o, EncDecAttention.o, wo)
    "t5": 2 * 2 + 2 * 3,
    "vit": 2 * 2,  # 2 layers x (attention.o_proj, mlp.fc2)
    "mlp": 2,  # explicit targets fc1, fc2
}


def bottleneck(kwargs: dict) -> int:
    if kwargs.get("bottleneck_size") is not None:
        return kwargs["bottleneck_size"]
    return HIDDEN // kwargs.get("reduction_factor", 16)


def config(family: str) -> dict:
    """Spreads the settings over the families, each chosen so that 30 steps at lr 1e-2 fit the batch."""
    kwargs = {
        "bert": {"reduction_factor": 2},  # bottleneck 16: tiny BERT (pooler, dropout) learns slowly
        "roberta": {"reduction_factor": 8},  # bottleneck 32 // 8 = 4
        "gpt2": {"reduction_factor": 8, "non_linearity": "gelu"},
        "llama": {"bottleneck_size": 3},  # explicit size instead of a reduction factor
        "t5": {"reduction_factor": 8, "non_linearity": "swish"},
        "vit": {},  # defaults: reduction_factor 16, bottleneck 2
        "mlp": {"reduction_factor": 4, "target_modules": ["fc1", "fc2"]},
    }[family]
    return dict(kwargs)


def _expected(model, family: str, kwargs: dict) -> int:
    m = bottleneck(kwargs)
    return ADAPTERS[family] * (2 * HIDDEN * m + m + HIDDEN)


CASE = MethodCase(
    method="houlsby",
    families=["bert", "roberta", "gpt2", "llama", "t5", "vit", "mlp"],
    config=config,
    expected_trainable=_expected,
)
