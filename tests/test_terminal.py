"""The real command in a pseudo-terminal (pexpect): Ctrl-C during generation and the prompt loop."""

from __future__ import annotations

import sys

import pytest

pexpect = pytest.importorskip("pexpect")

from conftest import MODEL_PT, TOKENIZER_DIR, cli_env  # noqa: E402

BASE = [sys.executable, "-m", "llmbuilder_cli", "generate", "text", "-m", str(MODEL_PT), "-t", str(TOKENIZER_DIR),
        "--device", "cpu"]


def spawn(*args: str):
    child = pexpect.spawn(BASE[0], BASE[1:] + list(args), env=cli_env(), encoding="utf-8", timeout=60,
                          dimensions=(40, 120))
    return child


def test_ctrl_c_stops_generation_keeps_text_and_exits_130():
    child = spawn("-p", "Once upon a time", "--max-tokens", "1000000", "--ignore-eos", "--seed", "3")
    child.expect("once upon a time")  # streaming has started
    child.expect(r"\.")  # some continuation arrived
    child.sendintr()
    child.expect(r"finish: cancelled")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert "Traceback" not in child.before


def test_interactive_loop_in_a_terminal():
    child = spawn("-i", "--greedy", "--max-tokens", "12")
    child.expect("Interactive mode")
    child.expect(">>> ")
    child.sendline("Once upon a time")
    child.expect(", there was a tired frog")
    child.expect(r"\[12 tokens · finish: length")
    child.expect(">>> ")
    child.sendline("/set temperature -3")
    child.expect("Error: temperature must be")
    child.expect(">>> ")
    child.sendline("/sett")
    child.expect("did you mean /set")
    child.expect(">>> ")
    child.sendintr()  # Ctrl-C at the prompt explains how to leave
    child.expect("Ctrl-D")
    child.expect(">>> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
