"""The real command in a pseudo-terminal (pexpect): Ctrl-C during generation and the prompt loop."""

from __future__ import annotations

import sys
import time

import pytest

pexpect = pytest.importorskip("pexpect")

from conftest import MODEL_PT, TOKENIZER_DIR, cli_env, spawn_pty  # noqa: E402

BASE = [sys.executable, "-m", "llmbuilder_cli", "generate", "text", "-m", str(MODEL_PT), "-t", str(TOKENIZER_DIR),
        "--device", "cpu"]


def spawn(*args: str):
    child = spawn_pty(BASE[0], BASE[1:] + list(args), env=cli_env(), encoding="utf-8", timeout=60,
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


def test_chat_in_a_terminal(tmp_path):
    child = spawn("-i", "--mode", "chat", "--greedy", "--max-tokens", "12")
    child.expect(r"Chat mode \(as asked; no chat template\): type a message")
    child.expect(">>>")
    child.sendline("Once upon a time")
    child.expect(r"\[\d+ tokens · finish: \w+ .*\[context (\d+)/128\]")
    used_after_one = int(child.match.group(1))
    child.expect(">>>")
    child.sendline("the owl")  # the second turn is answered with the first one in context
    child.expect(r"\[context (\d+)/128\]")
    assert int(child.match.group(1)) > used_after_one
    child.expect(">>>")
    child.sendline("/set temperature -3")
    child.expect("Error: temperature must be")
    child.expect(">>>")
    child.sendline(f"/save {tmp_path / 'chat.json'}")
    child.expect("saved 2 exchanges")
    child.expect(">>>")
    child.sendline("/clear")
    child.expect("conversation cleared")
    child.expect(">>>")
    child.sendline(f"/load {tmp_path / 'chat.json'}")
    child.expect("loaded 2 exchanges")
    child.expect(">>>")
    child.sendline("/sett")
    child.expect("did you mean /set")
    child.expect(">>>")
    child.sendintr()  # Ctrl-C at the prompt explains how to leave
    child.expect("Ctrl-D")
    child.expect(">>>")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_chat_ctrl_c_mid_reply_then_another_turn():
    child = spawn("-i", "--mode", "chat", "--max-tokens", "1000000", "--ignore-eos", "--seed", "1")
    child.expect(">>>")
    child.sendline("Once upon a time")
    time.sleep(1.5)  # the line editor has handed the terminal back; the long reply is streaming
    child.sendintr()
    child.expect(r"\[cancelled — not added to the conversation")
    child.expect(">>>")
    child.sendline("/set max_new_tokens 5")
    child.expect(">>>")
    child.sendline("the owl")
    child.expect(r"\[5 tokens · finish: length")
    child.expect(r"\[context \d+/128\]")
    child.expect(">>>")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_chat_line_editor_keeps_history_and_completes_commands(tmp_path):
    env = {**cli_env(), "LLMBUILDER_HOME": str(tmp_path)}
    child = spawn_pty(BASE[0], BASE[1:] + ["-i", "--mode", "chat", "--greedy", "--max-tokens", "3"], env=env, encoding="utf-8",
                          timeout=60, dimensions=(40, 120))
    child.expect(">>>")
    child.send("/hel\t")  # Tab completes /help (asynchronously: give it a moment)
    time.sleep(0.7)
    child.send("\r")
    time.sleep(0.3)
    child.send("\r")  # a second Enter in case the first only closed the completion menu (empty lines are ignored)
    child.expect("list the commands|show this help")
    child.expect(">>>")
    child.sendline("Once upon a time")
    child.expect(r"\[context \d+/128\]")
    child.expect(">>>")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    history = (tmp_path / "chat_history").read_text(encoding="utf-8")
    assert "+Once upon a time" in history and "+/help" in history
