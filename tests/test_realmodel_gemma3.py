"""A real Gemma 3 end to end: Gemma 3 270M (Q4_K_M GGUF: Q4_K, Q5_0, Q6_K and Q8_0 tensors) gives
transformers' greedy ids exactly, in float32.

transformers reads the GGUF (dequantizing it), generates the reference and saves the same float32 weights
with its tokenizer as a Hugging Face directory. Our engine loads (a) the GGUF file itself and (b) that
directory; both must tokenize the prompts as transformers does and reproduce its greedy continuations
token for token, for plain prompts and for prompts in Gemma's turn format (the file carries no chat
template, so the turns are written out). Prompts and continuations together stay under the 512-token
sliding window of the local layers; the window itself is covered by tests/test_gemma3.py. ``info``
describes the file.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import cli_env
from llmbuilder_cli import GenerationConfig
from llmbuilder_cli.engine.generate import TextStream
from llmbuilder_cli.engine.loading import load
from parity import gguf_reference
from real_models import gemma3_gguf

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]


def turn(user: str) -> str:
    """Gemma's chat format for one user turn, the model's turn opened (BOS comes from the tokenizer)."""
    return f"<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"


PROMPTS = [
    "The capital of France is",
    "Once upon a time",
    "def fibonacci(n):\n    ",
    turn("Write a haiku about the sea."),
    turn("What is 12 times 7?"),
]
NEW_TOKENS = 32
# EOS is held off (on both sides, by the same rule) so that every prompt compares all its tokens.
GREEDY = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)


@pytest.fixture(scope="session")
def gemma3_reference(tmp_path_factory):
    """transformers' tokenizer ids and greedy ids per prompt, and an HF directory transformers saved."""
    return gguf_reference(gemma3_gguf(), PROMPTS, NEW_TOKENS, tmp_path_factory.mktemp("gemma3-hf"))


@pytest.mark.parametrize("source", ["gguf", "hf-dir"])
def test_greedy_ids_and_tokenization_equal_transformers(gemma3_reference, source):
    ref = gemma3_reference
    loaded = load(ref["gguf"] if source == "gguf" else ref["dir"], device="cpu", dtype="float32")
    assert loaded.model.dtype == torch.float32 and loaded.info.architecture == "gemma3_text"
    assert loaded.tokenizer.eos_ids == ref["eos"]
    for prompt, (ref_prompt_ids, ref_new_ids) in zip(PROMPTS, ref["expected"]):
        r = TextStream(loaded, prompt, GREEDY).result()
        assert r.prompt_ids == ref_prompt_ids, prompt  # same tokenization, same BOS rule
        assert len(r.token_ids) == NEW_TOKENS and r.token_ids == ref_new_ids, prompt  # same greedy continuation
        text_ids = [i for i in ref_new_ids if i not in loaded.tokenizer.eos_ids]
        assert r.text == ref["tokenizer"].decode(text_ids, skip_special_tokens=True), prompt


def test_info_describes_the_file():
    gguf = gemma3_gguf()
    p = subprocess.run([sys.executable, "-m", "llmbuilder_cli", "info", str(gguf)],
                       capture_output=True, text=True, env=cli_env(), timeout=900)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "GGUF" in out and "Q4_K" in out
    assert "gemma3_text: 18 layers, 4 heads (1 key/value), width 640, tied output head" in out
    assert "Context       32,768 tokens" in out and "Vocabulary    262,144" in out
    assert "Positions     rotary, theta 1e+06" in out
    assert "Attention     sliding window of 512 tokens in 15 layers (rotary theta 10000), full in 3" in out
    assert "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818" in out
