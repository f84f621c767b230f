"""How the process ends: a reader that goes away, a command group given nothing to do, Ctrl-C while the
model loads, and a second Ctrl-C or a SIGTERM while the process is already on its way out.

Every case runs the real program in a subprocess (or a pseudo-terminal) and checks OUR exit status and
stderr, never that of another program in a pipeline. To interrupt "while loading" at a known moment, a
``sitecustomize`` module on PYTHONPATH makes loading slow: the real model loads (torch and all), then the
loader waits, after touching a marker file the test watches for.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from conftest import cli_cmd, cli_env, default_sigint, spawn_pty
from llmbuilder_cli.cli.app import main

SLOW_LOAD = '''
import os, time
from llmbuilder_cli import api
_load = api.load_model
def load_model(*args, **kwargs):
    loaded = _load(*args, **kwargs)
    open(os.environ["SLOW_LOAD_MARKER"], "w").close()
    # A model that takes long to load (longer than five loads on a busy machine take), in short steps as
    # real loading reads in chunks. One long sleep would be wrong: torch's worker threads can take a signal
    # meant for the process (Linux hands it to another thread when the main one already has one pending),
    # and Python runs its handlers only when the main thread's system call returns.
    for _ in range(36000):
        time.sleep(0.05)
    return loaded
api.load_model = load_model
'''


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err and "Exception ignored" not in err and "Error" not in err, err


# ------------------------------------------------------------------------------------ closed stdout
def _reader_goes_away(args: list[str], stdin: bytes | None = None, read: int = 5) -> tuple[int, str]:
    """Run the CLI with stdout on a pipe; read ``read`` bytes (0: none), close our end, then wait."""
    proc = subprocess.Popen(cli_cmd(*args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=cli_env())
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    if read == 0:
        proc.stdout.close()  # gone before the first byte
    if stdin is not None:
        proc.stdin.write(stdin)
    proc.stdin.close()
    if read:
        assert len(proc.stdout.read(read)) == read
        proc.stdout.close()
    err = proc.stderr.read().decode("utf-8", "replace")
    return proc.wait(timeout=120), err


LONG = ["--max-tokens", "400", "--ignore-eos", "-q"]


@pytest.mark.parametrize(
    "args, stdin",
    [
        (["generate", "text", "-p", "hi", *LONG], None),
        pytest.param(["generate", "text", "--prompts-file", "-", "--jsonl", *LONG], b"one\ntwo\nthree\nfour\n",
                     marks=pytest.mark.slow),
        pytest.param(["generate", "text", "-i", *LONG], b"hello\nand then?\nmore\nmore\n", marks=pytest.mark.slow),
    ],
    ids=["text", "batch", "chat"],
)
def test_a_closed_stdout_ends_generation_quietly_with_0(args, stdin):
    code, err = _reader_goes_away(args, stdin)
    assert code == 0, err
    _no_traceback(err)


@pytest.mark.parametrize("args", [["--help"], [], ["generate", "text", "--help"], ["--version"]])
def test_help_into_a_closed_pipe_exits_0(args):
    code, err = _reader_goes_away(args, read=0)
    assert (code, err) == (0, "")


# ------------------------------------------------------------------------------------------ no args
@pytest.mark.parametrize("args", [[], ["generate"], ["config"], ["export"]])
def test_a_command_group_without_arguments_shows_its_help(args, capsys):
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "Usage:" in out and "Commands" in out
    assert err == ""


def test_threads_auto_is_accepted_by_the_flag(capsys):
    code = main(["generate", "text", "--threads", "auto", "-p", "hi", "--max-tokens", "2", "--json", "-q"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["stats"]["threads"] == 1  # the demo model is small: one thread
    assert main(["generate", "text", "--threads", "many", "-p", "hi"]) == 2
    assert "threads must be a whole number >= 1 or 'auto' (got 'many')" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ signals
def _slow_env(tmp_path: Path, marker: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    module = site / "sitecustomize.py"
    if not module.exists():  # once, and whole: a process starting while the file is rewritten would run unslowed
        partial = site / "sitecustomize.partial"
        partial.write_text(SLOW_LOAD, encoding="utf-8")
        partial.replace(module)
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env["SLOW_LOAD_MARKER"] = str(marker)
    return env


def _wait_for(marker: Path, alive) -> None:
    deadline = time.monotonic() + 300  # a generous bound, only to catch a hang
    while not marker.exists():
        assert time.monotonic() < deadline and alive(), "the loader never started"
        time.sleep(0.05)


GEN = ["generate", "text", "-p", "hi", "--max-tokens", "5"]


def test_ctrl_c_while_loading_says_interrupted(tmp_path):
    marker = tmp_path / "loading"
    child = spawn_pty(sys.executable, ["-m", "llmbuilder_cli", *GEN], env=_slow_env(tmp_path, marker),
                      encoding="utf-8", timeout=60)
    _wait_for(marker, child.isalive)
    child.kill(signal.SIGINT)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130, child.before
    assert "Interrupted." in child.before and "Traceback" not in child.before, child.before


SAYS = {130: "Interrupted.", 143: "Terminated."}


@pytest.mark.slow
@pytest.mark.parametrize(
    "first, second, codes",
    [
        (signal.SIGINT, signal.SIGINT, {130}),
        (signal.SIGINT, signal.SIGTERM, {130, 143}),  # a SIGTERM while Ctrl-C still unwinds ends it as SIGTERM
        (signal.SIGTERM, signal.SIGINT, {143}),
        (signal.SIGTERM, signal.SIGTERM, {143}),
    ],
    ids=["ctrl-c-twice", "ctrl-c-then-sigterm", "sigterm-then-ctrl-c", "sigterm-twice"],
)
def test_a_second_signal_on_the_way_out_prints_no_traceback(tmp_path, first, second, codes):
    """Several processes at once (the test stays short); the second signal follows the first after 0 to
    40 ms, while the first is handled, output is flushed and Python and torch clean up. The process
    exits (never killed by the signal) with 130 or 143 and says which."""
    runs = []
    for i in range(5):
        marker = tmp_path / f"loading-{i}"
        proc = subprocess.Popen(cli_cmd(*GEN), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=_slow_env(tmp_path, marker), preexec_fn=default_sigint)
        runs.append((proc, marker))
    results = []
    for proc, marker in runs:
        try:
            _wait_for(marker, lambda: proc.poll() is None)
        except AssertionError:
            raise AssertionError(proc.communicate(timeout=60)[1].decode("utf-8", "replace")) from None
    for proc, marker in runs:
        proc.send_signal(first)
        time.sleep(random.uniform(0, 0.04))
        proc.send_signal(second)
    for proc, marker in runs:
        out, err = proc.communicate(timeout=120)
        results.append((proc.returncode, err.decode("utf-8", "replace")))
    for returncode, err in results:
        assert returncode in codes, err
        assert "Traceback" not in err and "Exception ignored" not in err, err
        assert SAYS[returncode] in err, err


def test_the_exit_code_on_the_way_out():
    from llmbuilder_cli.interrupts import ExitPath

    assert ExitPath().code(0) == 0  # nothing arrived
    late = ExitPath()
    late.received.append(signal.SIGTERM)
    assert late.code(0) == 143  # a run that was finishing reports the late signal
    assert late.code(130) == 130  # one that was interrupted keeps its code
    late.received[:] = [signal.SIGINT, signal.SIGTERM]
    assert late.code(1) == 130  # the first late signal decides
