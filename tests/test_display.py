"""The terminal display: panel contents, how streamed text is laid out, when it is used at all, and the
real command in a pseudo-terminal, its screen reconstructed by a terminal emulator (pyte)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest
from rich.console import Console

from conftest import cli_cmd, cli_env, spawn_pty
from llmbuilder_cli.cli.display import LiveView, PanelInfo
from llmbuilder_cli.cli.display_mode import use_live_display
from llmbuilder_cli.config import GenerationConfig

STORY = (
    "Once upon a time, there was a little fox named Finn who lived in a warm den under an old tree.\n"
    "One day, Finn found a shiny red ball.\n\nHe played with it all afternoon, and then he took it home."
)


class FakeTTY(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_panel_lines_for_sampling_and_greedy():
    c = GenerationConfig(temperature=0.7, top_k=40, top_p=0.95, max_new_tokens=60, min_new_tokens=5)
    info = PanelInfo(model="demo", config=c, seed=7, processors=("temperature", "min_new_tokens", "top_k", "top_p"),
                     block_size=256)
    assert info.settings_line() == (
        "demo · sample · temperature 0.7 · top-k 40 · top-p 0.95 · repetition penalty off · tokens 5–60 · seed 7"
    )
    assert info.processors_line() == "temperature → min-tokens EOS block → top-k → top-p → sample"
    g = PanelInfo(model="run/model.pt", config=GenerationConfig(do_sample=False, top_k=0, repetition_penalty=1.2),
                  seed=None, processors=("repetition_penalty",), block_size=128)
    assert g.settings_line() == "run/model.pt · greedy · repetition penalty 1.2 · tokens 0–100"
    assert g.processors_line() == "repetition penalty → argmax"


def _pty_console(monkeypatch, cols: int = 80, rows: int = 24):
    """A rich console writing to a real pseudo-terminal, and a function returning all it received."""
    import os
    import termios
    import threading

    monkeypatch.setenv("TERM", "xterm-256color")
    master, slave = os.openpty()
    termios.tcsetwinsize(slave, (rows, cols))
    out = open(slave, "w", encoding="utf-8")
    received: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            received.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def finish() -> str:
        out.close()
        reader.join(timeout=30)
        os.close(master)
        return b"".join(received).decode("utf-8")

    return Console(file=out), finish


def test_live_view_shows_control_characters_instead_of_obeying_them(monkeypatch):
    pyte = pytest.importorskip("pyte")
    console, finish = _pty_console(monkeypatch)
    info = PanelInfo(model="demo", config=GenerationConfig(), seed=1, processors=(), block_size=256)
    with LiveView(console, info) as view:
        view.feed("red \x1b[31mtext\x1b[0m, clipboard \x1b]52;c;aGk=\x07, clear \x1b[2J\x1b[H end")
        view.tick(1, 1)
    raw = finish()
    assert "╭─" in raw  # the live region was drawn
    assert "\x1b[31m" not in raw and "\x1b]52" not in raw and "\x1b[2J" not in raw and "\x07" not in raw
    screen = pyte.Screen(80, 24)
    pyte.Stream(screen).feed(raw)
    assert screen.display[0].rstrip() == "red ^[[31mtext^[[0m, clipboard ^[]52;c;aGk=^G, clear ^[[2J^[[H end"
    assert all(not row.strip() for row in screen.display[1:])  # the panel is gone


def test_counts_and_spinner_read_naturally(monkeypatch):
    from llmbuilder_cli.types import GenerationStats, StreamChunk, footer_text

    console, finish = _pty_console(monkeypatch)
    info = PanelInfo(model="demo", config=GenerationConfig(), seed=1, processors=(), block_size=256)
    with LiveView(console, info) as view:
        view.feed("x")
        view.tick(1, 5)
        view.feed("\n")  # a new row: the panel is drawn again, with the count
    raw = finish()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    assert re.search(r"[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] waiting for the first token", plain) and "  waiting" not in plain
    assert "1 token · " in plain and "1 tokens" not in plain
    chunk = StreamChunk(text="", token_id=None, index=-1, finish_reason="length",
                        stats=GenerationStats(new_tokens=1, seed=3))
    assert footer_text(chunk).startswith("[1 token · finish: length")


@pytest.mark.parametrize("width", [20, 33, 80])
def test_streamed_text_is_laid_out_in_rows_without_loss_or_repeats(width):
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=False, color_system=None)
    info = PanelInfo(model="demo", config=GenerationConfig(), seed=1, processors=(), block_size=256)
    with LiveView(console, info) as view:
        for i in range(0, len(STORY), 3):  # pieces that split words and newlines anywhere
            view.feed(STORY[i : i + 3])
            view.tick(i // 3 + 1, i // 3 + 1)
    rows = out.getvalue().split("\n")
    assert all(len(r) <= width for r in rows), rows
    # Every word, in order, exactly once; paragraph breaks kept as row breaks.
    assert " ".join(out.getvalue().split()) == " ".join(STORY.split())
    assert "" in rows  # the blank line between paragraphs survives


def test_live_display_only_on_two_terminals_without_opt_outs(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    tty, pipe = FakeTTY(True), FakeTTY(False)
    assert use_live_display(plain=False, quiet=False, stdout=tty, stderr=tty)
    assert not use_live_display(plain=False, quiet=False, stdout=pipe, stderr=tty)
    assert not use_live_display(plain=False, quiet=False, stdout=tty, stderr=pipe)
    assert not use_live_display(plain=True, quiet=False, stdout=tty, stderr=tty)
    assert not use_live_display(plain=False, quiet=True, stdout=tty, stderr=tty)
    monkeypatch.setenv("TERM", "dumb")
    assert not use_live_display(plain=False, quiet=False, stdout=tty, stderr=tty)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_live_display(plain=False, quiet=False, stdout=tty, stderr=tty)


def _terminal_env(tmp_path) -> dict[str, str]:
    env = cli_env()
    env.pop("NO_COLOR", None)
    env["TERM"] = "xterm-256color"
    env["LLMBUILDER_HOME"] = str(tmp_path)
    return env


def test_piped_output_has_no_escape_bytes(tmp_path):
    args = cli_cmd("generate", "text", "-p", "Once upon a time", "--seed", "4", "--max-tokens", "30")
    p = subprocess.run(args, capture_output=True, env=_terminal_env(tmp_path), timeout=120)
    assert p.returncode == 0
    assert b"\x1b" not in p.stdout and b"\x1b" not in p.stderr
    assert p.stdout.startswith(b"Once upon a time") and p.stdout.endswith(b"\n")


# ------------------------------------------------------------------------------------- real terminal
pexpect = pytest.importorskip("pexpect")
pyte = pytest.importorskip("pyte")

COLS, ROWS = 50, 12  # narrow and short: the story must scroll


def _expected(tmp_path, *args: str) -> dict:
    p = subprocess.run(cli_cmd("generate", "text", *args, "--json", "-q"), capture_output=True,
                       env=_terminal_env(tmp_path), timeout=120, check=True)
    return json.loads(p.stdout)


def _spawn(tmp_path, *args: str):
    child = spawn_pty(sys.executable, ["-m", "llmbuilder_cli", "generate", "text", *args], env=_terminal_env(tmp_path),
                          encoding="utf-8", timeout=120, dimensions=(ROWS, COLS))
    child.logfile_read = io.StringIO()  # everything the terminal received
    return child


def _plain(raw: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)


def _screen_transcript(raw: str) -> list[str]:
    screen = pyte.HistoryScreen(COLS, ROWS, history=10_000, ratio=0.5)
    stream = pyte.Stream(screen)
    stream.feed(raw.replace("\n", "\r\n") if "\r\n" not in raw else raw)
    top = ["".join(ch.data for ch in (line[x] for x in range(COLS))).rstrip() for line in screen.history.top]
    return top + [line.rstrip() for line in screen.display]


def test_real_terminal_shows_panel_then_leaves_the_whole_text_and_footer(tmp_path):
    args = ("-p", "Once upon a time", "--seed", "4", "--max-tokens", "160")
    expected = _expected(tmp_path, *args)
    child = _spawn(tmp_path, *args)
    child.expect(pexpect.EOF)
    child.close()
    raw = child.logfile_read.getvalue()
    assert child.exitstatus == 0, raw[-500:]
    plain = _plain(raw)
    assert "╭─ llmbuilder ─" in plain and "tok/s · context" in plain  # the live panel was drawn
    assert "demo · sample · temperature 0.8" in plain
    lines = _screen_transcript(raw)
    text = " ".join(" ".join(lines).split())
    story = " ".join(expected["full_text"].split())
    assert text.count(story) == 1, (story, text)  # the whole text, once: nothing cut, nothing repeated
    assert "llmbuilder ──" not in text and "│" not in text  # the transient panel is gone from the screen
    footer = [line for line in lines if line.startswith("[160 tokens") or line.startswith("[")]
    assert footer and "finish: length" in " ".join(lines) and "seed 4" in " ".join(lines)


def test_ctrl_c_in_the_live_display_keeps_text_and_exits_130(tmp_path):
    child = _spawn(tmp_path, "-p", "Once upon a time", "--max-tokens", "100000", "--ignore-eos", "--seed", "2")
    child.expect(r"\d+ tokens · [\d.]+ tok/s")  # the panel is counting
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    lines = _screen_transcript(child.logfile_read.getvalue())
    joined = " ".join(lines)
    assert "Traceback" not in joined
    assert re.search(r"\[\d+ tokens · finish: cancelled", joined)
    assert "Once upon a time" in joined


def test_chat_replies_use_the_live_panel(tmp_path):
    child = spawn_pty(sys.executable, ["-m", "llmbuilder_cli", "generate", "text", "-i", "--mode", "chat", "--seed", "5",
                                           "--max-tokens", "120", "--ignore-eos"],
                          env=_terminal_env(tmp_path), encoding="utf-8", timeout=120, dimensions=(ROWS, COLS))
    child.logfile_read = io.StringIO()
    child.expect(">>>")
    child.sendline("Once upon a time")
    child.expect(r"\[context \d+/256\]")
    child.expect(">>>")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    plain = _plain(child.logfile_read.getvalue())
    assert "╭─ llmbuilder ─" in plain and "demo · sample · temperature 0.8" in plain
    assert re.search(r"\[120 tokens · finish: length", " ".join(_screen_transcript(child.logfile_read.getvalue())))
