"""Gemma 3 (engine/models/gemma3.py) against transformers' Gemma3ForCausalLM, on tiny random models small
enough to run everywhere: from a Hugging Face directory, and from a GGUF file written the way llama.cpp's
converter writes one (norm weights stored as 1 + weight, every 6th layer global). Sequences run past the
sliding window so the local layers' mask, their rope base and the KV cache are all exercised; `info`
describes the layer mix. The real Gemma 3 270M file is compared in tests/test_realmodel_gemma3.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from llmbuilder_cli.cli.info import format_info  # noqa: E402
from llmbuilder_cli.engine import loading  # noqa: E402
from llmbuilder_cli.engine.describe import describe  # noqa: E402
from llmbuilder_cli.engine.formats import hf_dir  # noqa: E402
from parity import assert_same_logits, engine_greedy, reference_greedy  # noqa: E402
from test_gguf import VOCAB, write_gguf  # noqa: E402

HIDDEN, HEADS, KV, HEAD_DIM, FFN, WINDOW = 32, 4, 2, 16, 64, 5
PROMPT = [3, 17, 99, 4, 250, 8, 61, 7, 12, 200, 5, 33]  # 12 tokens: longer than the window


def reference(layers: int, **overrides) -> "transformers.Gemma3ForCausalLM":
    """A random transformers Gemma 3 with non-trivial norm weights (they start at 0, i.e. a scale of 1)."""
    cfg = dict(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=layers,
        num_attention_heads=HEADS, num_key_value_heads=KV, head_dim=HEAD_DIM, max_position_embeddings=256,
        sliding_window=WINDOW, query_pre_attn_scalar=HEAD_DIM, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                         "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0}},
        pad_token_id=0, bos_token_id=260, eos_token_id=261,
    )
    cfg.update(overrides)
    torch.manual_seed(0)
    model = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**cfg)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.5)
    return model


def assert_same_model(ours, ref) -> None:
    assert_same_logits(ours, ref, PROMPT, split=7)  # the second chunk continues past the window
    assert engine_greedy(ours, PROMPT, 12) == reference_greedy(ref, PROMPT, 12)


def test_hf_directory_matches_transformers(tmp_path):
    # Layer types given explicitly, a query scale other than head_dim, and final logit soft-capping.
    ref = reference(4, layer_types=["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"],
                    query_pre_attn_scalar=24, final_logit_softcapping=3.0)
    ref.save_pretrained(tmp_path)
    d = hf_dir.inspect_hf_dir(tmp_path)
    assert d.config.model_type == "gemma3_text" and d.config.layer_types[1] == "full_attention"
    ours = loading._build_hf_dir_model(d, torch.float32, torch.device("cpu"), None)
    assert_same_model(ours, ref)


# GGUF names of a transformers Gemma 3 layer's tensors (llama.cpp's converter).
GEMMA3_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
}


def write_gemma3_gguf(path, ref, encode=lambda name, a: a) -> None:
    """What llama.cpp's converter writes: no Q/K permutation, norm weights plus one, no output.weight (tied).
    ``encode(name, array)`` may turn a layer's tensor into (block bytes, quant type)."""
    tensors = {}
    for name, t in ref.state_dict().items():
        a = t.float().numpy()
        if name == "model.embed_tokens.weight":
            tensors["token_embd.weight"] = a
        elif name == "model.norm.weight":
            tensors["output_norm.weight"] = a + 1
        elif name.startswith("model.layers."):
            _, _, i, rest = name.split(".", 3)
            gname = f"blk.{i}.{GEMMA3_NAMES[rest]}"
            tensors[gname] = a + 1 if rest.endswith("norm.weight") else encode(gname, a)
    c = ref.config
    write_gguf(path, "gemma3", tensors, {
        "gemma3.context_length": c.max_position_embeddings,
        "gemma3.embedding_length": c.hidden_size,
        "gemma3.block_count": c.num_hidden_layers,
        "gemma3.feed_forward_length": c.intermediate_size,
        "gemma3.attention.head_count": c.num_attention_heads,
        "gemma3.attention.head_count_kv": c.num_key_value_heads,
        "gemma3.attention.key_length": c.head_dim,
        "gemma3.attention.value_length": c.head_dim,
        "gemma3.attention.layer_norm_rms_epsilon": float(c.rms_norm_eps),
        "gemma3.rope.freq_base": 1_000_000.0,
        "gemma3.attention.sliding_window": c.sliding_window,
    })


def test_gguf_file_matches_transformers(tmp_path):
    ref = reference(7)  # the default pattern: layer 5 is global, the other six slide
    assert ref.config.layer_types[5] == "full_attention" and ref.config.layer_types.count("full_attention") == 1
    path = tmp_path / "tiny-gemma3.gguf"
    write_gemma3_gguf(path, ref)
    g, config, names = loading.read_gguf_model(path, torch.float32)
    assert config.model_type == "gemma3_text" and config.layer_types == tuple(ref.config.layer_types)
    assert (config.sliding_window, config.rope.theta, config.rope_local.theta) == (WINDOW, 1e6, 1e4)
    state = g.state_dict.renamed(names)
    # The stored 1 + w comes back as transformers' w (computed as transformers computes it).
    expected = ref.state_dict()["model.layers.0.self_attn.q_norm.weight"].numpy()
    assert np.array_equal(state["model.layers.0.self_attn.q_norm.weight"].numpy(), (expected + 1) - np.float32(1))
    ours = loading._build_hf_model(config, state, None)
    assert_same_model(ours, ref)


def test_info_describes_the_sliding_window_layers(tmp_path):
    path = tmp_path / "tiny-gemma3.gguf"
    write_gemma3_gguf(path, reference(7))
    d = describe(path)
    assert d["architecture"] == "gemma3_text" and d["layers"] == 7 and d["head_dim"] == HEAD_DIM
    assert d["attention"] == {"sliding_window": WINDOW, "sliding_layers": 6, "full_layers": 1,
                              "sliding_rope_theta": 10000.0}
    text = format_info(d)
    assert "Architecture  gemma3_text: 7 layers, 4 heads (2 key/value), width 32, tied output head" in text
    assert "Positions     rotary, theta 1e+06" in text
    assert "Attention     sliding window of 5 tokens in 6 layers (rotary theta 10000), full in 1" in text


def test_llama_models_have_no_attention_row(tmp_path):
    from test_gguf import llama_state, llama_to_gguf

    sd = llama_state(torch.Generator().manual_seed(0))
    path = write_gguf(tmp_path / "l.gguf", "llama", llama_to_gguf(sd, "llama", 4, 2), {
        "llama.context_length": 64, "llama.embedding_length": 32, "llama.block_count": 2,
        "llama.feed_forward_length": 64, "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
    })
    d = describe(path)
    assert d["attention"] is None and "Attention" not in format_info(d)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_norm_is_rms_norm_of_the_float32_input_bit_for_bit(dtype):
    """Gemma's RMSNorm (written out, as the Llama family's) gives exactly ``F.rms_norm`` over the input in
    float32, rounded once to the input's dtype, for the hidden width and per head (q/k norms)."""
    from llmbuilder_cli.engine.models.gemma3 import _norm

    g = torch.Generator().manual_seed(0)
    for shape in [(1, 1, 640), (1, 9, 640), (1, 9, 4, 256)]:
        x = (3 * torch.randn(*shape, generator=g)).to(dtype)
        scale = 1 + 0.1 * torch.randn(shape[-1], generator=g)
        expected = torch.nn.functional.rms_norm(x.float(), (shape[-1],), scale, 1e-6).to(dtype)
        assert torch.equal(_norm(x, scale, 1e-6), expected)
