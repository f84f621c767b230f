"""The KV-cached engine equals a naive full recompute, inside and beyond the block size.

The yardstick is tests/reference_gpt.py: an independent implementation of llmbuilder's forward and
greedy loop with no cache. Beyond the block size both must use llmbuilder's sliding window (last P
tokens at positions 0..P-1).
"""

from __future__ import annotations

import pytest
import torch

from llmbuilder_cli import GenerationConfig
from llmbuilder_cli.engine.generate import TokenGenerator
from llmbuilder_cli.engine.loading import read_checkpoint
from llmbuilder_cli.engine.models import LLMBuilderGPT
from reference_gpt import naive_greedy, naive_logits, random_llmbuilder_checkpoint


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model.pt"
    sd = random_llmbuilder_checkpoint(path, vocab=97, n_layer=2, n_head=4, n_embd=32, block_size=16, seed=3)
    config, state, _, _ = read_checkpoint(path)
    return LLMBuilderGPT(config, state), sd


def _engine_greedy(model, ids, steps, **cfg):
    config = GenerationConfig(do_sample=False, max_new_tokens=steps, **cfg)
    gen = TokenGenerator(model, ids, config)
    return list(gen), gen


@pytest.mark.parametrize("prompt_len", [1, 5, 15, 16, 20])
def test_greedy_equals_full_recompute_across_the_block_size(small_model, prompt_len):
    model, sd = small_model
    ids = [(7 * i + 3) % 97 for i in range(prompt_len)]
    steps = 40  # always runs past P = 16
    ours, gen = _engine_greedy(model, ids, steps)
    assert ours == naive_greedy(sd, 4, 16, ids, steps)
    # steps whose sequence was longer than P ran on the cropped window
    assert gen.window_slides == sum(1 for n in range(prompt_len, prompt_len + steps) if n > 16)


def test_greedy_with_repetition_penalty_equals_full_recompute(small_model):
    model, sd = small_model
    ids = [1, 2, 3, 4, 5]
    ours, _ = _engine_greedy(model, ids, 30, repetition_penalty=1.3)
    assert ours == naive_greedy(sd, 4, 16, ids, 30, repetition_penalty=1.3)


def test_cached_logits_equal_full_forward_at_every_position(small_model):
    model, sd = small_model
    ids = [(5 * i + 1) % 97 for i in range(16)]
    full = naive_logits(sd, 4, ids)  # (T, V)
    with torch.inference_mode():
        cache = model.new_cache(16)
        got = [model.forward(torch.tensor([ids[:3]]), start=0, cache=cache)[0]]  # prefill of 3
        for t in range(3, 16):
            got.append(model.forward(torch.tensor([[ids[t]]]), start=t, cache=cache)[0])
    torch.testing.assert_close(torch.stack(got), full[2:], rtol=0, atol=2e-5)


def test_forward_rejects_positions_beyond_the_block(small_model):
    model, _ = small_model
    with pytest.raises(ValueError):
        model.forward(torch.zeros(1, 17, dtype=torch.long))


def test_eos_stops_and_ignore_eos_continues(small_model):
    model, sd = small_model
    ids = [1, 2, 3]
    expected = naive_greedy(sd, 4, 16, ids, 12)
    eos = expected[4]
    first = expected.index(eos)
    stopped = list(TokenGenerator(model, ids, GenerationConfig(do_sample=False, max_new_tokens=12), eos_ids=[eos]))
    assert stopped == expected[: first + 1]
    go_on = list(TokenGenerator(model, ids, GenerationConfig(do_sample=False, max_new_tokens=12, ignore_eos=True),
                                eos_ids=[eos]))
    assert go_on == expected


def test_min_new_tokens_defers_eos(small_model):
    model, sd = small_model
    ids = [1, 2, 3]
    expected = naive_greedy(sd, 4, 16, ids, 12)
    eos = expected[0]  # the very first greedy token becomes "EOS"
    out = list(TokenGenerator(model, ids, GenerationConfig(do_sample=False, max_new_tokens=12, min_new_tokens=3),
                              eos_ids=[eos]))
    assert eos not in out[:3]
    assert len(out) >= 4
