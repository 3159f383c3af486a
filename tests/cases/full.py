from tests.cases import MethodCase


def _all_unique_params(model, family, kwargs) -> int:
    # Tied weights (GPT-2/T5 embeddings and heads) count once: identity, not name, decides.
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


CASE = MethodCase(
    method="full",
    families=["bert", "roberta", "gpt2", "llama", "t5", "vit", "mlp"],
    config=lambda family: {},
    expected_trainable=_all_unique_params,
    lr=1e-3,
)
