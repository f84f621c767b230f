"""The chat through the real command: in a pseudo-terminal (pexpect, the screen replayed through pyte),
with stdout redirected to a file, and piped in the ``--jsonl`` machine mode."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import pytest

pexpect = pytest.importorskip("pexpect")
pyte = pytest.importorskip("pyte")

from conftest import MODEL_PT, TOKENIZER_DIR, cli_env, spawn_pty  # noqa: E402
from llmbuilder_cli.config import GenerationConfig  # noqa: E402
from llmbuilder_cli.engine.generate import TextStream  # noqa: E402
from llmbuilder_cli.turns import TurnFormat  # noqa: E402

CMD = [sys.executable, "-m", "llmbuilder_cli", "generate", "text", "-m", str(MODEL_PT), "-t", str(TOKENIZER_DIR),
       "--device", "cpu"]
ROWS, COLS = 40, 120


def spawn_chat(tmp_path, *args: str, stdout_to=None):
    """The chat in a pty (stdin and stderr are the terminal); ``stdout_to``: a file stdout is redirected to.
    Every byte the terminal receives is recorded for `screen`."""
    env = {**cli_env(), "LLMBUILDER_HOME": str(tmp_path / "home")}
    argv = CMD + ["-i", "--mode", "chat", *args]
    if stdout_to is None:
        child = spawn_pty(argv[0], argv[1:], env=env, timeout=90, dimensions=(ROWS, COLS))
    else:
        line = "exec " + shlex.join(argv) + " > " + shlex.quote(str(stdout_to))
        child = spawn_pty("bash", ["--norc", "-c", line], env=env, timeout=90, dimensions=(ROWS, COLS))
    child.logfile_read = open(tmp_path / "pty.bin", "wb")  # noqa: SIM115 (closed by `finish`)
    return child


def finish(child) -> int:
    child.expect(pexpect.EOF)
    child.close()
    child.logfile_read.close()
    return child.exitstatus


def screen(tmp_path) -> list[str]:
    """The screen's rows after replaying what the terminal received."""
    scr = pyte.Screen(COLS, ROWS)
    pyte.ByteStream(scr).feed((tmp_path / "pty.bin").read_bytes())
    return [row.rstrip() for row in scr.display]


def reply_to(loaded, prompt_ids: list[int], max_new_tokens: int) -> str:
    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, stop=TurnFormat().stops)
    return TextStream(loaded, "x", config, prompt_ids=prompt_ids).result().text


def test_redirected_stdout_holds_only_the_replies_and_the_screen_clean_prompts(tmp_path, tiny_loaded):
    log = tmp_path / "replies.txt"
    child = spawn_chat(tmp_path, "--greedy", "--max-tokens", "12", stdout_to=log)
    child.expect("Loading the model")  # something shows while the model loads
    child.expect(">>>")
    child.sendline("Once upon a time")
    child.expect(r"\[context \d+/128\]")
    child.expect(">>>")
    child.sendline("the owl")
    child.expect(r"\[context \d+/128\]")
    child.expect(">>>")
    child.sendline("exit")
    assert finish(child) == 0

    # the first reply is exactly the greedy one-shot continuation of the same turn
    fmt = TurnFormat()
    one_shot = subprocess.run(
        [*CMD, "-p", fmt.user_text("Once upon a time"), "--greedy", "--max-tokens", "12", "--stop", "\nUser:",
         "--no-echo", "-q"], capture_output=True, text=True, env=cli_env(), timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert one_shot.returncode == 0, one_shot.stderr
    r1 = one_shot.stdout[:-1]
    enc = tiny_loaded.tokenizer.encode
    r2 = reply_to(tiny_loaded, enc(fmt.user_text("Once upon a time")) + enc(r1.rstrip() + fmt.end)
                  + enc(fmt.user_text("the owl")), 12)
    assert log.read_text(encoding="utf-8") == f"{r1}\n{r2}\n"  # no prompt, no escape sequence, no padding

    rows = screen(tmp_path)
    prompts = [row for row in rows if row.startswith(">>>")]
    assert prompts == [">>> Once upon a time", ">>> the owl", ">>> exit"], rows
    assert rows.index("Loading the model…") < rows.index(prompts[0])


@pytest.mark.parametrize("word", ["exit", "quit", "/bye"])
def test_exit_words_end_the_chat_with_code_0(tmp_path, word):
    child = spawn_chat(tmp_path, "--greedy", "--max-tokens", "3")
    child.expect(">>>")
    child.sendline(word)
    assert finish(child) == 0
    assert "Traceback" not in (tmp_path / "pty.bin").read_text(encoding="utf-8", errors="replace")


def test_multi_line_message_tab_completion_set_aliases_and_private_history(tmp_path):
    child = spawn_chat(tmp_path, "--greedy", "--max-tokens", "6")
    child.expect(">>>")
    child.sendline('"""Once upon a time')  # text on the opening line is the message's first line
    child.expect(r"\.\.\.")
    child.sendline('the owl"""')
    child.expect(r"\[context \d+/128\]")
    child.expect(">>>")
    child.sendline("/undo")
    child.expect(r"removed: 'Once upon a time\\nthe owl'")
    child.expect(">>>")
    child.send("/se\t")  # completion runs asynchronously: give each Tab a moment
    time.sleep(0.8)
    child.send("\t")  # /set and /seed match; the second Tab picks the first, /set
    time.sleep(0.8)
    child.send(" max\t")  # the only key starting with max
    time.sleep(0.8)
    child.send(" 5\r")
    child.expect("max_new_tokens = 5")
    child.expect(">>>")
    child.sendline("/set max-tokens 4")  # the flag's spelling works too
    child.expect("max_new_tokens = 4")
    child.expect(">>>")
    child.sendline("Once upon a time")
    child.expect(r"\[4 tokens \S+ finish: length")
    child.expect(">>>")
    child.sendeof()
    assert finish(child) == 0
    rows = screen(tmp_path)
    assert ">>> /set max_new_tokens 5" in rows and '>>> """Once upon a time' in rows and '... the owl"""' in rows
    history = tmp_path / "home" / "chat_history"
    assert os.stat(history).st_mode & 0o777 == 0o600  # it holds every message typed
    assert "+/set max_new_tokens 5" in history.read_text(encoding="utf-8")


def test_piped_jsonl_chat_gives_one_object_per_reply(tiny_loaded):
    p = subprocess.run([*CMD, "-i", "--mode", "chat", "--jsonl", "--greedy", "--max-tokens", "12"],
                       input="Once upon a time\n/stats\nthe owl\n", capture_output=True, text=True, env=cli_env(),
                       timeout=120)
    assert p.returncode == 0, p.stderr
    records = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(records) == 2 and p.stdout.count("\n") == 2
    plain = subprocess.run([*CMD, "-i", "--mode", "chat", "--greedy", "--max-tokens", "12"], input="Once upon a time\nthe owl\n",
                           capture_output=True, text=True, env=cli_env(), timeout=120)
    assert "".join(r["text"] + "\n" for r in records) == plain.stdout  # the same replies as the plain chat
    assert [r["user"] for r in records] == ["Once upon a time", "the owl"]
    assert records[1]["context"]["size"] == 128 and records[1]["context"]["used"] > records[0]["context"]["used"]
    assert records[0]["finish_reason"] in ("eos", "stop", "length") and "context: " in p.stderr
