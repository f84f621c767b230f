"""The two interactive modes: complete (each line continued as a prompt, exactly like one-shot generation)
and chat. In-process through `interactive_cli`/`run_chat`, and the real command piped and in a pty."""

from __future__ import annotations

import io
import json
import shlex
import subprocess
import sys

import pytest

from conftest import MODEL_PT, TOKENIZER_DIR, cli_env, spawn_pty
from llmbuilder_cli import api
from llmbuilder_cli.chat import completions, run_chat
from llmbuilder_cli.config import GenerationConfig
from llmbuilder_cli.engine.completion import Completion
from llmbuilder_cli.engine.conversation import Conversation

CMD = [sys.executable, "-m", "llmbuilder_cli", "generate", "text", "-m", str(MODEL_PT), "-t", str(TOKENIZER_DIR),
       "--device", "cpu"]
LINES = ["The 07:15 train from holt to fenby left platform 7. For supper the c", "Once upon a time", "the owl"]
ROWS, COLS = 40, 160


def one_shot(*args: str, model: list[str] = CMD) -> str:
    """What ``generate text ARGS`` prints on stdout (piped)."""
    p = subprocess.run([*model, *args, "-q"], capture_output=True, text=True, env=cli_env(), timeout=120,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    return p.stdout


def session(loaded, text: str, **kwargs) -> tuple[int, str, str]:
    """`interactive_cli` over ``text`` as input → (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    rc = api.interactive_cli(loaded, input_stream=io.StringIO(text), output_stream=out, error_stream=err, **kwargs)
    return rc, out.getvalue(), err.getvalue()


def expected(loaded, prompt: str, **settings) -> str:
    """One-shot output for ``prompt`` through the API: the normalised prompt, the continuation, a newline."""
    return api.generate(loaded, prompt=prompt, **settings).full_text + "\n"


# --------------------------------------------------------------------------------------------- in-process
def test_complete_mode_is_the_default_without_a_chat_template_and_equals_one_shot(tiny_loaded):
    rc, out, err = session(tiny_loaded, "".join(line + "\n" for line in LINES), do_sample=False, max_new_tokens=12)
    assert rc == 0, err
    assert out == "".join(expected(tiny_loaded, line, do_sample=False, max_new_tokens=12) for line in LINES)
    assert out.startswith("the ")  # the line as the tokenizer normalised it, then the continuation


def test_a_fixed_seed_seeds_every_line_as_one_shot_does(tiny_loaded):
    rc, out, _ = session(tiny_loaded, "Once upon a time\nOnce upon a time\nthe owl\n", seed=7, max_new_tokens=10)
    assert rc == 0
    first = expected(tiny_loaded, "Once upon a time", seed=7, max_new_tokens=10)
    assert out == first + first + expected(tiny_loaded, "the owl", seed=7, max_new_tokens=10)
    # /seed N inside the loop does the same from then on
    rc, out, _ = session(tiny_loaded, "/seed 7\nOnce upon a time\n", max_new_tokens=10)
    assert out == first


def test_context_on_puts_earlier_lines_and_continuations_before_the_new_line(tiny_loaded):
    cfg = dict(do_sample=False, max_new_tokens=8)
    rc, out, err = session(tiny_loaded, "/context on\nOnce upon a time\nthe owl\n/stats\n/context off\nthe owl\n",
                           **cfg)
    assert rc == 0, err
    first = api.generate(tiny_loaded, prompt="Once upon a time", **cfg)
    second = api.generate(tiny_loaded, prompt="Once upon a time" + first.text + "\nthe owl", **cfg)
    alone = api.generate(tiny_loaded, prompt="the owl", **cfg)
    assert out == (first.full_text + "\n" + alone.prompt_text + second.text + "\n"  # the typed line, normalised
                   + alone.full_text + "\n")
    assert second.text != alone.text  # the context made a difference
    assert "context on: earlier lines" in err and "context off: each line" in err and "context: " in err


def test_mode_switches_and_each_mode_answers_its_own_way(tiny_loaded):
    cfg = GenerationConfig(do_sample=False, max_new_tokens=8)
    rc, out, err = session(tiny_loaded, "/mode\n/mode chat\nOnce upon a time\n/mode complete\nOnce upon a time\n"
                           "/mode banana\n/system hi\n", config=cfg)
    assert rc == 0
    reply = Conversation(tiny_loaded).start("Once upon a time", cfg)[0].result().text
    assert out == reply + "\n" + expected(tiny_loaded, "Once upon a time", config=cfg)
    assert "complete mode — each line is continued as a prompt; /mode chat to converse (no chat template)" in err
    assert "chat mode — type a message" in err and "usage: /mode chat   or   /mode complete" in err
    assert "complete mode has no system text" in err


def test_save_records_the_mode_and_load_restores_it(tiny_loaded, tmp_path):
    cfg = dict(do_sample=False, max_new_tokens=6)
    path = tmp_path / "lines.json"
    rc, out, err = session(tiny_loaded, f"/context on\nOnce upon a time\n/save {path}\n/save {tmp_path / 'l.md'}\n",
                           **cfg)
    assert rc == 0 and "saved 1 line to" in err
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["mode"] == "complete" and data["context"] is True
    assert data["turns"] == [{"user": "Once upon a time", "reply": out[len("once upon a time"):-1]}]
    assert "## Prompt" in (tmp_path / "l.md").read_text(encoding="utf-8")
    # a chat session loading it comes back in complete mode, with the context kept
    rc, out2, err2 = session(tiny_loaded, f"/load {path}\nthe owl\n/mode\n/clear\n", mode="chat", **cfg)
    assert "loaded 1 line and their settings from" in err2 and "(complete mode, context kept)" in err2
    assert f"(restored by /load {path})" in err2 and "history cleared" in err2
    turn = data["turns"][0]
    cont = api.generate(tiny_loaded, prompt=turn["user"] + turn["reply"] + "\nthe owl", **cfg).text
    assert out2 == "the owl" + cont + "\n"


def test_jsonl_in_complete_mode_carries_the_prompt_and_the_continuation(tiny_loaded):
    rc, out, _ = session(tiny_loaded, "Once upon a time\nthe owl\n", do_sample=False, max_new_tokens=10, jsonl=True)
    assert rc == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["mode"] for r in records] == ["complete", "complete"]
    assert [r["prompt"] for r in records] == ["Once upon a time", "the owl"]
    assert [r["prompt_text"] + r["text"] + "\n" for r in records] == [
        expected(tiny_loaded, p, do_sample=False, max_new_tokens=10) for p in ("Once upon a time", "the owl")]


def test_a_model_with_a_chat_template_starts_in_chat_mode(tiny_loaded, monkeypatch):
    monkeypatch.setattr(tiny_loaded.tokenizer, "chat_template",
                        "{% for m in messages %}{{ m['content'] }} {% endfor %}", raising=False)
    rc, out, _ = session(tiny_loaded, "Once upon a time\n", do_sample=False, max_new_tokens=6, jsonl=True)
    assert rc == 0 and json.loads(out)["mode"] == "chat"
    rc, out, _ = session(tiny_loaded, "Once upon a time\n", do_sample=False, max_new_tokens=6, jsonl=True,
                         mode="complete")
    assert json.loads(out)["mode"] == "complete"


def test_banner_says_the_mode_and_why(tiny_loaded):
    def banner(**kw) -> str:
        err = io.StringIO()
        run_chat(Conversation(tiny_loaded), GenerationConfig(), input_stream=io.StringIO(""),
                 output_stream=io.StringIO(), error_stream=err, show_prompt=True, **kw)
        return err.getvalue().splitlines()[0]

    comp = Completion(tiny_loaded)
    assert banner(completion=comp, mode="complete", mode_reason="no chat template") == (
        "Complete mode (no chat template): each line is continued as a prompt; /mode chat to converse.")
    assert banner(completion=comp, mode="chat", mode_reason="as asked; no chat template").startswith(
        "Chat mode (as asked; no chat template): type a message and press Enter")


def test_system_text_picks_chat_and_contradicting_it_is_an_error(tiny_loaded):
    rc, out, _ = session(tiny_loaded, "hello\n", system="a frog story", do_sample=False, max_new_tokens=4, jsonl=True)
    assert json.loads(out)["mode"] == "chat"
    with pytest.raises(Exception, match="system text is for chat mode"):
        session(tiny_loaded, "hello\n", system="x", mode="complete")
    with pytest.raises(Exception, match="unknown mode"):
        session(tiny_loaded, "hello\n", mode="banana")


def test_tab_completes_mode_and_context_words():
    words = completions()
    assert words["/mode"] == ("chat", "complete") and words["/context"] == ("on", "off")


def test_mode_setting_flag_env_and_profile_key(tmp_path):
    from llmbuilder_cli import settings as st
    from llmbuilder_cli.errors import ConfigError

    assert st.resolve({}, env={"LLMBUILDER_MODE": "Complete"}, settings=st.Settings(tmp_path / "s.toml")
                      ).values["mode"] == "complete"
    with pytest.raises(ConfigError, match="unknown mode"):
        st.parse_value("mode", "talk")
    p = subprocess.run([*CMD, "-p", "x", "--mode", "chat"], capture_output=True, text=True, env=cli_env(), timeout=60)
    assert p.returncode == 2 and p.stderr.startswith("Error: --mode is for --interactive")


# ------------------------------------------------------------------------------------------ the real command
def test_piped_complete_mode_prints_what_one_shot_prints_line_by_line():
    p = subprocess.run([*CMD, "-i", "--greedy", "--max-tokens", "12"], input="".join(x + "\n" for x in LINES),
                       capture_output=True, text=True, env=cli_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "".join(one_shot("-p", line, "--greedy", "--max-tokens", "12") for line in LINES)


pexpect = pytest.importorskip("pexpect")
pyte = pytest.importorskip("pyte")


def _screen(raw: bytes) -> list[str]:
    scr = pyte.Screen(COLS, ROWS)
    pyte.ByteStream(scr).feed(raw)
    return [row.rstrip() for row in scr.display]


def _drive(child, lines: list[str]) -> None:
    for line in lines:
        child.expect(">>>")
        child.sendline(line)
        child.expect(r"finish: \w+")
    child.expect(">>>")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.mark.slow
@pytest.mark.parametrize("redirected", [False, True])
def test_complete_mode_in_a_terminal_shows_and_logs_what_one_shot_prints(tmp_path, redirected):
    argv = [*CMD, "-i", "--greedy", "--max-tokens", "12"]
    log = tmp_path / "out.txt"
    env = {**cli_env(), "LLMBUILDER_HOME": str(tmp_path / "home")}
    line = "exec " + shlex.join(argv) + (" > " + shlex.quote(str(log)) if redirected else "")
    child = spawn_pty("bash", ["--norc", "-c", line], env=env, timeout=90, dimensions=(ROWS, COLS))
    raw = io.BytesIO()
    child.logfile_read = raw
    child.expect(r"Complete mode \(no chat template\): each line is continued as a prompt; /mode chat to converse")
    _drive(child, LINES)
    rows = _screen(raw.getvalue())
    outputs = [one_shot("-p", x, "--greedy", "--max-tokens", "12") for x in LINES]
    if redirected:  # the log reads like one-shot output; the screen holds the typed lines, no generated text
        assert log.read_text(encoding="utf-8") == "".join(outputs)
        assert not any(o.rstrip("\n") in rows for o in outputs)
    for typed, out in zip(LINES, outputs):
        at = rows.index(">>> " + typed)
        if not redirected:  # below the typed line: the text as the model saw and continued it
            assert rows[at + 1] == out.rstrip("\n")


def test_ctrl_c_mid_continuation_keeps_the_loop_going(tmp_path):
    import time

    env = {**cli_env(), "LLMBUILDER_HOME": str(tmp_path)}
    child = spawn_pty(CMD[0], [*CMD[1:], "-i", "--max-tokens", "1000000", "--ignore-eos", "--seed", "1"], env=env,
                      timeout=90, dimensions=(ROWS, COLS))
    raw = io.BytesIO()
    child.logfile_read = raw
    child.expect(">>>")
    child.sendline("Once upon a time")
    child.expect("once upon a time")  # the echo, then the continuation streams
    time.sleep(1.5)
    child.sendintr()
    child.expect(r"not kept in the history; /keep keeps it")
    child.expect(">>>")
    child.sendline("/set max_new_tokens 5")
    child.expect(">>>")
    child.sendline("the owl")
    child.expect(r"\[5 tokens \S+ finish: length")
    child.expect(">>>")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    out = one_shot("-p", "the owl", "--max-tokens", "5", "--ignore-eos", "--seed", "1")
    assert out.rstrip("\n") in _screen(raw.getvalue())  # the same seed for every line, as one-shot


def test_the_demo_model_starts_in_complete_mode_in_the_live_view(tmp_path):
    env = {**cli_env(), "LLMBUILDER_HOME": str(tmp_path), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    demo = [sys.executable, "-m", "llmbuilder_cli", "generate", "text"]
    child = spawn_pty(demo[0], [*demo[1:], "-i", "--greedy", "--max-tokens", "8"], env=env, timeout=120,
                      dimensions=(ROWS, COLS))
    raw = io.BytesIO()
    child.logfile_read = raw
    child.expect(r"Complete mode \(no chat template\)")
    _drive(child, ["Once upon a time"])
    out = one_shot("-p", "Once upon a time", "--greedy", "--max-tokens", "8", model=demo)
    assert out.rstrip("\n") in _screen(raw.getvalue())


def test_chat_template_file_on_the_command_line_starts_chat_mode(tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }} {% endfor %}", encoding="utf-8")
    p = subprocess.run([*CMD, "-i", "--jsonl", "--greedy", "--max-tokens", "6", "--chat-template", str(template)],
                       input="once upon a time\n", capture_output=True, text=True, env=cli_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["mode"] == "chat"
