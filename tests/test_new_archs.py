"""Qwen3 and Phi-3 (engine/models/llama.py) against transformers' Qwen3ForCausalLM and Phi3ForCausalLM, on tiny
random models: from a Hugging Face directory, and from a GGUF file written the way llama.cpp's converter writes
one (Qwen3's q/k norms as attn_q_norm/attn_k_norm; Phi-3's fused attn_qkv and ffn_up = gate|up). Float32
logits of a full forward and of a prompt run in two chunks with a cache, greedy ids with and without the
cache, and a batched decoding step; `info` describes both; Phi-3's longrope scaling is refused in one line
(and is `info`'s verdict)."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from conftest import cli_cmd, cli_env  # noqa: E402
from parity import assert_same_logits, engine_greedy, reference_greedy  # noqa: E402
from llmbuilder_cli.cli.info import format_info  # noqa: E402
from llmbuilder_cli.engine import loading  # noqa: E402
from llmbuilder_cli.engine.describe import describe  # noqa: E402
from llmbuilder_cli.engine.formats import hf_dir  # noqa: E402
from llmbuilder_cli.errors import ModelLoadError  # noqa: E402
from test_gguf import VOCAB, write_gguf  # noqa: E402

HIDDEN, HEADS, KV, FFN, LAYERS = 32, 4, 2, 64, 3
QWEN3_HEAD_DIM = 16  # H·D = 64, twice the width: head_dim is not hidden / heads
PROMPT = [3, 17, 99, 4, 250, 8, 61, 7, 12, 200, 5, 33]
STEPS = 12


def reference(family: str, **overrides):
    """A random transformers model of ``family`` ("qwen3" or "phi3") with non-trivial norm weights."""
    cfg = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
               num_attention_heads=HEADS, num_key_value_heads=KV, max_position_embeddings=128,
               rms_norm_eps=1e-6, tie_word_embeddings=False, initializer_range=0.2,
               pad_token_id=0, bos_token_id=260, eos_token_id=261)
    if family == "qwen3":
        cfg.update(head_dim=QWEN3_HEAD_DIM, rope_theta=1_000_000.0)
        config, model_class = transformers.Qwen3Config, transformers.Qwen3ForCausalLM
    else:
        cfg.update(rope_theta=10_000.0)
        config, model_class = transformers.Phi3Config, transformers.Phi3ForCausalLM
    cfg.update(overrides)
    torch.manual_seed(0)
    model = model_class(config(**cfg)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.5)
    return model


def greedy_uncached(model, ids: list[int], n: int) -> list[int]:
    seq = list(ids)
    with torch.inference_mode():
        for _ in range(n):
            seq.append(int(model.forward(torch.tensor([seq]))[0].argmax()))
    return seq[len(ids):]


def assert_same_model(ours, ref) -> None:
    assert_same_logits(ours, ref, PROMPT, split=7)
    want = reference_greedy(ref, PROMPT, STEPS)
    assert engine_greedy(ours, PROMPT, STEPS, split=5) == want
    assert greedy_uncached(ours, PROMPT, STEPS) == want


def assert_batched_step_matches(ours) -> None:
    """One batched decoding step over two sequences of different lengths equals each run alone."""
    assert ours.batched_decode
    prompts = [PROMPT, PROMPT[:8]]
    caches, alone = [], []
    with torch.inference_mode():
        for p in prompts:
            cache = ours.new_cache(64)
            ours.forward(torch.tensor([p[:-1]]), 0, cache)
            caches.append(cache)
            solo = ours.new_cache(64)
            ours.forward(torch.tensor([p[:-1]]), 0, solo)
            alone.append(ours.forward(torch.tensor([p[-1:]]), len(p) - 1, solo)[0])
        batched = ours.decode_step(torch.tensor([p[-1] for p in prompts]), [len(p) - 1 for p in prompts], caches)
    for row, solo in zip(batched, alone):
        torch.testing.assert_close(row, solo, atol=1e-5, rtol=1e-5)


def load_hf_dir(path):
    d = hf_dir.inspect_hf_dir(path)
    return d, loading._build_hf_dir_model(d, torch.float32, torch.device("cpu"), None)


# ------------------------------------------------------------------------------------- GGUF writers
_LLAMA_CPP_NAMES = {  # transformers layer tensor -> llama.cpp's name, both families
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.qkv_proj.weight": "attn_qkv.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.gate_up_proj.weight": "ffn_up.weight",  # Phi-3: gate rows then up rows, as stored
    "mlp.down_proj.weight": "ffn_down.weight",
}


def write_family_gguf(path, ref, arch: str, extra_tensors: dict | None = None, metadata: dict | None = None) -> None:
    """What llama.cpp's converter writes for a Qwen3 / Phi-3 model: no Q/K permutation (only llama has one);
    ``metadata``: further keys (e.g. Phi-3's ``phi3.attention.sliding_window``)."""
    tensors = {}
    for name, t in ref.state_dict().items():
        a = t.float().numpy()
        if name == "model.embed_tokens.weight":
            tensors["token_embd.weight"] = a
        elif name == "model.norm.weight":
            tensors["output_norm.weight"] = a
        elif name == "lm_head.weight":
            tensors["output.weight"] = a
        else:
            _, _, i, rest = name.split(".", 3)
            tensors[f"blk.{i}.{_LLAMA_CPP_NAMES[rest]}"] = a
    tensors.update(extra_tensors or {})
    c = ref.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    write_gguf(path, arch, tensors, {
        f"{arch}.context_length": c.max_position_embeddings,
        f"{arch}.embedding_length": c.hidden_size,
        f"{arch}.block_count": c.num_hidden_layers,
        f"{arch}.feed_forward_length": c.intermediate_size,
        f"{arch}.attention.head_count": c.num_attention_heads,
        f"{arch}.attention.head_count_kv": c.num_key_value_heads,
        f"{arch}.attention.key_length": head_dim,
        f"{arch}.attention.value_length": head_dim,
        f"{arch}.rope.dimension_count": head_dim,
        f"{arch}.attention.layer_norm_rms_epsilon": float(c.rms_norm_eps),
        f"{arch}.rope.freq_base": float(ref.config.rope_parameters["rope_theta"]),
        **(metadata or {}),
    })


def load_gguf(path):
    g, config, names = loading.read_gguf_model(path, torch.float32)
    return config, loading._build_hf_model(config, g.state_dict.renamed(names), None)


# ------------------------------------------------------------------------------------------- Qwen3
def test_qwen3_hf_directory_matches_transformers(tmp_path):
    ref = reference("qwen3")
    ref.save_pretrained(tmp_path)
    d, ours = load_hf_dir(tmp_path)
    assert d.config.model_type == "qwen3" and d.config.head_dim == QWEN3_HEAD_DIM and d.config.qk_norm
    assert d.config.num_parameters == sum(p.numel() for p in ref.parameters())
    assert_same_model(ours, ref)
    assert_batched_step_matches(ours)


def test_qwen3_tied_with_attention_bias_matches_transformers(tmp_path):
    ref = reference("qwen3", tie_word_embeddings=True, attention_bias=True)
    ref.save_pretrained(tmp_path)
    d, ours = load_hf_dir(tmp_path)
    assert d.config.qkv_bias and d.config.o_bias and d.config.tie_word_embeddings
    assert_same_model(ours, ref)


def test_qwen3_gguf_matches_transformers(tmp_path):
    ref = reference("qwen3")
    path = tmp_path / "tiny-qwen3.gguf"
    write_family_gguf(path, ref, "qwen3")
    config, ours = load_gguf(path)
    assert config.model_type == "qwen3" and config.head_dim == QWEN3_HEAD_DIM and config.rope.theta == 1e6
    assert_same_model(ours, ref)
    assert_batched_step_matches(ours)


def test_qwen3_fused_qkv_layout_matches_transformers(tmp_path, monkeypatch):
    # 16-bit and quantized models fuse q|k|v into one product and norm queries and keys in one call; run
    # that layout in float32 so it can be compared exactly.
    from llmbuilder_cli.engine.kernels import Concat
    from llmbuilder_cli.engine.models import llama

    monkeypatch.setattr(llama, "fuses_layers", lambda dtype, quantize: True)
    ref = reference("qwen3")
    ref.save_pretrained(tmp_path)
    _, ours = load_hf_dir(tmp_path)
    assert type(ours.blocks[0].qkv) is not Concat and ours.blocks[0].qk_norm.shape == (HEADS + KV, QWEN3_HEAD_DIM)
    assert_same_model(ours, ref)
    assert_batched_step_matches(ours)


def test_qwen3_int8_and_bfloat16_run_close_to_float32(tmp_path):
    ref = reference("qwen3")
    ref.save_pretrained(tmp_path)
    d = hf_dir.inspect_hf_dir(tmp_path)
    exact = loading._build_hf_dir_model(d, torch.float32, torch.device("cpu"), None)
    ids = torch.tensor([PROMPT])
    with torch.inference_mode():
        want = exact.forward(ids)[0]
        for dtype, quantize in ((torch.float32, "int8"), (torch.bfloat16, None)):
            got = loading._build_hf_dir_model(d, dtype, torch.device("cpu"), quantize).forward(ids)[0]
            assert torch.nn.functional.cosine_similarity(got, want, dim=0) > 0.99, (dtype, quantize)


# ------------------------------------------------------------------------------------------- Phi-3
def test_phi3_hf_directory_matches_transformers(tmp_path):
    ref = reference("phi3")
    ref.save_pretrained(tmp_path)
    assert "model.layers.0.self_attn.qkv_proj.weight" in ref.state_dict()
    d, ours = load_hf_dir(tmp_path)
    assert d.config.model_type == "phi3" and d.config.fused_weights
    assert d.config.num_parameters == sum(p.numel() for p in ref.parameters())
    assert_same_model(ours, ref)
    assert_batched_step_matches(ours)


def test_phi3_gguf_matches_transformers(tmp_path):
    ref = reference("phi3")
    path = tmp_path / "tiny-phi3.gguf"
    write_family_gguf(path, ref, "phi3")
    config, ours = load_gguf(path)
    assert config.model_type == "phi3" and config.fused_weights and not config.tie_word_embeddings
    assert_same_model(ours, ref)
    assert_batched_step_matches(ours)


def test_phi3_int8_from_gguf_runs_close_to_float32(tmp_path):
    ref = reference("phi3")
    path = tmp_path / "tiny-phi3.gguf"
    write_family_gguf(path, ref, "phi3")
    _, exact = load_gguf(path)
    g, config, names = loading.read_gguf_model(path, torch.float32)
    int8 = loading._build_hf_model(config, g.state_dict.renamed(names), "int8")
    ids = torch.tensor([PROMPT])
    with torch.inference_mode():
        got, want = int8.forward(ids)[0], exact.forward(ids)[0]
    assert torch.nn.functional.cosine_similarity(got, want, dim=0) > 0.99


LONGROPE = {"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [2.0] * 4,
            "original_max_position_embeddings": 64}


def test_phi3_longrope_is_refused_in_one_line(tmp_path):
    ref = reference("phi3")
    ref.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("rope_parameters", None)
    cfg["rope_scaling"] = LONGROPE
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError) as e:
        hf_dir.inspect_hf_dir(tmp_path)
    assert "RoPE scaling type 'longrope' is not supported" in e.value.message
    r = subprocess.run(cli_cmd("generate", "text", "-m", str(tmp_path), "-p", "hi"), capture_output=True, text=True,
                       env=cli_env(), timeout=120)
    assert r.returncode == 3 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "'longrope'" in lines[0], r.stderr
    # info describes the directory all the same, and gives the same refusal as its verdict
    r = subprocess.run(cli_cmd("info", str(tmp_path)), capture_output=True, text=True, env=cli_env(), timeout=120)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.splitlines()[-1] == f"Runs here     no — {lines[0].removeprefix('Error: ')}"


def test_phi3_gguf_with_longrope_factors_is_refused(tmp_path):
    ref = reference("phi3")
    path = tmp_path / "long-phi3.gguf"
    half = HIDDEN // HEADS // 2
    write_family_gguf(path, ref, "phi3", {"rope_factors_long.weight": torch.full((half,), 2.0).numpy(),
                                          "rope_factors_short.weight": torch.ones(half).numpy()})
    with pytest.raises(ModelLoadError) as e:
        loading.read_gguf_model(path, torch.float32)
    assert "RoPE scaling type 'longrope' is not supported" in e.value.message


# -------------------------------------------------------------------------------------------- info
@pytest.mark.parametrize("family", ["qwen3", "phi3"])
def test_info_describes_the_family(tmp_path, family):
    ref = reference(family)
    path = tmp_path / f"tiny-{family}.gguf"
    write_family_gguf(path, ref, family)
    ref.save_pretrained(tmp_path / "hf")
    for source in (path, tmp_path / "hf"):
        d = describe(source)
        assert d["architecture"] == family and d["layers"] == LAYERS
        text = format_info(d)
        assert f"Architecture  {family}: {LAYERS} layers, {HEADS} heads ({KV} key/value), width {HIDDEN}" in text
