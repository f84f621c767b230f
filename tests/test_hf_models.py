"""Hugging Face model directories: tiny random Llama/Mistral/Qwen2/GPT-2 models saved by transformers load
and run like transformers runs them (float32 logits, greedy ids, KV cache), and every broken directory
gets a clear error. transformers is only the yardstick here; the engine never imports it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import MODEL_PT, TOKENIZER_DIR
from llmbuilder_cli import GenerationConfig
from llmbuilder_cli.engine.formats import hf_dir
from llmbuilder_cli.engine.describe import describe
from llmbuilder_cli.engine.generate import TextStream, TokenGenerator, with_bos
from llmbuilder_cli.engine.loading import is_gguf, load, model_format, resolve_dtype, resolve_model_file
from llmbuilder_cli.engine.models.llama import RopeSpec
from llmbuilder_cli.engine.tokenizers.tokenizer import HFTokenizer, load_tokenizer
from llmbuilder_cli.errors import ModelLoadError, TokenizerError, UsageError

V = 96  # vocabulary of every tiny model: <unk>, <s>, </s>, then w3 .. w95
PROMPT = [5, 17, 33, 8, 60, 91, 12, 44]
STEPS = 20
GREEDY = GenerationConfig(do_sample=False, max_new_tokens=STEPS)

_LLAMA = dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=4, max_position_embeddings=64, initializer_range=0.2,
              bos_token_id=None, eos_token_id=None, pad_token_id=None)
_GPT2 = dict(vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=64, initializer_range=0.2,
             bos_token_id=None, eos_token_id=None, pad_token_id=None)

#: name -> (transformers config class, model class, config overrides)
CASES = {
    "llama-gqa-untied": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=2)),
    "llama-mqa-tied-head_dim": ("LlamaConfig", "LlamaForCausalLM",
                                dict(num_key_value_heads=1, head_dim=24, tie_word_embeddings=True)),
    "llama-biases": ("LlamaConfig", "LlamaForCausalLM", dict(attention_bias=True, mlp_bias=True)),
    "qwen2-biases-tied": ("Qwen2Config", "Qwen2ForCausalLM", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(num_key_value_heads=2, sliding_window=4096)),
    "rope-linear": ("LlamaConfig", "LlamaForCausalLM",
                    dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0})),
    "rope-dynamic": ("LlamaConfig", "LlamaForCausalLM",  # 8 + 20 tokens run past the 16 trained positions
                     dict(max_position_embeddings=16,
                          rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})),
    "rope-llama3": ("LlamaConfig", "LlamaForCausalLM",
                    dict(rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 32,
                                          "rope_theta": 10000.0})),
    "rope-yarn": ("LlamaConfig", "LlamaForCausalLM",
                  dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                                        "rope_theta": 10000.0})),
    "gpt2-gelu_new-tied": ("GPT2Config", "GPT2LMHeadModel", dict(activation_function="gelu_new")),
    "gpt2-gelu-untied-layer-scaled": ("GPT2Config", "GPT2LMHeadModel",
                                      dict(activation_function="gelu", tie_word_embeddings=False,
                                           scale_attn_by_inverse_layer_idx=True)),
}


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def write_tokenizer(folder: Path, *, bos_in_post_processor: bool = True, config: dict | None = None) -> None:
    """A word-level tokenizer over "w3 w4 ..." with <unk>/<s>/</s> = 0/1/2, like a Llama tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, V)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    if bos_in_post_processor:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(str(folder / "tokenizer.json"))
    cfg = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"} if config is None else config
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")


def save_tiny(transformers, folder: Path, case: str, *, seed: int = 0, **save_kwargs):
    """A random tiny transformers model of ``case`` saved (with a tokenizer) into ``folder``."""
    cfg_cls, model_cls, overrides = CASES[case]
    base = _GPT2 if cfg_cls == "GPT2Config" else _LLAMA
    config = getattr(transformers, cfg_cls)(**{**base, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config).eval()
    model.save_pretrained(folder, **save_kwargs)
    write_tokenizer(folder)
    return model


def hf_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].float()


def hf_greedy(model, ids: list[int], steps: int = STEPS) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=steps, do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist()


def our_greedy(loaded, ids: list[int], steps: int = STEPS) -> list[int]:
    return list(TokenGenerator(loaded.model, ids, GREEDY.replace(max_new_tokens=steps)))


# ------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("case", list(CASES))
def test_float32_logits_greedy_ids_and_kv_cache_match_transformers(transformers, tmp_path, case):
    ref = save_tiny(transformers, tmp_path, case)
    loaded = load(tmp_path, device="cpu", dtype="float32")
    model = loaded.model
    assert model.dtype == torch.float32 and loaded.info.architecture == ref.config.model_type
    assert loaded.info.num_parameters == sum(p.numel() for p in ref.parameters())  # tied head counted once

    with torch.inference_mode():
        ours = model.forward(torch.tensor([PROMPT]))[0]
    assert ours.dtype == torch.float32
    assert (ours - hf_logits(ref, PROMPT)).abs().max().item() < 1e-4

    assert our_greedy(loaded, PROMPT) == hf_greedy(ref, PROMPT)

    # KV-cached decode (one token, then a chunk at an offset) equals a full recompute.
    seq = PROMPT + [7, 9, 11, 13]
    with torch.inference_mode():
        cache = model.new_cache(len(seq))
        model.forward(torch.tensor([seq[:5]]), 0, cache)
        model.forward(torch.tensor([seq[5:6]]), 5, cache)
        chunk = model.forward(torch.tensor([seq[6:]]), 6, cache)[0]
        full = model.forward(torch.tensor([seq]))[0]
    assert (chunk - full).abs().max().item() < 1e-5


def test_sharded_save_loads_and_matches(transformers, tmp_path):
    ref = save_tiny(transformers, tmp_path, "llama-gqa-untied", max_shard_size="40KB")
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    loaded = load(tmp_path, device="cpu")
    assert loaded.info.format == f"Hugging Face safetensors ({len(shards)} shards)"
    assert our_greedy(loaded, PROMPT) == hf_greedy(ref, PROMPT)
    # The sha256 covers the shards' bytes in file-name order.
    h = hashlib.sha256()
    for name in shards:
        h.update((tmp_path / name).read_bytes())
    assert loaded.info.sha256() == h.hexdigest()


def test_bfloat16_runs_and_mostly_agrees(transformers, tmp_path):
    save_tiny(transformers, tmp_path, "llama-gqa-untied")
    f32 = load(tmp_path, device="cpu", dtype="float32")
    bf16 = load(tmp_path, device="cpu", dtype="bfloat16")
    assert bf16.model.dtype == torch.bfloat16 and bf16.identity()["dtype"] == "bfloat16"
    with torch.inference_mode():
        a = f32.model.forward(torch.tensor([PROMPT]))[0]
        b = bf16.model.forward(torch.tensor([PROMPT]))[0]
    assert b.dtype == torch.float32 and (a - b).abs().max().item() < 0.1 * a.abs().max().item()
    assert our_greedy(bf16, PROMPT, 5)[:1] == our_greedy(f32, PROMPT, 5)[:1]


def test_old_config_spellings_of_rope_are_read(transformers, tmp_path):
    """rope_theta + rope_scaling (written by older transformers and by GGUF readers) mean what
    rope_parameters means."""
    ref = save_tiny(transformers, tmp_path, "rope-linear")
    cfg = json.loads((tmp_path / "config.json").read_text())
    params = cfg.pop("rope_parameters")
    cfg["rope_theta"] = params["rope_theta"]
    cfg["rope_scaling"] = {"type": "linear", "factor": params["factor"]}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    loaded = load(tmp_path, device="cpu")
    assert loaded.model.config.rope == RopeSpec("linear", 500.0, {"type": "linear", "factor": 2.0})
    assert our_greedy(loaded, PROMPT) == hf_greedy(ref, PROMPT)


# ------------------------------------------------------------------------------- tokenizer and BOS
def test_tokenizer_bos_eos_and_chat_template_from_the_directory(tmp_path):
    write_tokenizer(tmp_path)
    tok = load_tokenizer(tmp_path / "tokenizer.json", extra_eos_ids=[5, 2])
    assert (tok.bos_id, tok.add_bos, tok.eos_ids) == (1, True, (2, 5))  # post-processor adds <s>
    assert tok.special_tokens == {"bos_token": "<s>", "eos_token": "</s>"}
    assert tok.encode("w3 w4") == [3, 4]  # encode itself never adds BOS
    assert tok.chat_template is None

    # An explicit add_bos_token wins over the post-processor, as in transformers.
    write_tokenizer(tmp_path, config={"bos_token": {"content": "<s>"}, "eos_token": "</s>", "add_bos_token": False,
                                      "chat_template": "{{ messages }}"})
    tok = load_tokenizer(tmp_path / "tokenizer.json")
    assert (tok.bos_id, tok.add_bos, tok.chat_template) == (1, False, "{{ messages }}")
    (tmp_path / "chat_template.jinja").write_text("{{ bos_token }}{{ messages }}")
    assert load_tokenizer(tmp_path / "tokenizer.json").chat_template == "{{ bos_token }}{{ messages }}"

    write_tokenizer(tmp_path, bos_in_post_processor=False, config={"eos_token": "</s>"})
    tok = load_tokenizer(tmp_path / "tokenizer.json")
    assert (tok.bos_id, tok.add_bos) == (None, False)


def test_from_tokenizer_wraps_an_existing_tokenizer(tmp_path):
    from tokenizers import Tokenizer

    write_tokenizer(tmp_path)
    raw = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    tok = HFTokenizer.from_tokenizer(raw, path=tmp_path / "m.gguf", eos_ids=[2, 2, 7], bos_id=1, add_bos=True,
                                     chat_template="t", special_tokens={"bos_token": "<s>"})
    assert (tok.eos_ids, tok.bos_id, tok.add_bos, tok.vocab_size) == ((2, 7), 1, True, V)
    assert tok.decode(tok.encode("w3 w9")) == "w3 w9"
    assert with_bos(tok, [3]) == [1, 3] and with_bos(tok, [1, 3]) == [1, 3]


def test_fresh_prompts_start_with_bos_only_when_the_tokenizer_adds_it(transformers, tmp_path):
    save_tiny(transformers, tmp_path, "llama-gqa-untied")
    loaded = load(tmp_path, device="cpu")
    assert loaded.tokenizer.add_bos
    cfg = GREEDY.replace(max_new_tokens=2)
    assert TextStream(loaded, "w3 w4", cfg).prompt_ids == [1, 3, 4]
    assert TextStream(loaded, "<s> w3", cfg).prompt_ids == [1, 3]  # already there: not doubled
    assert TextStream(loaded, "", cfg, prompt_ids=[3, 4]).prompt_ids == [3, 4]  # given ids are kept as they are
    assert TextStream(loaded, "w3 w4", cfg).prompt_text == "w3 w4"


def test_llmbuilder_models_never_get_a_bos(tmp_path):
    """A tokenizer.json whose post-processor adds <s> (llmbuilder's HF tokenizer variant) does not make an
    llmbuilder model start with BOS: llmbuilder never does."""
    shutil.copy(MODEL_PT, tmp_path / "model.pt")
    write_tokenizer(tmp_path / ".", config={})
    loaded = load(tmp_path / "model.pt", tmp_path / "tokenizer.json", device="cpu")
    assert not loaded.tokenizer.add_bos
    assert TextStream(loaded, "w3 w4", GREEDY.replace(max_new_tokens=1)).prompt_ids == [3, 4]
    assert not load(MODEL_PT, TOKENIZER_DIR, device="cpu").tokenizer.add_bos


# ------------------------------------------------------------------------ generation config, info
def test_generation_config_gives_eos_ids_and_valid_defaults(transformers, tmp_path):
    save_tiny(transformers, tmp_path, "qwen2-biases-tied")
    (tmp_path / "generation_config.json").write_text(json.dumps({
        "eos_token_id": [7, 2], "temperature": 0.7, "top_p": 1.5, "top_k": 20, "do_sample": True,
        "repetition_penalty": "high", "max_new_tokens": 64, "max_length": 100,
    }))
    loaded = load(tmp_path, device="cpu")
    assert loaded.tokenizer.eos_ids == (2, 7)
    # top_p 1.5 and a non-numeric penalty are dropped; max_length is not one of our fields.
    assert loaded.generation_defaults == {"temperature": 0.7, "top_k": 20, "do_sample": True, "max_new_tokens": 64}
    assert hf_dir.generation_defaults({}) == {}


def test_info_of_a_hugging_face_directory(transformers, tmp_path):
    ref = save_tiny(transformers, tmp_path, "llama-gqa-untied")
    d = describe(tmp_path)
    assert (d["format"], d["architecture"], d["layers"], d["heads"], d["kv_heads"]) == (
        "Hugging Face safetensors", "llama", 2, 4, 2)
    assert (d["embedding_dim"], d["context_length"], d["vocab_size"], d["rope_theta"]) == (64, 64, V, 10000.0)
    assert d["stored_dtype"] == "float32" and d["tied_output_head"] is False and d["quantization"] is None
    assert d["sha256"] == hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest()
    assert d["tokenizer"]["bos"] == {"id": 1, "token": "<s>"} and d["tokenizer"]["add_bos"] is True
    assert d["tokenizer"]["chat_template"] is False
    assert d["parameters"] == sum(p.numel() for p in ref.parameters())
    ident = load(tmp_path, device="cpu").identity()
    assert ident["sha256"] == d["sha256"] and ident["dtype"] == "float32" and ident["path"] == str(tmp_path.resolve())


# ------------------------------------------------------------------------------------------ errors
def test_unsupported_model_type_lists_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(ModelLoadError) as e:
        load(tmp_path, device="cpu")
    assert "model type 'bert' (BertModel) is not supported" in e.value.message
    for name in ("llama", "mistral", "qwen2", "gpt2"):
        assert name in e.value.hint


def test_missing_shard_is_named(transformers, tmp_path):
    save_tiny(transformers, tmp_path, "llama-gqa-untied", max_shard_size="40KB")
    victim = sorted(tmp_path.glob("model-*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(ModelLoadError, match=f"shard {victim.name} listed in model.safetensors.index.json is missing"):
        load(tmp_path, device="cpu")


def test_wrong_tensor_shape_is_named(transformers, tmp_path):
    from safetensors.torch import load_file, save_file

    save_tiny(transformers, tmp_path, "llama-gqa-untied")
    state = load_file(str(tmp_path / "model.safetensors"))
    state["model.layers.1.self_attn.k_proj.weight"] = torch.zeros(64, 64)  # GQA: should be (32, 64)
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"'model.layers.1.self_attn.k_proj.weight' has shape \(64, 64\), "
                                             r"expected \(32, 64\)"):
        load(tmp_path, device="cpu")
    del state["model.layers.1.self_attn.k_proj.weight"], state["lm_head.weight"]
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="missing lm_head.weight, model.layers.1.self_attn.k_proj.weight"):
        load(tmp_path, device="cpu")


def test_pytorch_bin_only_directory_is_refused_with_a_hint(transformers, tmp_path):
    save_tiny(transformers, tmp_path, "gpt2-gelu_new-tied")
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as e:
        load(tmp_path, device="cpu")
    assert "only pytorch_model.bin" in e.value.message and "safetensors" in e.value.hint


def test_unsupported_rope_and_activation_are_named():
    base = {"model_type": "llama", **{k: v for k, v in _LLAMA.items() if not k.endswith("_id")}}
    with pytest.raises(ModelLoadError) as e:
        hf_dir.model_config({**base, "rope_scaling": {"rope_type": "longrope", "factor": 2.0}})
    assert "'longrope'" in e.value.message and "linear, dynamic, llama3, yarn" in e.value.hint
    with pytest.raises(ModelLoadError, match="hidden_act 'mish'"):
        hf_dir.model_config({**base, "hidden_act": "mish"})
    with pytest.raises(ModelLoadError, match="activation_function 'foo'"):
        hf_dir.model_config({"model_type": "gpt2", "activation_function": "foo"})
    with pytest.raises(ModelLoadError, match="num_key_value_heads 3 does not divide"):
        hf_dir.model_config({**base, "num_key_value_heads": 3})
    with pytest.raises(ModelLoadError, match="quantized with 'gptq'"):
        hf_dir.model_config({**base, "quantization_config": {"quant_method": "gptq"}})


def test_mistral_keeps_its_context_and_slides_its_window():
    """The window limits what each layer sees, not the context (tests/test_sliding_window.py runs past it)."""
    cfg = hf_dir.model_config({"model_type": "mistral", **{k: v for k, v in _LLAMA.items() if not k.endswith("_id")},
                               "max_position_embeddings": 4096, "sliding_window": 1024})
    assert (cfg.block_size, cfg.sliding_window) == (4096, 1024)
    assert set(cfg.layer_types) == {"sliding_attention"}


def test_bad_dtype_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown dtype 'float8'") as e:
        load(MODEL_PT, TOKENIZER_DIR, device="cpu", dtype="float8")
    assert "auto, float32, bfloat16 or float16" in e.value.hint
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("BFloat16", torch.device("cpu")) == torch.bfloat16


def test_llmbuilder_models_run_in_the_chosen_dtype():
    m = load(MODEL_PT, TOKENIZER_DIR, device="cpu", dtype="bfloat16")
    assert m.model.dtype == torch.bfloat16
    out = list(TokenGenerator(m.model, [5, 6, 7], GREEDY.replace(max_new_tokens=3)))
    assert len(out) == 3


def test_format_dispatch(tmp_path):
    assert model_format(resolve_model_file(MODEL_PT)) == "llmbuilder"
    blob = tmp_path / "weights.bin"
    blob.write_bytes(b"GGUF" + bytes(20))
    assert is_gguf(blob) and model_format(blob) == "gguf"
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="safetensors weights but no config.json"):
        resolve_model_file(tmp_path)
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
        from llmbuilder_cli.engine.loading import hf_tokenizer_path

        hf_tokenizer_path(resolve_model_file(tmp_path))
