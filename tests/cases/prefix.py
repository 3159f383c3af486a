from tests.cases import MethodCase

# Prefix tuning trains P x W prefix values, W = sum over attention stacks of layers * 2 * kv_width,
# kv_width = key/value heads * head_dim. Written from the tiny configs in tests/tiny_models.py as
# (layers, kv_width) per stack:
_STACKS = {
    "bert": [(2, 4 * 8)],  # 2 layers, 4 heads of 32 / 4
    "roberta": [(2, 4 * 8)],
    "gpt2": [(2, 4 * 8)],
    "llama": [(2, 2 * 8)],  # grouped-query attention: 2 key/value heads of head_dim 8
    "t5": [(2, 4 * 8), (2, 4 * 8)],  # encoder and decoder self-attention (d_kv 8); no cross-attention
}
# The reparameterised families: embedding P x E, then Linear(E, H), tanh, Linear(H, W).
_REPARAMETERIZED = {"roberta": 16, "llama": None}  # family -> encoder_hidden_size (None: E)

P = 4


def _config(family: str) -> dict:
    kwargs = {"num_virtual_tokens": P}
    if family in _REPARAMETERIZED:
        kwargs["reparameterize"] = True
        kwargs["encoder_hidden_size"] = _REPARAMETERIZED[family]
    return kwargs


def _expected(model, family: str, kwargs: dict) -> int:
    p = kwargs["num_virtual_tokens"]
    width = sum(layers * 2 * kv for layers, kv in _STACKS[family])
    if not kwargs.get("reparameterize"):
        return p * width
    e = _STACKS[family][0][1]  # embedding width: one layer's key/value width
    h = kwargs.get("encoder_hidden_size") or e
    return p * e + (e * h + h) + (h * width + width)


CASE = MethodCase(
    method="prefix",
    families=["bert", "roberta", "gpt2", "llama", "t5"],
    config=_config,
    expected_trainable=_expected,
    identity_at_init=False,  # random prefixes change attention from the first step
    lr=1e-2,
)
