"""The command line as a user meets it: stdout carries only text, stderr the rest, documented exit codes.

Most tests run the real console entry point in a subprocess (the way scripts call it); a few use
Typer's CliRunner where only argument handling is checked.
"""

from __future__ import annotations

import subprocess

import pytest

from conftest import GREEDY_CASES, MODEL_PT, TOKENIZER_DIR, cli_cmd, cli_env
from llmbuilder_cli.config import FIELD_HELP, GenerationConfig

CASE = GREEDY_CASES[0]
BASE = ("generate", "text", "-m", str(MODEL_PT), "-t", str(TOKENIZER_DIR), "--device", "cpu")


def run(*args: str, stdin: str | bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(cli_cmd(*args), input=data, capture_output=True, env=cli_env(), timeout=timeout)
    proc.stdout = proc.stdout.decode("utf-8")  # type: ignore[assignment]
    proc.stderr = proc.stderr.decode("utf-8")  # type: ignore[assignment]
    return proc


def assert_one_line_error(proc, code: int, *fragments: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_prompt_from_stdin_and_from_dash():
    for args in ((), ("--prompt", "-")):
        p = run(*BASE, *args, "--greedy", "--max-tokens", "40", stdin="Once upon a time\n")
        assert p.returncode == 0, p.stderr
        assert p.stdout == CASE["text"] + "\n"


def test_no_echo_prints_only_the_continuation():
    p = run(*BASE, "-p", "Once upon a time", "--greedy", "--max-tokens", "40", "--no-echo", "-q")
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout == CASE["text"][len("once upon a time"):] + "\n"


def test_stdout_has_no_escape_bytes_and_stats_go_to_stderr():
    p = run(*BASE, "-p", "Once upon a time", "--max-tokens", "12", "--seed", "5")
    assert p.returncode == 0
    assert "\x1b" not in p.stdout and "\x1b" not in p.stderr
    assert "12 tokens" in p.stderr and "seed 5" in p.stderr and "finish: length" in p.stderr
    assert "tokens" not in p.stdout


@pytest.mark.slow
def test_seeded_runs_are_byte_identical_across_processes():
    args = (*BASE, "-p", "The little fox", "--max-tokens", "30", "--seed", "1234", "--temperature", "1.1", "-q")
    a, b = run(*args), run(*args)
    assert a.returncode == 0 and a.stdout == b.stdout
    c = run(*BASE, "-p", "The little fox", "--max-tokens", "30", "--seed", "99", "--temperature", "1.1", "-q")
    assert c.stdout != a.stdout


def test_stop_string_cuts_before_the_match():
    p = run(*BASE, "-p", "Once upon a time", "--greedy", "--max-tokens", "40", "--stop", "frog")
    assert p.returncode == 0
    assert p.stdout == "once upon a time, there was a tired \n"
    assert "finish: stop" in p.stderr


def test_sliding_window_note_for_long_prompts():
    prompt = " ".join(["the fox ran to the garden."] * 30)  # well over 128 tokens
    p = run(*BASE, "-p", prompt, "--greedy", "--max-tokens", "5")
    assert p.returncode == 0
    assert "sees only the last 128" in p.stderr and "sliding window of 128" in p.stderr
    assert p.stdout.startswith("the fox ran to the garden. the fox")


@pytest.mark.parametrize(
    "args, code, fragments",
    [
        (("--temperature", "-1"), 2, ("temperature must be",)),
        (("--top-p", "1.5"), 2, ("top_p must be",)),
        (("--max-tokens", "0"), 2, ("max_new_tokens must be",)),
        (("--min-tokens", "50", "--max-tokens", "10"), 2, ("must not exceed",)),
        (("--repetition-penalty", "0"), 2, ("repetition_penalty",)),
        (("--stop", ""), 2, ("stop strings must be non-empty",)),
        (("--temperature", "abc"), 2, ("--temperature", "--help")),
        (("--frobnicate",), 2, ("No such option", "--help")),
        (("--device", "quantum"), 2, ("unknown device",)),
        (("-p", "   "), 2, ("the prompt is empty",)),
        (("-p", "hi", "--interactive"), 2, ("cannot be combined",)),
    ],
)
def test_bad_input_is_one_line_with_exit_code(args, code, fragments):
    assert_one_line_error(run(*BASE, "-p", "hello", *args) if "-p" not in args else run(*BASE, *args),
                          code, *fragments)


def test_load_errors_exit_3(tmp_path):
    p = run("generate", "text", "-m", str(tmp_path / "nope.pt"), "-p", "hi")
    assert_one_line_error(p, 3, "model not found", "--model")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    p = run("generate", "text", "-m", str(tmp_path / "junk.pt"), "-t", str(TOKENIZER_DIR), "-p", "hi")
    assert_one_line_error(p, 3, "not a PyTorch checkpoint (it holds text)")
    p = run("generate", "text", "-m", str(MODEL_PT), "-t", str(tmp_path), "-p", "hi")
    assert_one_line_error(p, 3, "no tokenizer.model or tokenizer.json")


def test_missing_prompt():
    p = run(*BASE, stdin=None)  # stdin is an empty pipe: empty prompt
    assert_one_line_error(p, 2, "prompt is empty")
    # (no --model runs the built-in demo model: tests/test_demo.py)


def test_invalid_utf8_on_stdin():
    assert_one_line_error(run(*BASE, stdin=b"\xff\xfe bad"), 2, "not valid UTF-8")


def test_setup_without_a_terminal_refuses():
    assert_one_line_error(run(*BASE, "--setup"), 2, "needs a terminal")


def test_interactive_with_piped_input_is_a_plain_chat(tiny_loaded):
    from llmbuilder_cli.engine.generate import TextStream
    from llmbuilder_cli.turns import TurnFormat

    p = run(*BASE, "-i", "--mode", "chat", "--greedy", "--max-tokens", "8",
            stdin="Once upon a time\n/set max_new_tokens 3\nAt noon\n")
    assert p.returncode == 0, p.stderr
    fmt = TurnFormat()
    ids = tiny_loaded.tokenizer.encode(fmt.user_text("Once upon a time"))
    first = TextStream(tiny_loaded, "x", GenerationConfig(do_sample=False, max_new_tokens=8, stop=fmt.stops),
                       prompt_ids=ids).result().text
    lines = p.stdout.splitlines()
    assert len(lines) == 2 and lines[0] == first
    assert p.stderr == "max_new_tokens = 3  (" + FIELD_HELP["max_new_tokens"] + ")\n"  # no banner or prompts when piped


def test_version_and_help():
    p = run("--version")
    assert p.returncode == 0 and p.stdout.startswith("llmbuilder-cli ")
    p = run("generate", "text", "--help")
    assert p.returncode == 0
    for flag in ("--model", "--tokenizer", "--prompt", "--max-tokens", "--temperature", "--top-k", "--top-p",
                 "--device", "--setup", "--interactive", "--greedy", "--seed", "--stop", "--min-tokens",
                 "--repetition-penalty"):
        assert flag in p.stdout, flag
    assert "sliding window" in p.stdout


def test_python_dash_m_and_console_script_agree():
    import shutil

    exe = shutil.which("llmbuilder")
    if exe is None:
        pytest.skip("console script not on PATH")
    p = subprocess.run([exe, "--version"], capture_output=True, text=True, env=cli_env())
    assert p.returncode == 0 and p.stdout == run("--version").stdout


def test_system_text_for_the_chat():
    p = run(*BASE, "-i", "--system", "a frog story", "--greedy", "--max-tokens", "4", stdin="hello\n/system\n")
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 1
    assert "system text: 'a frog story'" in p.stderr
    assert_one_line_error(run(*BASE, "--system", "x", "-p", "hi"), 2, "--system is for the chat")
