"""Screen captures of the terminal display, for the README's "Using it in a terminal" section.

Runs the real command in a pseudo-terminal (pexpect), replays every byte through the pyte terminal
emulator and prints what the screen shows: one-shot generation while it streams (the process is paused
to take the picture) and after it ends, then a chat reply the same way. Needs the test extras (pexpect,
pyte) and a POSIX system.

    python scripts/terminal_captures.py [--cols 80] [--rows 16]
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import tempfile

import pexpect
import pyte


class Screen:
    def __init__(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.Stream(self.screen)
        self.fed = 0

    def catch_up(self, log: list[str]) -> None:
        data = "".join(log)
        self.stream.feed(data[self.fed :])
        self.fed = len(data)

    def picture(self) -> str:
        rows = [r.rstrip() for r in self.screen.display]
        while rows and not rows[-1]:
            rows.pop()
        return "\n".join(rows)


class Log:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, data: str) -> None:
        self.parts.append(data)

    def flush(self) -> None:
        pass


def paused(child: pexpect.spawn, screen: Screen, log: Log) -> str:
    """The screen while the process is stopped (everything it wrote so far, nothing half-drawn)."""
    os.kill(child.pid, signal.SIGSTOP)
    try:
        while True:
            child.read_nonblocking(65536, timeout=0.5)
    except pexpect.TIMEOUT:
        pass
    screen.catch_up(log.parts)
    picture = screen.picture()
    os.kill(child.pid, signal.SIGCONT)
    return picture


def spawn(args: list[str], cols: int, rows: int, home: str) -> tuple[pexpect.spawn, Log]:
    env = {**os.environ, "TERM": "xterm-256color", "LLMBUILDER_HOME": home, "PROMPT_TOOLKIT_NO_CPR": "1",
           "PYTHONIOENCODING": "utf-8"}
    for key in ("NO_COLOR", "COLUMNS", "LINES"):
        env.pop(key, None)
    child = pexpect.spawn(sys.executable, ["-m", "llmbuilder_cli", *args], env=env, encoding="utf-8", timeout=300,
                          dimensions=(rows, cols))
    log = Log()
    child.logfile_read = log
    return child, log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cols", type=int, default=80)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--seed", default="4")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as home:
        quiet_env = {**os.environ, "LLMBUILDER_HOME": home}
        pexpect.run(f"{sys.executable} -m llmbuilder_cli generate text -p x --max-tokens 1 --plain", env=quiet_env)

        command = ["generate", "text", "-p", "Once upon a time", "--seed", opts.seed, "--max-tokens", "80"]
        child, log = spawn(command, opts.cols, opts.rows, home)
        screen = Screen(opts.cols, opts.rows)
        child.expect(r"(?<!\d)(2\d|[3-9]\d) tokens · ")
        print(f"$ llmbuilder {shlex.join(command)}        # while it streams")
        print(paused(child, screen, log))
        child.expect(pexpect.EOF)
        child.close()
        screen.catch_up(log.parts)
        print(f"\n$ llmbuilder {shlex.join(command)}        # when it is done")
        print(screen.picture())

        command = ["generate", "text", "-i", "--seed", opts.seed, "--max-tokens", "60"]
        child, log = spawn(command, opts.cols, opts.rows, home)
        screen = Screen(opts.cols, opts.rows)
        child.expect(">>>")
        child.sendline("Tell me about the fox.")
        child.expect(r"(?<!\d)(1\d|[2-9]\d) tokens · ")
        print(f"\n$ llmbuilder {shlex.join(command)}        # a reply while it streams")
        print(paused(child, screen, log))
        child.expect(r"\[context \d+/\d+\]")
        child.expect(">>>")
        screen.catch_up(log.parts)
        print(f"\n$ llmbuilder {shlex.join(command)}        # the reply is done")
        print(screen.picture())
        child.sendeof()
        child.expect(pexpect.EOF)
        child.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
