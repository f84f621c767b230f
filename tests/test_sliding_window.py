"""Sliding-window attention in the Llama family (engine/models/llama.py) against transformers, on tiny random
models whose window (5 positions) is far shorter than the prompt and the continuation, so every path
passes it: a whole prompt in one forward (banded mask), a prompt in two chunks through the cache, one
token at a time through the cache (the last W cached positions), without a cache, and a batched decoding
step. Mistral and Phi-3 slide in every layer; Qwen2 and Qwen3 (``use_sliding_window``) only in the layers
``max_window_layers`` or ``layer_types`` pick, so full and sliding layers mix. `info` names the window."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

from parity import assert_same_logits, engine_greedy, reference_greedy  # noqa: E402
from llmbuilder_cli.cli.info import format_info  # noqa: E402
from llmbuilder_cli.engine.describe import describe  # noqa: E402
from llmbuilder_cli.engine.formats import hf_dir  # noqa: E402
from llmbuilder_cli.errors import ModelLoadError  # noqa: E402
from test_gguf import VOCAB  # noqa: E402
from test_new_archs import (assert_batched_step_matches, greedy_uncached, load_gguf, load_hf_dir,  # noqa: E402
                            write_family_gguf)

WINDOW = 5
HIDDEN, HEADS, KV, FFN, LAYERS = 32, 4, 2, 64, 3
PROMPT = [3, 17, 99, 4, 250, 8, 61, 7, 12, 200, 5, 33]  # 12 positions: more than twice the window
STEPS = 16

FAMILIES = {  # name: (config class, model class, settings that switch the window on)
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=WINDOW)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(sliding_window=WINDOW)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM",
              dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1)),  # layers 1, 2 slide
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM",
              dict(use_sliding_window=True, sliding_window=WINDOW,
                   layer_types=["sliding_attention", "full_attention", "sliding_attention"])),
}
SLIDING_LAYERS = {"mistral": 3, "phi3": 3, "qwen2": 2, "qwen3": 2}


def reference(family: str, window: bool = True):
    """A random transformers model of ``family`` with its sliding window (or without: ``window=False``)."""
    config_name, model_name, switch = FAMILIES[family]
    cfg = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
               num_attention_heads=HEADS, num_key_value_heads=KV, max_position_embeddings=128,
               rms_norm_eps=1e-6, tie_word_embeddings=False, initializer_range=0.2, rope_theta=10_000.0,
               pad_token_id=0, bos_token_id=260, eos_token_id=261)
    if window:
        cfg.update(switch)
    elif family == "mistral":
        cfg.update(sliding_window=None)
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(getattr(transformers, config_name)(**cfg)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.5)
    return model


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sliding_window_matches_transformers_past_the_window(tmp_path, family):
    ref = reference(family)
    ref.save_pretrained(tmp_path)
    d, ours = load_hf_dir(tmp_path)
    c = d.config
    assert (c.sliding_window, c.block_size) == (WINDOW, 128)  # the whole trained context, not the window
    assert sum(t == "sliding_attention" for t in c.layer_types) == SLIDING_LAYERS[family]
    assert_same_logits(ours, ref, PROMPT, split=7)
    want = reference_greedy(ref, PROMPT, STEPS)
    assert engine_greedy(ours, PROMPT, STEPS, split=5) == want
    assert engine_greedy(ours, PROMPT, STEPS) == want
    assert greedy_uncached(ours, PROMPT, STEPS) == want
    assert_batched_step_matches(ours)
    assert_packed_prefill_matches(ours)
    # The window decides the result here: the same weights attending to everything continue differently.
    assert reference_greedy(reference(family, window=False), PROMPT, STEPS) != want


def assert_packed_prefill_matches(ours) -> None:
    """Prompts run packed (``prefill``, batched prompt files) past the window: each one's last logits as
    its own forward gives them, from the start and after a cached first part."""
    prompts, starts = [PROMPT, PROMPT[3:11], PROMPT[:1]], [0, 0, 0]
    with torch.inference_mode():
        alone = [ours.forward(torch.tensor([p]))[0] for p in prompts]
        packed = ours.prefill([torch.tensor(p) for p in prompts], starts, [ours.new_cache(64) for _ in prompts])
        for row, want in zip(packed, alone):
            torch.testing.assert_close(row, want, atol=1e-5, rtol=1e-5)
        cache = ours.new_cache(64)
        ours.forward(torch.tensor([PROMPT[:6]]), 0, cache)
        rest = ours.prefill([torch.tensor(PROMPT[6:])], [6], [cache])[0]
    torch.testing.assert_close(rest, alone[0], atol=1e-5, rtol=1e-5)


def test_phi3_gguf_sliding_window_matches_transformers(tmp_path):
    ref = reference("phi3")
    path = tmp_path / "tiny-phi3-swa.gguf"
    write_family_gguf(path, ref, "phi3", metadata={"phi3.attention.sliding_window": WINDOW})
    config, ours = load_gguf(path)
    assert (config.sliding_window, config.block_size) == (WINDOW, 128)
    assert_same_logits(ours, ref, PROMPT, split=7)
    assert engine_greedy(ours, PROMPT, STEPS, split=5) == reference_greedy(ref, PROMPT, STEPS)


def test_info_names_the_window(tmp_path):
    reference("mistral").save_pretrained(tmp_path / "mistral")
    reference("qwen2").save_pretrained(tmp_path / "qwen2")
    d = describe(tmp_path / "mistral")
    assert d["context_length"] == 128
    assert d["attention"] == {"sliding_window": WINDOW, "sliding_layers": 3, "full_layers": 0,
                              "sliding_rope_theta": None}
    assert "Attention     sliding window of 5 tokens in every layer" in format_info(d)
    text = format_info(describe(tmp_path / "qwen2"))
    assert "Attention     sliding window of 5 tokens in 2 layers, full in 1" in text


def test_window_settings_follow_the_reference_configurations():
    base = {"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 4,
            "intermediate_size": 64,
            "vocab_size": 300, "max_position_embeddings": 4096}
    mistral = hf_dir.model_config({"model_type": "mistral", **base})
    assert (mistral.sliding_window, mistral.block_size) == (4096, 4096)  # Mistral's default window
    assert hf_dir.model_config({"model_type": "mistral", **base, "sliding_window": None}).sliding_window is None
    assert hf_dir.model_config({"model_type": "phi3", **base}).sliding_window is None
    # Qwen2/Qwen3 slide only when use_sliding_window says so, from max_window_layers on (default 28).
    assert hf_dir.model_config({"model_type": "qwen2", **base, "sliding_window": 64}).sliding_window is None
    q = hf_dir.model_config({"model_type": "qwen2", **base, "use_sliding_window": True, "sliding_window": 64,
                             "max_window_layers": 3})
    assert (q.sliding_window, q.layer_types) == (64, ("full_attention",) * 3 + ("sliding_attention",))
    every = hf_dir.model_config({"model_type": "qwen2", **base, "use_sliding_window": True, "max_window_layers": 0})
    assert every.layer_types == ("sliding_attention",) * 4
    assert hf_dir.model_config({"model_type": "qwen3", **base, "use_sliding_window": True}).sliding_window is None
    with pytest.raises(ModelLoadError, match="layer_types must list 4 entries"):
        hf_dir.model_config({"model_type": "qwen3", **base, "use_sliding_window": True,
                             "layer_types": ["sliding_attention"]})
    with pytest.raises(ModelLoadError, match="sliding_window must be a whole number > 0"):
        hf_dir.model_config({"model_type": "mistral", **base, "sliding_window": 0})


def test_bfloat16_one_token_steps_read_only_the_window(tmp_path):
    """bfloat16 one-token steps take their own attention path (query heads regrouped per key/value head):
    past the window it must read the last W positions, as the banded mask of a whole forward does."""
    from llmbuilder_cli.engine import loading

    ref = reference("mistral")
    ref.save_pretrained(tmp_path / "swa")
    reference("mistral", window=False).save_pretrained(tmp_path / "full")

    def build(folder):
        return loading._build_hf_dir_model(hf_dir.inspect_hf_dir(folder), torch.bfloat16, torch.device("cpu"), None)

    swa, full = build(tmp_path / "swa"), build(tmp_path / "full")
    ids = torch.tensor([PROMPT])
    with torch.inference_mode():
        cache = swa.new_cache(64)
        swa.forward(ids[:, :-1], 0, cache)
        step = swa.forward(ids[:, -1:], len(PROMPT) - 1, cache)[0]  # (V,) one token, through the cache
        whole = swa.forward(ids)[0]  # (V,) the banded mask
        unwindowed = full.forward(ids)[0]
    near, far = (step - whole).abs().max(), (step - unwindowed).abs().max()
    assert near < far / 4, (near, far)
