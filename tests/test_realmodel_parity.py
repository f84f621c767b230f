"""A real model end to end: SmolLM2-135M-Instruct (Q4_1 GGUF) gives transformers' greedy ids exactly.

transformers reads the GGUF (dequantizing it), generates the reference, and saves the same float32 weights
and its tokenizer as a Hugging Face directory. Our engine then loads (a) that directory and (b) the GGUF
file itself; both must reproduce transformers' greedy continuations token for token and tokenize the
prompts as transformers' tokenizer does. bfloat16 must run and stay close to float32.
"""

from __future__ import annotations

import pytest
import torch

from llmbuilder_cli import GenerationConfig
from llmbuilder_cli.engine.generate import TextStream
from llmbuilder_cli.engine.loading import load
from parity import gguf_reference
from real_models import smollm2_gguf

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]

PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    ",
]
NEW_TOKENS = 64
# EOS is held off (on both sides, by the same rule) so that every prompt compares all 64 tokens.
GREEDY = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)


@pytest.fixture(scope="session")
def smollm2_reference(tmp_path_factory):
    """transformers' tokenizer ids and greedy ids per prompt, and an HF directory transformers saved."""
    return gguf_reference(smollm2_gguf(), PROMPTS, NEW_TOKENS, tmp_path_factory.mktemp("smollm2-hf"))


@pytest.mark.parametrize("source", ["hf-dir", "gguf"])
def test_greedy_ids_and_tokenization_equal_transformers(smollm2_reference, source):
    ref = smollm2_reference
    loaded = load(ref["dir"] if source == "hf-dir" else ref["gguf"], device="cpu", dtype="float32")
    assert loaded.model.dtype == torch.float32 and loaded.info.architecture == "llama"
    assert loaded.tokenizer.eos_ids == ref["eos"]
    for prompt, (ref_prompt_ids, ref_new_ids) in zip(PROMPTS, ref["expected"]):
        r = TextStream(loaded, prompt, GREEDY).result()
        assert r.prompt_ids == ref_prompt_ids, prompt  # same tokenization, same BOS rule
        assert len(r.token_ids) == NEW_TOKENS and r.token_ids == ref_new_ids, prompt  # same greedy continuation
        text_ids = [i for i in ref_new_ids if i not in loaded.tokenizer.eos_ids]
        assert r.text == ref["tokenizer"].decode(text_ids, skip_special_tokens=True)


def test_bfloat16_runs_and_agrees_with_float32_on_most_first_tokens(smollm2_reference):
    loaded = load(smollm2_reference["gguf"], device="cpu", dtype="bfloat16")
    assert loaded.model.dtype == torch.bfloat16 and loaded.identity()["dtype"] == "bfloat16"
    agree = total = 0
    for prompt, (_, ref_new_ids) in zip(PROMPTS, smollm2_reference["expected"]):
        ids = TextStream(loaded, prompt, GREEDY.replace(max_new_tokens=8, min_new_tokens=8)).result().token_ids
        assert ids, prompt
        agree += sum(a == b for a, b in zip(ids, ref_new_ids))
        total += min(len(ids), len(ref_new_ids))
    assert agree >= total / 2, (agree, total)
