"""--quantize from the command line: int8 weights on a real model, a clear refusal where unsupported."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import MODEL_PT, TOKENIZER_DIR, cli_cmd, cli_env


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli_cmd(*args), capture_output=True, text=True, env=cli_env(), timeout=300)


def test_quantize_is_refused_for_models_without_an_int8_path():
    p = run("generate", "text", "-m", str(MODEL_PT), "-t", str(TOKENIZER_DIR), "-p", "hi", "--quantize", "int8")
    assert p.returncode == 2 and p.stderr.startswith("Error: int8 quantization is not available"), p.stderr
    p = run("generate", "text", "-p", "hi", "--quantize", "int2")
    assert p.returncode == 2 and "unknown quantization 'int2'" in p.stderr


@pytest.mark.realmodel
@pytest.mark.slow
def test_int8_weights_still_answer_and_say_so_in_json():
    from real_models import smollm2_gguf

    p = run("generate", "text", "-m", str(smollm2_gguf()), "--chat", "-p", "What is the capital of France?",
            "--greedy", "--max-tokens", "24", "--quantize", "int8", "--json", "-q")
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    assert "Paris" in record["text"] and record["model"]["weights"] == "int8"
