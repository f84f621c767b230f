"""``llmbuilder info``: what a model file is, for llmbuilder's own files and for broken ones, and whether it
runs here (for GGUF files and Hugging Face directories of any architecture)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType as Q

from conftest import BEST_CKPT, FIXTURE, MODEL_PT, TOKENIZER_DIR
from llmbuilder_cli.api import model_info
from llmbuilder_cli.cli.info import format_info
from llmbuilder_cli.engine import limits
from reference_gpt import random_llmbuilder_checkpoint
from test_cli import assert_one_line_error, run
from test_gguf import VOCAB, llama_meta, llama_state, llama_to_gguf, write_gguf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import fuzz_model_files as fuzz  # noqa: E402


def test_info_of_the_fixture_model():
    p = run("info", str(MODEL_PT))
    assert p.returncode == 0, p.stderr
    sha = hashlib.sha256(MODEL_PT.read_bytes()).hexdigest()
    size = MODEL_PT.stat().st_size
    assert p.stdout == (
        f"Path          {MODEL_PT.resolve()}\n"
        "Format        llmbuilder model (save_model)\n"
        "Architecture  llmbuilder-gpt: 2 layers, 4 heads, width 64, tied output head\n"
        "Parameters    140,672 (140.67K)\n"
        "Context       128 tokens\n"
        "Vocabulary    512\n"
        "Weights       float32 in the file, run in float32\n"
        f"File size     {size / 1024:.1f} KiB ({size:,} bytes)\n"
        f"SHA-256       {sha}\n"
        "Tokenizer     sentencepiece, 512 tokens, EOS </s> (id 3)\n"
        f"              {(TOKENIZER_DIR / 'tokenizer.model').resolve()}\n"
        "Runs here     yes\n"
    )
    assert p.stderr == ""


def test_info_json_of_a_run_directory_and_a_trainer_checkpoint():
    d = json.loads(run("info", str(FIXTURE), "--json").stdout)
    assert d["path"] == str(MODEL_PT.resolve())
    assert (d["parameters"], d["layers"], d["heads"], d["embedding_dim"]) == (140672, 2, 4, 64)
    assert (d["context_length"], d["vocab_size"], d["stored_dtype"]) == (128, 512, "float32")
    assert d["tokenizer"]["eos"] == [{"id": 3, "token": "</s>"}]
    b = json.loads(run("info", str(BEST_CKPT), "--json").stdout)
    assert b["format"] == "llmbuilder trainer checkpoint"
    assert b["tokenizer"]["path"] == d["tokenizer"]["path"]  # found beside the run directory


def test_info_without_a_tokenizer_and_with_fp16_weights(tmp_path):
    f = tmp_path / "model.pt"
    random_llmbuilder_checkpoint(f, vocab=97, n_layer=1, n_head=2, n_embd=16, block_size=8)
    ck = torch.load(f, weights_only=True)
    ck["model_state_dict"] = {k: v.half() for k, v in ck["model_state_dict"].items()}
    torch.save(ck, f)
    p = run("info", str(f))
    assert p.returncode == 0, p.stderr
    assert "Weights       float16 in the file, run in float32\n" in p.stdout
    assert "Tokenizer     not found\n              note: none beside the model; pass --tokenizer DIR\n" in p.stdout
    # A tokenizer bigger than the model is flagged, not fatal.
    p = run("info", str(f), "-t", str(TOKENIZER_DIR))
    assert p.returncode == 0 and "not this model's tokenizer" in p.stdout


def test_info_errors(tmp_path):
    assert_one_line_error(run("info", str(tmp_path / "nope.pt")), 3, "model not found")
    assert_one_line_error(run("info", str(MODEL_PT), "-t", str(tmp_path)), 3, "no tokenizer.model or tokenizer.json")
    old = tmp_path / "old.pt"
    random_llmbuilder_checkpoint(old, n_head=4, n_embd=32)
    ck = torch.load(old, weights_only=True)
    torch.save({"model_state_dict": ck["model_state_dict"], "training_state": {"epoch": 1}}, old)
    assert_one_line_error(run("info", str(old)), 3, "--num-heads")
    p = run("info", str(old), "--num-heads", "4", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["heads"] == 4


def test_one_layer_and_one_head_are_singular(tmp_path):
    f = tmp_path / "model.pt"
    random_llmbuilder_checkpoint(f, vocab=97, n_layer=1, n_head=1, n_embd=16, block_size=8)
    p = run("info", str(f))
    assert p.returncode == 0, p.stderr
    assert "Architecture  llmbuilder-gpt: 1 layer, 1 head, width 16, tied output head\n" in p.stdout


# ----------------------------------------------------------------------- whether a model runs here
# Any GGUF file or Hugging Face directory that can be parsed is described, from its metadata alone, with a
# verdict from the loader's own checks: `Runs here  yes`, or `no — <the loader's refusal>` (exit code 0:
# the description succeeded; --json's "runs" is what a script tests).
LONGROPE = {"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [2.0] * 4,
            "original_max_position_embeddings": 64}


def tiny_llama_gguf(path: Path, encode=lambda name, a: a, **meta) -> Path:
    sd = llama_state(torch.Generator().manual_seed(0), layers=1)
    return write_gguf(path, "llama", llama_to_gguf(sd, "llama", 4, 2, encode=encode), llama_meta(layers=1, **meta))


def head_lines(path: Path) -> str:
    """Path, SHA-256 and File size lines, which every description has."""
    size = path.stat().st_size
    return (f"File size     {size / 1024:.1f} KiB ({size:,} bytes)\n"
            f"SHA-256       {hashlib.sha256(path.read_bytes()).hexdigest()}\n")


def test_a_gguf_of_an_architecture_we_do_not_run_is_described_with_the_reason(tmp_path):
    path = write_gguf(tmp_path / "falcon.gguf", "falcon", {
        "token_embd.weight": np.zeros((VOCAB, 32), np.float32),
        "blk.0.attn_norm.weight": np.ones(32, np.float32),
        "blk.0.attn_qkv.weight": (np.zeros((96, 34), np.uint8), Q.Q8_0),  # 96 rows of one Q8_0 block
    }, {"falcon.block_count": 1, "falcon.embedding_length": 32, "falcon.attention.head_count": 4,
        "falcon.context_length": 2048, "tokenizer.chat_template": "{{ messages }}"})
    p = run("info", str(path))
    assert (p.returncode, p.stderr) == (0, "")
    assert p.stdout == (
        f"Path          {path.resolve()}\n"
        "Format        GGUF\n"
        "Architecture  falcon: 1 layer, 4 heads, width 32, tied output head\n"
        f"Parameters    {VOCAB * 32 + 32 + 96 * 32:,} ({(VOCAB * 32 + 32 + 96 * 32) / 1e3:.2f}K)\n"
        "Context       2,048 tokens\n"
        f"Vocabulary    {VOCAB}\n"
        "Tensors       F32: 2 tensors, 33.0 KiB; Q8_0: 1 tensor, 3.2 KiB\n"
        + head_lines(path) +
        "Tokenizer     huggingface, 263 tokens, EOS <|im_end|> (id 261)\n"
        f"              {path.resolve()}\n"
        "Chat          chat template included\n"
        "Runs here     no — falcon.gguf is a 'falcon' model — supported GGUF architectures: llama, qwen2, qwen3, "
        "phi3, gpt2, gemma3\n"
    )
    d = json.loads(run("info", str(path), "--json").stdout)
    assert d["runs"] is False and d["quantize"] is None and d["run_dtype"] is None and d["refused_by"] == "model"
    assert d["why"] == ("falcon.gguf is a 'falcon' model — supported GGUF architectures: llama, qwen2, qwen3, phi3, "
                        "gpt2, gemma3")
    assert (d["architecture"], d["layers"], d["heads"], d["embedding_dim"], d["vocab_size"]) == ("falcon", 1, 4, 32,
                                                                                               VOCAB)
    assert d["tensor_types"] == [{"type": "F32", "tensors": 2, "bytes": (VOCAB * 32 + 32) * 4},
                                 {"type": "Q8_0", "tensors": 1, "bytes": 96 * 34}]
    assert d["tokenizer"]["model"] == "gpt2" and d["tokenizer"]["chat_template"] is True


def test_a_tensor_type_we_cannot_dequantize_is_named_in_the_verdict(tmp_path):
    def encode(name, a):  # Q8_1: 32-element blocks of 40 bytes, a type this reader does not dequantize
        if name != "blk.0.ffn_up.weight":
            return a
        return np.zeros((a.shape[0], a.shape[1] // 32 * 40), np.uint8), Q.Q8_1

    path = tiny_llama_gguf(tmp_path / "q81.gguf", encode)
    p = run("info", str(path))
    assert (p.returncode, p.stderr) == (0, "")
    lines = p.stdout.splitlines()
    assert "Tensors       F32: 10 tensors, 61.2 KiB; Q8_1: 1 tensor, 2.5 KiB" in lines
    assert lines[-1] == ("Runs here     no — q81.gguf: tensor blk.0.ffn_up.weight has type Q8_1 — supported tensor "
                         "types: F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, "
                         "IQ4_XS, BF16")
    assert not any(line.startswith("Weights") for line in lines)  # nothing runs: the Tensors line says what is stored


def test_a_supported_tiny_gguf_runs_here(tmp_path):
    path = tiny_llama_gguf(tmp_path / "ok.gguf")
    d = model_info(path)
    assert (d["runs"], d["why"], d["quantize"], d["run_dtype"], d["refused_by"]) == (True, None, None, "float32", None)
    assert d["tensor_types"] == [{"type": "F32", "tensors": 11, "bytes": 17728 * 4}]
    lines = format_info(d).splitlines()
    assert "Weights       F32 (11 tensors) in the file, run in float32" in lines
    assert lines[-1] == "Runs here     yes"


def test_only_the_header_is_read_a_file_cut_short_is_described(tmp_path):
    whole = tiny_llama_gguf(tmp_path / "whole.gguf").read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(whole[:-3000])  # the last tensor's data is cut short: no tensor data is needed to describe
    d = model_info(path)
    assert (d["architecture"], d["layers"], d["parameters"]) == ("llama", 1, 17728)
    assert d["runs"] is False
    assert format_info(d).splitlines()[-1] == (
        "Runs here     no — cut.gguf: corrupt GGUF header: tensor 'blk.0.ffn_down.weight' (8192 bytes at offset "
        f"62720) lies past the end of the file ({len(whole) - 3000} bytes) — the file is damaged or incomplete; "
        "download it again")


def test_a_tokenizer_we_cannot_rebuild_is_the_reason(tmp_path):
    sd = llama_state(torch.Generator().manual_seed(0), layers=1)
    path = write_gguf(tmp_path / "bert.gguf", "llama", llama_to_gguf(sd, "llama", 4, 2), llama_meta(layers=1),
                      tokenizer={"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"] * VOCAB})
    text = format_info(model_info(path))
    why = ("bert.gguf uses a 'bert' tokenizer — supported tokenizer models: gpt2 (byte-level BPE) and llama "
           "(SentencePiece)")
    assert f"Tokenizer     'bert' model in the file, not usable\n              note: {why}\n" in text
    assert text.endswith(f"Chat          no chat template\nRuns here     no — {why}")


def test_a_phi3_directory_with_longrope_is_described_with_the_reason(tmp_path):
    folder = fuzz.write_hf_dir(tmp_path / "phi3", {"model_type": "phi3", "architectures": ["Phi3ForCausalLM"],
                                                   "rope_scaling": LONGROPE})
    p = run("info", str(folder))
    assert (p.returncode, p.stderr) == (0, "")
    lines = p.stdout.splitlines()
    assert lines[1:5] == ["Format        Hugging Face safetensors",
                          "Architecture  phi3: 1 layer, 2 heads (1 key/value), width 16",
                          "Parameters    4,272 (4.27K)",
                          "Context       64 tokens"]
    assert "Positions     rotary, theta 10000, longrope scaling" in lines
    assert "Tensors       float32: 12 tensors, 16.7 KiB" in lines
    assert lines[-1] == (f"Runs here     no — {folder / 'config.json'}: RoPE scaling type 'longrope' is not "
                         "supported — supported RoPE types: default, linear, dynamic, llama3, yarn")
    d = json.loads(run("info", str(folder), "--json").stdout)
    assert d["runs"] is False and "'longrope' is not supported" in d["why"] and d["rope_scaling"] == "longrope"


def test_a_directory_of_an_architecture_we_do_not_know(tmp_path):
    folder = fuzz.write_hf_dir(tmp_path / "m", {"model_type": "mamba", "architectures": ["MambaForCausalLM"]})
    d = model_info(folder)
    assert (d["architecture"], d["layers"], d["vocab_size"], d["runs"]) == ("mamba", 1, fuzz.VOCAB_WORDS, False)
    assert d["why"].startswith(f"{folder / 'config.json'}: model type 'mamba' (MambaForCausalLM) is not supported "
                               "— supported model types: llama (")
    assert d["tokenizer"]["found"] is True  # the tokenizer beside it is still described
    assert format_info(d).splitlines()[-1] == f"Runs here     no — {d['why']}"


def test_weights_larger_than_the_memory_available(tmp_path, monkeypatch):
    path = tiny_llama_gguf(tmp_path / "ok.gguf")  # 17,728 parameters: 70.9 KB as float32, 17.7 KB as int8
    monkeypatch.setattr(limits, "available_memory", lambda: 40_000)
    d = model_info(path)
    shortfall = "ok.gguf (17,728 parameters as float32) needs 70.9 KB of memory but only 40.0 KB is available"
    assert (d["runs"], d["quantize"], d["why"]) == (True, "int8", shortfall)
    assert format_info(d).splitlines()[-1] == f"Runs here     yes, with --quantize int8 ({shortfall})"
    monkeypatch.setattr(limits, "available_memory", lambda: 5_000)  # int4 needs 8.9 KB
    d = model_info(path)
    assert (d["runs"], d["quantize"], d["refused_by"]) == (False, None, "memory")
    assert d["why"] == ("ok.gguf (17,728 parameters as float32) needs 70.9 KB of memory but only 5.0 KB is "
                        "available — free memory, use a smaller model or quantization (--quantize int8/int4, "
                        "--dtype bfloat16)")


def test_a_missing_or_mismatched_tokenizer_is_the_reason(tmp_path):
    f = tmp_path / "model.pt"
    random_llmbuilder_checkpoint(f, vocab=97, n_layer=1, n_head=2, n_embd=16, block_size=8)
    assert format_info(model_info(f)).splitlines()[-1] == (
        f"Runs here     no — no tokenizer given and none found beside {f} — pass --tokenizer DIR (the directory "
        "with llmbuilder's tokenizer.model)")
    d = model_info(f, TOKENIZER_DIR)
    assert (d["runs"], d["refused_by"]) == (False, "tokenizer")
    assert d["why"] == ("the tokenizer has 512 tokens but the model's embedding has only 97 rows — use the tokenizer "
                        "the model was trained with")
