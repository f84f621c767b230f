"""The live display in a real terminal, checked on the SCREEN: the command runs in a pseudo-terminal, every
byte it sends is replayed through the pyte terminal emulator, and what is left on the screen and in the
scrollback must be the ``--plain`` text of the same seed (its words, in order, each once and whole, in rows
narrower than the terminal) at several widths, after Ctrl-C, after a resize mid-stream and in a terminal
shorter than the panel, with nothing of the panel left. A replay read by read checks that the text on the
screen is at every moment a beginning of the final text: no row is ever shown twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import MODEL_PT, TOKENIZER_DIR, cli_cmd, cli_env, spawn_pty

pexpect = pytest.importorskip("pexpect")
pyte = pytest.importorskip("pyte")

TINY = ["-m", str(MODEL_PT), "-t", str(TOKENIZER_DIR), "--device", "cpu"]
FOOTER = re.compile(r"^\[\d+ tokens? · finish: ")
PANEL_MARKS = ("╭", "╰", "│", "llmbuilder ─", "tok/s · context", "waiting for the first token")


@pytest.fixture(autouse=True)
def _demo_notice_already_shown():
    from llmbuilder_cli import demo, paths

    paths.set_state_marker(demo.NOTICE_MARKER)  # the one-time note would make the two runs differ


def terminal_env() -> dict[str, str]:
    env = cli_env()
    env.pop("NO_COLOR", None)
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    env["TERM"] = "xterm-256color"
    return env


class Chunks:
    """pexpect's logfile_read: keeps each read from the terminal apart (the frame-by-frame replay)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, data: str) -> None:
        self.parts.append(data)

    def flush(self) -> None:
        pass

    def text(self) -> str:
        return "".join(self.parts)


class Terminal:
    """A pyte screen with its scrollback; `rows()` is everything it shows, oldest first."""

    def __init__(self, cols: int, rows: int) -> None:
        self.screen = pyte.HistoryScreen(cols, rows, history=100_000, ratio=0.5)
        self.stream = pyte.Stream(self.screen)

    def feed(self, data: str) -> None:
        self.stream.feed(data)

    def resize(self, cols: int, rows: int) -> None:
        """As a terminal does: fewer rows drop blank rows under the cursor first, then push rows off the
        top into the scrollback (pyte alone would delete them and leave the cursor where it was)."""
        scr = self.screen
        if rows < scr.lines:
            push = max(0, (scr.lines - rows) - (scr.lines - 1 - scr.cursor.y))
            for y in range(push):
                scr.history.top.append(scr.buffer[y])
            for y in range(rows):
                scr.buffer[y] = scr.buffer[y + push]
            for y in range(rows, scr.lines):
                scr.buffer.pop(y, None)
            scr.cursor.y -= push
            scr.lines = rows
            scr.set_margins()
        scr.resize(rows, cols)

    def rows(self) -> list[str]:
        def row(line) -> str:
            width = max(line.keys(), default=-1) + 1
            return "".join(line[x].data for x in range(width)).rstrip()

        out = [row(line) for line in self.screen.history.top] + [r.rstrip() for r in self.screen.display]
        while out and not out[-1]:
            out.pop()
        return out


def text_rows(rows: list[str]) -> list[str]:
    """The rows before the stats footer (stderr), without trailing blank rows."""
    end = next((i for i, r in enumerate(rows) if FOOTER.match(r)), len(rows))
    out = rows[:end]
    while out and not out[-1]:
        out.pop()
    return out


def plain_stdout(*args: str) -> str:
    p = subprocess.run(cli_cmd("generate", "text", *args, "--plain", "-q"), capture_output=True,
                       env=terminal_env(), timeout=180, check=True)
    return p.stdout.decode("utf-8")


def assert_same_text(rows: list[str], plain: str, cols: int) -> None:
    """The rows hold the plain text's words, in order, each once and whole, in rows narrower than the
    terminal (so the terminal never wrapped one itself)."""
    assert [w for r in rows for w in r.split()] == plain.split()
    assert all(len(r) < cols for r in rows), max(rows, key=len)


def run_live(args: list[str], cols: int, rows: int, *, during=None):
    """Run the command in a pty of this size; `during(child, chunks, term)` acts while it streams.
    Returns (exit status, chunks, the terminal after replaying everything)."""
    child = spawn_pty(sys.executable, ["-m", "llmbuilder_cli", "generate", "text", *args], env=terminal_env(),
                      encoding="utf-8", timeout=180, dimensions=(rows, cols))
    chunks = Chunks()
    child.logfile_read = chunks
    term = Terminal(cols, rows)
    if during is not None:
        during(child, chunks, term)
    child.expect(pexpect.EOF)
    child.close()
    fed = sum(len(p) for p in getattr(term, "fed_parts", []))
    term.feed(chunks.text()[fed:])
    return child.exitstatus, chunks, term


def no_csi(raw: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)


def is_panel_row(row: str) -> bool:
    return any(mark in row for mark in PANEL_MARKS) or row.startswith("llmbuilder ")  # the box, the status line


def assert_no_panel_left(rows: list[str]) -> None:
    left = [r for r in rows if is_panel_row(r)]
    assert not left, left


def assert_never_shown_twice(chunks: Chunks, cols: int, rows: int, plain: str) -> None:
    """Replay the bytes read by read: at every point the text on the screen and in the scrollback (the
    panel and the loading spinner aside) is a beginning of the final text: nothing doubled, nothing stray."""
    final = "".join(plain.split())
    term = Terminal(cols, rows)
    for part in chunks.parts:
        term.feed(part)
        shown = "".join(w for r in text_rows(term.rows()) if not is_panel_row(r) and "Loading the model" not in r
                        for w in r.split())
        assert final.startswith(shown), (shown[-200:], final[: len(shown)][-200:])


# ------------------------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("cols", [100, pytest.param(40, marks=pytest.mark.slow), pytest.param(200, marks=pytest.mark.slow)])
def test_the_screen_ends_with_the_plain_text_and_never_shows_a_row_twice(cols):
    args = [*TINY, "-p", "Once upon a time", "--seed", "4", "--max-tokens", "90", "--ignore-eos"]
    rows = 24
    plain = plain_stdout(*args)
    status, chunks, term = run_live(args, cols, rows)
    assert status == 0
    raw = no_csi(chunks.text())
    assert "╭─ llmbuilder ─" in raw and "tok/s · context" in raw  # the live panel was drawn
    shown = term.rows()
    assert_same_text(text_rows(shown), plain, cols)
    assert_no_panel_left(shown)
    footer = shown[len(text_rows(shown)):]
    assert FOOTER.match(footer[0]) and "finish: length" in " ".join(footer)
    assert all(len(r) <= cols for r in footer) and "tok/s" in " ".join(footer).split()  # wrapped at spaces
    assert_never_shown_twice(chunks, cols, rows, plain)


def test_the_panel_is_never_as_wide_as_the_terminal():
    """The settings line (here with a 19-digit seed and a model path) is shortened with an ellipsis: at
    every moment, every row of the panel on the screen is narrower than the terminal, so none can wrap."""
    args = [*TINY, "-p", "Once upon a time", "--seed", "1234567890123456789", "--max-tokens", "20"]
    cols = 100
    status, chunks, _ = run_live(args, cols, 24)
    assert status == 0
    term = Terminal(cols, 24)
    widest = 0
    for part in chunks.parts:
        term.feed(part)
        panel = [r for r in term.screen.display if r.lstrip()[:1] in ("╭", "│", "╰")]
        widest = max([widest] + [len(r.rstrip()) for r in panel])
        settings = [r for r in panel if "llmbuilder-tiny/model.pt · sample" in r]
        assert all(r.rstrip().endswith("… │") for r in settings), settings
    assert 0 < widest < cols


# ------------------------------------------------------------------------------------------- Ctrl-C
@pytest.mark.parametrize("cols", [100, pytest.param(40, marks=pytest.mark.slow)])
def test_ctrl_c_leaves_the_text_so_far_exactly_as_plain_output(cols):
    seed = "1234567890123456789"  # 19 digits: the settings line is wider than the terminal
    rows = 24

    def interrupt(child, chunks, term):
        child.expect(r"(?<!\d)([3-9]\d|\d{3,}) tokens · ")  # the panel counts at least 30 tokens
        child.sendintr()

    status, chunks, term = run_live([*TINY, "-p", "Once upon a time", "--seed", seed, "--max-tokens", "100000",
                                     "--ignore-eos"], cols, rows, during=interrupt)
    assert status == 130
    shown = term.rows()
    footer = next(r for r in shown if FOOTER.match(r))
    assert "finish: cancelled" in " ".join(shown)
    n = int(re.match(r"\[(\d+) tokens", footer).group(1))
    plain = plain_stdout(*TINY, "-p", "Once upon a time", "--seed", seed, "--max-tokens", str(n), "--ignore-eos")
    assert_same_text(text_rows(shown), plain, cols)  # no ^C glued to the text, no doubled last row
    assert_no_panel_left(shown)
    assert "^C" not in " ".join(shown)


# ------------------------------------------------------------------------------------------- resize
# pyte does not rewrap rows on a resize, it cuts them: the narrower case stops while the text still fits.
@pytest.mark.parametrize("before,after", [((40, 20), (100, 20)), pytest.param((200, 20), (100, 20), marks=pytest.mark.slow),
                                          pytest.param((100, 20), (100, 8), marks=pytest.mark.slow)])
def test_resize_mid_stream_leaves_no_fragment(before, after):
    args = ["-p", "Once upon a time", "--seed", "4", "--max-tokens", "120", "--ignore-eos"]  # the demo model

    def resize(child, chunks, term):
        # Stopped as soon as the echoed prompt is out (it is drawn in the same write as the panel): early
        # enough that the text still fits the narrower width, whatever this machine's speed (waiting for a
        # panel count of 2-9 tokens missed every frame on a fast, idle machine).
        child.expect("Once upon a time")
        os.kill(child.pid, signal.SIGSTOP)  # nothing more is written while the terminal changes size
        try:
            while True:
                child.read_nonblocking(65536, timeout=0.5)
        except pexpect.TIMEOUT:
            pass
        raw = chunks.text()
        term.feed(raw)
        term.fed_parts = [raw]
        term.resize(*after)
        child.setwinsize(after[1], after[0])  # the kernel sends SIGWINCH
        os.kill(child.pid, signal.SIGCONT)

    status, chunks, term = run_live(args, *before, during=resize)
    assert status == 0
    shown = term.rows()
    assert [w for r in text_rows(shown) for w in r.split()] == plain_stdout(*args).split()
    assert_no_panel_left(shown)
    later = no_csi(chunks.text()[len(term.fed_parts[0]):])
    assert ("╭─ llmbuilder ─" if after[1] > 8 else "llmbuilder ") in later  # the panel, for the new size


# ------------------------------------------------------------------------------------------- short terminal
def test_a_terminal_shorter_than_the_panel_gets_one_status_line():
    args = [*TINY, "-p", "Once upon a time", "--seed", "4", "--max-tokens", "60"]
    cols, rows = 30, 8
    plain = plain_stdout(*args)
    status, chunks, term = run_live(args, cols, rows)
    assert status == 0
    raw = no_csi(chunks.text())
    assert "╭" not in raw and re.search(r"llmbuilder .*\d+ tokens? · ", raw)  # the status line, not the box
    shown = term.rows()
    assert_same_text(text_rows(shown), plain, cols)
    assert_no_panel_left(shown)
    assert_never_shown_twice(chunks, cols, rows, plain)


# ------------------------------------------------------------------------------------------- hostile text
# The demo tokenizer keeps escape bytes, so the echoed prompt carries them down the same path as tokens:
# OSC 52 would write the clipboard, ESC[2J would clear the screen.
HOSTILE = "Once \x1b]52;c;aGk=\x07 upon \x1b[2J a time"


def test_escape_sequences_in_the_text_reach_a_pipe_byte_for_byte():
    p = subprocess.run(cli_cmd("generate", "text", "-p", HOSTILE, "--seed", "1", "--max-tokens", "3", "-q"),
                       capture_output=True, env=terminal_env(), timeout=180, check=True)
    assert p.stdout.decode("utf-8").startswith(HOSTILE)


@pytest.mark.parametrize("mode", ["--plain", "live"])
def test_escape_sequences_in_the_text_are_shown_not_obeyed_on_a_terminal(mode):
    args = ["-p", HOSTILE, "--seed", "1", "--max-tokens", "3", *(["--plain"] if mode == "--plain" else [])]
    status, chunks, term = run_live(args, 100, 24)
    assert status == 0
    raw = chunks.text()
    assert "\x1b]52" not in raw and "\x1b[2J" not in raw and "\x07" not in raw
    assert "Once ^[]52;c;aGk=^G upon ^[[2J a time" in "\n".join(term.rows())
