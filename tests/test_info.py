"""``llmbuilder info``: what a model file is, for llmbuilder's own files and for broken ones."""

from __future__ import annotations

import hashlib
import json

import torch

from conftest import BEST_CKPT, FIXTURE, MODEL_PT, TOKENIZER_DIR
from reference_gpt import random_llmbuilder_checkpoint
from test_cli import assert_one_line_error, run


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
