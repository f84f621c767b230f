"""The setup wizard's logic with scripted answers: validation in place, modes, the equivalent command."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from conftest import MODEL_PT, TOKENIZER_DIR, cli_cmd, cli_env
from llmbuilder_cli import api
from llmbuilder_cli.cli.wizard import run_wizard


class Scripted:
    """Answers questions from a list; an answer the validator refuses is recorded and the next one tried."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.asked: list[str] = []
        self.refused: list[tuple[str, str, str]] = []
        self.said: list[str] = []
        self.summary_rows = None
        self.command = None

    def _next(self, message):
        self.asked.append(message)
        assert self.answers, f"no answer left for {message!r}"
        return self.answers.pop(0)

    def say(self, text, *, style=""):
        self.said.append(text)

    def text(self, message, *, default="", validate=None, busy=""):
        while True:
            answer = self._next(message)
            answer = default if answer is None else answer
            problem = validate(answer) if validate else None
            if problem is None:
                return answer
            self.refused.append((message, answer, problem))

    path = text

    def select(self, message, choices, *, default=None):
        answer = self._next(message)
        values = [v for _, v in choices]
        assert answer in values or answer is None, (answer, values)
        return default if answer is None else answer

    def confirm(self, message, *, default=True):
        answer = self._next(message)
        return default if answer is None else answer

    def summary(self, rows, command):
        self.summary_rows, self.command = dict(rows), command


def wizard(answers, start=None, profiles=()):
    ask = Scripted(answers)
    result = run_wizard(ask, start=start or {}, describe=lambda m, t: api.model_info(m, t), profiles=profiles)
    assert not ask.answers, f"unused answers: {ask.answers}"
    return ask, result


def test_full_sampling_run_with_invalid_answers_refused_in_place():
    ask, r = wizard([
        "nope/model.pt", str(MODEL_PT),        # a missing model is refused, then the fixture
        str(MODEL_PT.parent),                  # a directory without a tokenizer: refused
        str(TOKENIZER_DIR),
        "prompt", "The little fox",
        "sample", "custom",
        "hot", "-1", "0.7",                    # temperature: not a number, negative, then fine
        "0", "1.5", "0.95",                    # top-k off; top-p out of range, then fine
        "0", "40",                             # max tokens: 0 refused
        "50", "4",                             # min tokens above max refused
        None, "7", "",                          # repetition penalty default; seed 7; no stop
        "both", "my-fox!", "fox", True,
    ])
    refused = {(m.split(" (")[0].rstrip(":"), a): p for m, a, p in ask.refused}
    assert "model not found" in refused[("Model", "nope/model.pt")]
    assert "tokenizer" in refused[("Tokenizer", str(MODEL_PT.parent))].lower()
    assert "temperature must be a number" in refused[("Temperature", "hot")]
    assert "temperature must be 0 (greedy) or a number from 1e-05 to 1e+06" in refused[("Temperature", "-1")]
    assert "top_p must be a number in (0, 1]" in refused[("Top-p", "1.5")]
    assert "max_new_tokens must be a whole number >= 1" in refused[("Maximum new tokens", "0")]
    assert "must not exceed max_new_tokens (40)" in refused[("Minimum new tokens", "50")]
    assert "profile name" in refused[("Profile name", "my-fox!")]
    assert any("6 layers" in s or "layers" in s for s in ask.said)  # the model was described
    assert any("top-k and top-p" in s.lower() for s in ask.said)  # parameters were explained

    v = r.values
    assert (r.mode, r.prompt, r.action, r.profile, r.make_default) == ("prompt", "The little fox", "both", "fox", True)
    assert (v["temperature"], v["top_k"], v["top_p"], v["max_new_tokens"], v["min_new_tokens"], v["seed"]) == (
        0.7, 0, 0.95, 40, 4, 7)
    assert v["model"] == str(MODEL_PT.resolve()) and v["tokenizer"] == str(TOKENIZER_DIR.resolve())
    assert r.command == ask.command
    assert r.argv[-2:] == ["-p", "The little fox"]
    assert r.profile_values()["temperature"] == 0.7 and "prompt" not in r.profile_values()


def test_the_equivalent_command_reproduces_the_wizard_run():
    _, r = wizard([str(MODEL_PT), str(TOKENIZER_DIR), "prompt", "Once upon a time", "sample", "focused",
                   None, None, "15", None, "1.2", "3", "", "run"])
    assert r.values["temperature"] == 0.3 and r.values["repetition_penalty"] == 1.2
    argv = shlex.split(r.command)[1:]
    assert argv == r.argv and "--temperature" in argv and "--seed" in argv
    runs = [subprocess.run(cli_cmd(*argv), capture_output=True, text=True, env=cli_env(), timeout=120)
            for _ in range(2)]
    assert all(p.returncode == 0 for p in runs), runs[0].stderr
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.startswith("once upon a time")
    assert "[15 tokens" in runs[0].stderr or "finish: eos" in runs[0].stderr


def test_greedy_chat_on_the_demo_model_skips_the_tokenizer_and_sampling_questions():
    ask, r = wizard(["demo", "chat", "You tell stories.", "greedy", None, None, None, "THE END|Moral", "save",
                     "stories", True, None], profiles=["stories"])
    assert not any(q.startswith(("Tokenizer", "Temperature", "Top-k", "Seed", "Style")) for q in ask.asked)
    assert r.values["model"] == "demo" and "tokenizer" not in r.values
    assert r.values["do_sample"] is False and r.values["stop"] == ("THE END", "Moral")
    assert r.argv[:3] == ["generate", "text", "--greedy"]
    assert r.argv[-3:] == ["-i", "--system", "You tell stories."]
    assert r.action == "save" and r.profile == "stories"  # replacing an existing profile was confirmed
    assert "Profile 'stories' exists. Replace it?" in ask.asked


def test_batch_mode_needs_an_existing_file(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Once\nThe fox\n", encoding="utf-8")
    ask, r = wizard(["demo", "batch", str(tmp_path / "missing.txt"), str(prompts), "greedy", "5", None, None,
                     "", "cancel"])
    assert ask.refused and "no such file" in ask.refused[0][2]
    assert r.argv[-3:] == ["--prompts-file", str(prompts), "--jsonl"] and r.action == "cancel"


def test_the_wizard_starts_from_the_current_settings():
    ask, r = wizard(["demo", "prompt", "x", None, None, None, None, None, None, None, None, None, "run"],
                    start={"model": "demo", "temperature": 1.5, "top_k": 9, "max_new_tokens": 33})
    assert r.values["temperature"] == 1.5  # the "creative" preset was preselected
    assert (r.values["top_k"], r.values["max_new_tokens"]) == (9, 33)


@pytest.mark.parametrize("args", [("setup",), ("generate", "text", "--setup")])
def test_setup_without_a_terminal_exits_2(args):
    proc = subprocess.run(cli_cmd(*args), capture_output=True, text=True, env=cli_env(), input="", timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("Error: the setup wizard needs a terminal") and "Traceback" not in proc.stderr


# ------------------------------------------------------------------ models that carry their own tokenizer
def gpt2_byte_symbols() -> list[str]:
    """The 256 printable symbols GPT-2's byte-level tokenizers use for the bytes 0..255 (its published table)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in kept}, 0
    for b in range(256):
        if b not in table:
            table[b], extra = chr(256 + extra), extra + 1
    return [table[b] for b in range(256)]


def tiny_gguf(path):
    """A one-layer Llama GGUF file (17.7K parameters) with its byte-level tokenizer embedded."""
    import torch
    from test_gguf import SPECIALS, llama_meta, llama_state, llama_to_gguf, write_gguf

    tokens = gpt2_byte_symbols() + ["Ġt", "he", "Ġthe"] + SPECIALS + ["<think>"]
    tokenizer = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "default", "tokenizer.ggml.tokens": tokens,
                 "tokenizer.ggml.token_type": [1] * 259 + [3, 3, 3, 4],
                 "tokenizer.ggml.merges": ["Ġ t", "h e", "Ġt he"],
                 "tokenizer.ggml.bos_token_id": 260, "tokenizer.ggml.eos_token_id": 261}
    state = llama_state(torch.Generator().manual_seed(0), layers=1)
    return write_gguf(path, "llama", llama_to_gguf(state, "llama", 4, 2), llama_meta(layers=1), tokenizer=tokenizer)


def tiny_hf_dir(path):
    """The llmbuilder fixture exported as a Hugging Face directory (config.json, safetensors, tokenizer.json)."""
    from llmbuilder_cli.engine.formats.export_hf import export_hf

    export_hf(MODEL_PT, None, path)
    return path


@pytest.mark.parametrize("kind", ["gguf", "hf"])
def test_a_model_with_its_own_tokenizer_is_not_asked_for_one(tmp_path, kind):
    model = tiny_gguf(tmp_path / "tiny.gguf") if kind == "gguf" else tiny_hf_dir(tmp_path / "tiny-hf")
    ask, r = wizard([str(model), "prompt", "Once", "greedy", "4", None, None, "", "run"],
                    start={"tokenizer": str(TOKENIZER_DIR)})  # a profile's tokenizer for another model
    assert not any(q.startswith("Tokenizer") for q in ask.asked)
    where = "inside the file" if kind == "gguf" else "tokenizer.json"
    vocab = 263 if kind == "gguf" else 512
    assert f"  tokenizer: the model's own ({where}): huggingface, {vocab} tokens" in ask.said
    assert r.values["model"] == str(model.resolve()) and "tokenizer" not in r.values
    assert r.argv[:4] == ["generate", "text", "-m", str(model.resolve())] and "-t" not in r.argv
    run = subprocess.run(cli_cmd(*r.argv), capture_output=True, text=True, env=cli_env(), timeout=120)
    assert run.returncode == 0 and "[4 tokens" in run.stderr, run.stderr


def test_the_model_explanation_names_every_format():
    ask, _ = wizard(["demo", "prompt", "x", "greedy", None, None, None, "", "cancel"])
    explanation = next(s for s in ask.said if s.startswith("The model:"))
    for kind in ("model.pt", "trainer checkpoint", "run directory", "Hugging Face", "GGUF"):
        assert kind in explanation


# ------------------------------------------------------------------ sampling needs a temperature above 0
def test_custom_temperature_for_sampling_refuses_0():
    ask, r = wizard(["demo", "prompt", "x", "sample", "custom", "0", "0.00001", None, None, None, None, None, "",
                     "", "cancel"])
    refused = {(m.split(" (")[0], a): p for m, a, p in ask.refused}
    assert refused[("Temperature", "0")] == ("temperature 0 means greedy decoding; for sampling use a number "
                                             "from 1e-05 to 1e+06")
    assert any(m.startswith("Temperature (1e-05 to 1e+06;") for m in ask.asked)
    assert r.values["do_sample"] is True and r.values["temperature"] == 1e-05
    assert "--sample" in r.argv and "--greedy" not in r.argv


# ------------------------------------------------------------------ stop strings with line breaks
def test_stop_strings_take_escapes_and_show_them_back():
    ask, r = wizard(["demo", "prompt", "x", "greedy", None, None, None, r"User:|\n\n|a\|b|c\\d", "cancel"])
    assert r.values["stop"] == ("User:", "\n\n", "a|b", "c\\d")
    assert any("\\n\\n stops at the end of a paragraph" in said for said in ask.said)  # explained
    assert ask.summary_rows["stop"] == r"User:|\n\n|a\|b|c\\d"
    assert "--stop User: --stop $'\\n\\n' --stop 'a|b' --stop 'c\\d'" in r.command
    # started again from what was saved, the default answer is the same text
    ask, again = wizard(["demo", "prompt", "x", "greedy", None, None, None, None, "cancel"],
                        start={"stop": r.values["stop"]})
    assert again.values["stop"] == r.values["stop"]


# ------------------------------------------------------------------ what the wizard does not ask about is kept
KEPT = {"threads": 2, "device": "cpu", "dtype": "float32", "quantize": "none", "ignore_eos": True}


def test_settings_the_wizard_does_not_ask_about_are_kept_and_spelled_out():
    ask, r = wizard(["demo", "chat", "Be brief.", "greedy", "7", None, None, "", "save", "mine", False],
                    start={"model": "demo", **KEPT})
    assert {k: r.values[k] for k in KEPT} == KEPT
    assert {k: r.profile_values()[k] for k in KEPT} == KEPT
    assert {k: ask.summary_rows[k] for k in KEPT} == {k: str(v) for k, v in KEPT.items()}
    assert r.argv == ["generate", "text", "--device", "cpu", "--dtype", "float32", "--quantize", "none",
                      "--threads", "2", "--greedy", "--max-tokens", "7", "--ignore-eos", "-i", "--system", "Be brief."]
    assert "model" in r.asked and "threads" not in r.asked


@pytest.mark.parametrize("mode, tail", [("chat", "-i"), ("prompt", "-p ..."),
                                        ("batch", "--prompts-file FILE --jsonl")])
def test_the_next_time_hint_follows_the_mode(mode, tail):
    from llmbuilder_cli.cli.wizard import WizardResult, next_time_command

    result = WizardResult(mode=mode, values={}, profile="mine", prompts_file="FILE" if mode == "batch" else None)
    assert next_time_command(result) == f"llmbuilder generate text --profile mine {tail}"


def test_saving_over_another_profile_replaces_it_and_editing_keeps_unasked_keys(tmp_path):
    from llmbuilder_cli import settings as st
    from llmbuilder_cli.cli.setup import save_profile

    path = tmp_path / "settings.toml"
    path.write_text('[profiles.a]\nmodel = "demo"\nthreads = 3  # mine\nseed = 1\n\n'
                    '[profiles.b]\nmodel = "demo"\ndtype = "float32"\n', encoding="utf-8")
    _, r = wizard(["demo", "prompt", "x", "greedy", "5", None, None, "", "save", "a", True, False],
                  start={"model": "demo", "dtype": "float32"}, profiles=["a", "b"])
    r.values["model"] = "demo"
    import os
    os.environ["LLMBUILDER_HOME"], home = str(tmp_path), os.environ["LLMBUILDER_HOME"]
    try:
        save_profile(r, edited="b")  # "a" is another profile: replaced (its threads and seed go)
        assert st.Settings.read(path).profiles["a"] == {
            "model": "demo", "dtype": "float32", "do_sample": False, "max_new_tokens": 5, "min_new_tokens": 0,
            "repetition_penalty": 1.0}
        r.profile = "b"
        before = path.read_text(encoding="utf-8")
        save_profile(r, edited="b")  # the profile being edited: dtype kept as written, asked keys added
        after = path.read_text(encoding="utf-8")
        assert after.startswith(before.split("[profiles.b]")[0] + '[profiles.b]\nmodel = "demo"\ndtype = "float32"\n')
        assert st.Settings.read(path).profiles["b"]["max_new_tokens"] == 5
    finally:
        os.environ["LLMBUILDER_HOME"] = home


def test_a_model_that_does_not_run_here_is_refused_with_the_reason(tmp_path):
    import numpy as np

    from test_gguf import VOCAB, write_gguf

    falcon = write_gguf(tmp_path / "f.gguf", "falcon", {"token_embd.weight": np.zeros((VOCAB, 32), np.float32)},
                        {"falcon.block_count": 1})
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Once\n", encoding="utf-8")
    ask, r = wizard([str(falcon), "demo", "batch", str(prompts), "greedy", "5", None, None, "", "cancel"])
    # info describes such a file (with its verdict); the wizard takes only a model that runs
    assert [(a, p) for _, a, p in ask.refused] == [
        (str(falcon), "f.gguf is a 'falcon' model — supported GGUF architectures: llama, qwen2, qwen3, phi3, gpt2, "
                      "gemma3")]
    assert r.values["model"] == "demo"
