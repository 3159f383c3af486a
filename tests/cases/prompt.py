from tests.cases import MethodCase

# Prompt tuning trains P x e prompt values, e = the width of the input embeddings (32 in every tiny
# config of tests/tiny_models.py).
EMBED_WIDTH = {"bert": 32, "roberta": 32, "gpt2": 32, "llama": 32, "t5": 32}
_INITS = {"bert": "random_vocab", "roberta": "uniform", "gpt2": "random_vocab", "llama": "uniform", "t5": "random_vocab"}

P = 4


def _config(family: str) -> dict:
    return {"num_virtual_tokens": P, "init": _INITS[family]}


def _expected(model, family: str, kwargs: dict) -> int:
    return kwargs["num_virtual_tokens"] * EMBED_WIDTH[family]


CASE = MethodCase(
    method="prompt",
    families=["bert", "roberta", "gpt2", "llama", "t5"],
    config=_config,
    expected_trainable=_expected,
    identity_at_init=False,  # the prompt changes the input from the first step
    lr=1e-2,
    # The head pools position 0, which is a virtual token (as in peft): in a random tiny encoder its
    # output barely depends on the input (its spread over the batch is ~0.002, a real token's ~0.5),
    # so head and prompt cannot overfit four random rows in 30 steps.
    cannot_overfit={family: "the pooled first position is a virtual token whose state in a random tiny encoder "
                    "barely depends on the input" for family in ("bert", "roberta")},
)
