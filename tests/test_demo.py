"""The built-in demo model: its corpus, its training script, the shipped files, and how users meet it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODEL_PT, cli_cmd, cli_env

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
DEMO = ROOT / "llmbuilder_cli" / "demo_model"
EXPECTED = json.loads((Path(__file__).parent / "data" / "demo_expected.json").read_text(encoding="utf-8"))
REPORT = json.loads((DEMO / "training.json").read_text(encoding="utf-8"))

sys.path.insert(0, str(SCRIPTS))
import demo_corpus  # noqa: E402


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(*args: str, home: Path, stdin: bytes | None = b"") -> subprocess.CompletedProcess:
    env = cli_env()
    env["LLMBUILDER_HOME"] = str(home)
    return subprocess.run(cli_cmd(*args), input=stdin, capture_output=True, env=env, timeout=120)


# ---------------------------------------------------------------------------------------------- corpus
def test_corpus_is_byte_identical_across_processes():
    code = (
        f"import sys; sys.path.insert(0, {str(SCRIPTS)!r}); import demo_corpus, hashlib;"
        "print(hashlib.sha256(demo_corpus.corpus_text(demo_corpus.generate_stories(99, 500)).encode()).hexdigest())"
    )
    digests = set()
    for hashseed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        digests.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    here = hashlib.sha256(demo_corpus.corpus_text(demo_corpus.generate_stories(99, 500)).encode()).hexdigest()
    assert digests == {here + "\n"}


@pytest.mark.slow
def test_shipped_model_was_trained_on_this_corpus():
    """The generator still writes, byte for byte, the corpus the shipped demo was trained on."""
    corpus = REPORT["corpus"]
    assert corpus["version"] == demo_corpus.CORPUS_VERSION
    stories = demo_corpus.generate_stories(REPORT["recipe"]["seed"], corpus["train_stories"])
    assert hashlib.sha256(demo_corpus.corpus_text(stories).encode("utf-8")).hexdigest() == corpus["train_sha256"]


def test_corpus_text_is_clean():
    stories = demo_corpus.generate_stories(7, 400)
    assert len(set(stories)) > 390  # varied, not a handful of templates
    for s in stories:
        assert s.isascii() and s == s.strip() and "\n\n" not in s and "  " not in s
        assert s[-1] in ".!?\"", s[-40:]
        for bad in (" ,", " .", " a a", " a e", " a i", " a o", " A a", " A e", " A i", " A o"):
            assert bad not in s, (bad, s)
    assert 0.3 < sum(s.startswith("Once upon a time") for s in stories) / len(stories) < 0.7


# --------------------------------------------------------------------------------------- training script
@pytest.mark.slow
def test_training_script_is_reproducible_and_writes_llmbuilder_format(tmp_path):
    import torch

    small = [
        "--stories", "200", "--heldout", "20", "--vocab-size", "300", "--n-layer", "2", "--n-head", "2",
        "--n-embd", "32", "--block-size", "64", "--batch-size", "4", "--steps", "6", "--eval-every", "3",
        "--threads", "1",
    ]  # fmt: skip
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        subprocess.run(
            [sys.executable, str(SCRIPTS / "train_demo.py"), "--out", str(out), "--expected", str(tmp_path / f"{name}.json"), *small],
            check=True, capture_output=True, timeout=300,
        )
        outs.append(out)
    a, b = outs
    for rel in ("model.pt", "tokenizer/tokenizer.json", "model.metadata.json"):
        assert sha256(a / rel) == sha256(b / rel), rel
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()

    ck = torch.load(a / "model.pt", map_location="cpu", weights_only=True)
    assert set(ck) == {"model_state_dict", "model_config", "metadata", "model_type"}
    sd = ck["model_state_dict"]
    fixture = torch.load(MODEL_PT, map_location="cpu", weights_only=True)["model_state_dict"]
    assert list(sd) == list(fixture)  # the same 5 + 12·L entries as llmbuilder's own 2-layer model, in order
    assert sd["blocks.0.attn.causal_mask"].shape == (1, 1, 64, 64)
    assert sd["lm_head.weight"].data_ptr() == sd["token_embedding.weight"].data_ptr()  # tied, one storage
    assert ck["model_config"] == {
        "vocab_size": 300, "num_layers": 2, "num_heads": 2, "embedding_dim": 32, "max_seq_length": 64,
        "dropout": 0.0, "model_type": "gpt",
    }  # fmt: skip
    assert json.loads((a / "model.metadata.json").read_text()) == ck["metadata"]
    tok_cfg = json.loads((a / "tokenizer" / "tokenizer_config.json").read_text())
    assert tok_cfg["eos_token"] == "<|endoftext|>"
    report = json.loads((a / "training.json").read_text())
    assert report["model"]["sha256"] == sha256(a / "model.pt")
    assert report["results"]["heldout_perplexity"] > 1


# ---------------------------------------------------------------------------------------- shipped files
def test_shipped_files_match_their_records():
    assert sha256(DEMO / "model.pt") == REPORT["model"]["sha256"] == EXPECTED["model_sha256"]
    total = sum(f.stat().st_size for f in DEMO.rglob("*") if f.is_file())
    assert total <= 8 * 1024 * 1024, total


@pytest.mark.slow
def test_demo_greedy_continuations_match_the_training_script(tmp_path):
    from llmbuilder_cli import api

    loaded = api.load_model(device="cpu")  # no model: the demo
    assert loaded.info.path == (DEMO / "model.pt").resolve()
    for case in EXPECTED["cases"]:
        r = api.generate(loaded, prompt=case["prompt"], max_new_tokens=case["max_new_tokens"], do_sample=False)
        assert list(r.token_ids) == case["token_ids"], case["prompt"]
        assert r.text == case["text"]


@pytest.mark.slow
def test_demo_story_ends_on_eos():
    from llmbuilder_cli import api

    r = api.generate(prompt="Once upon a time", max_new_tokens=400, do_sample=False)
    assert r.finish_reason.value == "eos"
    assert r.text.rstrip()[-1] in '.!?"'
    assert 60 <= len(r.token_ids) < 400


# ----------------------------------------------------------------------------------------------- CLI
def test_no_model_runs_the_demo_and_says_so_once(tmp_path):
    args = ("generate", "text", "-p", "Once upon a time", "--greedy", "--max-tokens", "60")
    first = run_cli(*args, home=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.decode() == "Once upon a time" + EXPECTED["cases"][0]["text"] + "\n"
    err = first.stderr.decode()
    assert "built-in demo model" in err and "--model" in err and "no model given" in err
    second = run_cli(*args, home=tmp_path)
    assert second.returncode == 0 and second.stdout == first.stdout
    assert b"built-in demo model" not in second.stderr
    assert b"tok/s" in second.stderr  # the footer is still there


def test_quiet_demo_prints_only_text(tmp_path):
    p = run_cli("generate", "text", "-p", "Once upon a time", "--greedy", "--max-tokens", "20", "-q", home=tmp_path)
    assert p.returncode == 0 and p.stderr == b""
    assert p.stdout.decode().startswith("Once upon a time")


def test_demo_by_name_and_unwritable_home(tmp_path):
    home = tmp_path / "file-not-dir"
    home.write_text("")
    p = run_cli("generate", "text", "-m", "demo", "-p", "The little fox", "--greedy", "--max-tokens", "60", home=home)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == "The little fox" + EXPECTED["cases"][1]["text"] + "\n"
    assert b"built-in demo model" in p.stderr  # cannot be recorded, so it is said again next time
    assert b"no model given" not in p.stderr  # it was named


def test_tokenizer_without_model_is_a_usage_error(tmp_path):
    p = run_cli("generate", "text", "-t", str(tmp_path), "-p", "hi", home=tmp_path)
    assert p.returncode == 2
    assert p.stderr.decode().startswith("Error: a tokenizer was given without a model")


def test_info_describes_the_demo(tmp_path):
    p = run_cli("info", home=tmp_path)
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    cfg = REPORT["recipe"]
    for expected in (
        "Model         demo (built-in)",
        f"{cfg['n_layer']} layers, {cfg['n_head']} heads, width {cfg['n_embd']}, tied output head",
        f"{REPORT['model']['num_parameters']:,}",
        f"Context       {cfg['block_size']} tokens",
        "float16 in the file, run in float32",
        f"SHA-256       {REPORT['model']['sha256']}",
        "huggingface, ",
        "EOS <|endoftext|> (id 0)",
        f"perplexity {REPORT['results']['heldout_perplexity']}",
    ):
        assert expected in out, expected
    d = json.loads(run_cli("info", "demo", "--json", home=tmp_path).stdout)
    assert d["name"] == "demo" and d["sha256"] == REPORT["model"]["sha256"]
    assert d["vocab_size"] == REPORT["tokenizer"]["vocab_size"] and d["context_length"] == cfg["block_size"]
