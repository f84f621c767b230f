"""The setup wizard in a real pseudo-terminal: answered key by key, corrected in place, interrupted."""

from __future__ import annotations

import sys

import pexpect
import pytest

from conftest import MODEL_PT, TOKENIZER_DIR, cli_env, spawn_pty
from llmbuilder_cli import settings as st

pytestmark = pytest.mark.slow

CLEAR = "\x15"  # Ctrl-U: erase the pre-filled default
DOWN = "\x1b[B"


def start(home, *args):
    env = {**cli_env(), "LLMBUILDER_HOME": str(home)}
    child = spawn_pty(sys.executable, ["-m", "llmbuilder_cli", *args], env=env, encoding="utf-8", timeout=60,
                      dimensions=(40, 120))
    return child


def answer(child, question, keys):
    child.expect(question)
    child.send(keys)


def test_full_wizard_run_saves_a_profile_and_generates(tmp_path):
    child = start(tmp_path, "generate", "text", "--setup")
    answer(child, "Model:", CLEAR + str(MODEL_PT) + "\r")
    child.expect("layers")  # the model was read and described
    answer(child, "Tokenizer:", CLEAR + str(TOKENIZER_DIR) + "\r")
    child.expect("sentencepiece, 512 tokens")
    answer(child, "What do you want to do", "\r")  # one prompt
    answer(child, "Prompt", CLEAR + "The little fox\r")
    answer(child, "Decoding:", "\r")  # sampling
    answer(child, "Style:", DOWN + DOWN + "\r")  # balanced → creative → custom
    answer(child, "Temperature", CLEAR + "-2\r")
    child.expect("temperature must be 0 \\(greedy\\) or a number from 1e-05")  # refused in place
    child.send(CLEAR + "0.7\r")
    answer(child, "Top-k", "\r")
    answer(child, "Top-p", "\r")
    answer(child, "Maximum new tokens", CLEAR + "12\r")
    answer(child, "Minimum new tokens", "\r")
    answer(child, "Repetition penalty", "\r")
    answer(child, "Seed", CLEAR + "5\r")
    answer(child, "Stop strings", "\r")
    child.expect("Your settings")
    child.expect("llmbuilder generate text -m")
    child.expect("--temperature 0.7 --top-k 50 --top-p 0.9 --seed 5 --max-tokens 12 -p 'The little fox'")
    answer(child, "Now:", DOWN + DOWN + "\r")  # save and run
    answer(child, "Profile name:", CLEAR + "fox\r")
    answer(child, "by default", "y")
    child.expect("Saved profile 'fox'")
    child.expect("the little fox")
    child.expect(r"\[12 tokens · finish: length")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    saved = st.Settings.read(tmp_path / "settings.toml")
    assert saved.default_profile == "fox"
    prof = saved.profiles["fox"]
    assert prof["model"] == str(MODEL_PT.resolve()) and prof["tokenizer"] == str(TOKENIZER_DIR.resolve())
    assert (prof["temperature"], prof["max_new_tokens"], prof["seed"]) == (0.7, 12, 5)


def test_ctrl_c_in_the_middle_saves_nothing_and_exits_130(tmp_path):
    child = start(tmp_path, "setup")
    answer(child, "Model:", "\r")  # demo
    answer(child, "What do you want to do", "\r")
    answer(child, "Prompt", "\r")
    child.expect("Decoding:")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert not (tmp_path / "settings.toml").exists()
    assert [p.name for p in tmp_path.iterdir() if "settings" in p.name and not p.name.endswith(".lock")] == []
