"""The setup wizard in a real pseudo-terminal: answered key by key, corrected in place, interrupted; run to
the end for models that carry their own tokenizer; a hand-written profile edited; and the screen itself
(the bytes replayed through the pyte terminal emulator at the pty's size)."""

from __future__ import annotations

import re
import sys

import pexpect
import pyte
import pytest

from conftest import MODEL_PT, TOKENIZER_DIR, cli_env, spawn_pty
from llmbuilder_cli import settings as st
from test_wizard import tiny_gguf, tiny_hf_dir

pytestmark = pytest.mark.slow

CLEAR = "\x15"  # Ctrl-U: erase the pre-filled default
DOWN = "\x1b[B"


class Screen:
    """Everything the child writes, replayed through pyte at the pty's size; ``frames`` are the screen's
    rows after each chunk of output, so a check can cover every moment, not only the last one."""

    def __init__(self, columns: int, rows: int):
        self.screen = pyte.Screen(columns, rows)
        self.stream = pyte.Stream(self.screen)
        self.frames: list[list[str]] = []

    def write(self, data: str) -> None:
        self.stream.feed(data)
        self.frames.append(self.rows())

    def flush(self) -> None:
        pass

    def rows(self) -> list[str]:
        return [row.rstrip() for row in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.rows()).strip("\n")


def start(home, *args, columns=120, rows=40):
    env = {**cli_env(), "LLMBUILDER_HOME": str(home)}
    child = spawn_pty(sys.executable, ["-m", "llmbuilder_cli", *args], env=env, encoding="utf-8", timeout=60,
                      dimensions=(rows, columns))
    child.logfile_read = child.screen = Screen(columns, rows)
    return child


def squeezed(text: str) -> str:
    return re.sub(r"\s+", "", text)


def wait_screen(child, text: str, timeout: float = 60) -> None:
    """Read output until ``text`` is on the screen (whitespace ignored, so wrapped rows count)."""
    import time

    deadline = time.monotonic() + timeout
    while squeezed(text) not in squeezed(child.screen.text()):
        assert time.monotonic() < deadline, f"{text!r} never appeared on:\n{child.screen.text()}"
        try:
            child.read_nonblocking(65536, timeout=0.5)
        except pexpect.TIMEOUT:
            pass


def answer(child, question, keys):
    """Type ``keys`` once ``question`` is on screen and its prompt is drawn (line wrapping switched back on
    at the end of prompt_toolkit's render): keys typed earlier, while an explanation that names the setting is
    printed, would meet the terminal's line editing instead of the prompt."""
    child.expect(question)
    child.expect("\x1b\\[\\?7h")
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


def finish(child, status):
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == status


def test_a_gguf_model_runs_to_the_end_without_a_tokenizer_question(tmp_path):
    model = tiny_gguf(tmp_path / "tiny.gguf")
    child = start(tmp_path, "generate", "text", "--setup")
    answer(child, "Model:", CLEAR + str(model) + "\r")
    child.expect(r"tokenizer: the model's own \(inside the file\): huggingface, 263 tokens")
    answer(child, "What do you want to do", "\r")  # one prompt
    answer(child, "Prompt", CLEAR + "the\r")
    answer(child, "Decoding:", DOWN + "\r")  # greedy
    answer(child, "Maximum new tokens", CLEAR + "6\r")
    answer(child, "Minimum new tokens", "\r")
    answer(child, "Repetition penalty", "\r")
    answer(child, "Stop strings", "\r")
    child.expect(re.escape(f"llmbuilder generate text -m {model.resolve()} --greedy --max-tokens 6 -p the"))
    answer(child, "Now:", DOWN + DOWN + "\r")  # save and run
    answer(child, "Profile name:", CLEAR + "tiny\r")
    answer(child, "by default", "y")
    child.expect("Saved profile 'tiny'")
    child.expect(re.escape("Next time: llmbuilder generate text --profile tiny -p ..."))
    child.expect(r"\[\d tokens · finish: (length|eos)")
    finish(child, 0)
    assert "Tokenizer" not in child.screen.text()

    saved = st.Settings.read(tmp_path / "settings.toml")
    assert saved.default_profile == "tiny"
    assert saved.profiles["tiny"] == {"model": str(model.resolve()), "do_sample": False, "max_new_tokens": 6,
                                      "min_new_tokens": 0, "repetition_penalty": 1.0}


def test_a_hugging_face_directory_saved_as_a_chat_profile(tmp_path):
    model = tiny_hf_dir(tmp_path / "tiny-hf")
    child = start(tmp_path, "setup")
    answer(child, "Model:", CLEAR + str(model) + "\r")
    child.expect(r"tokenizer: the model's own \(tokenizer.json\): huggingface, 512 tokens")
    answer(child, "What do you want to do", DOWN + "\r")  # chat
    answer(child, "System text", "Be brief.\r")
    answer(child, "Decoding:", DOWN + "\r")  # greedy
    for question in ("Maximum new tokens", "Minimum new tokens", "Repetition penalty", "Stop strings"):
        answer(child, question, "\r")
    child.expect(re.escape(f"llmbuilder generate text -m {model.resolve()} --greedy --max-tokens 100 -i "
                           "--system 'Be brief.'"))
    answer(child, "Now:", DOWN + "\r")  # save only
    answer(child, "Profile name:", CLEAR + "hf\r")
    answer(child, "by default", "n")
    child.expect("Saved profile 'hf'")
    child.expect(re.escape("Next time: llmbuilder generate text --profile hf -i"))
    finish(child, 0)
    assert "Tokenizer" not in child.screen.text()
    saved = st.Settings.read(tmp_path / "settings.toml")
    assert saved.default_profile is None
    assert saved.profiles["hf"] == {"model": str(model.resolve()), "system": "Be brief.", "do_sample": False,
                                    "max_new_tokens": 100, "min_new_tokens": 0, "repetition_penalty": 1.0}


HAND_WRITTEN = """\
# my settings, written by hand
default_profile = "stories"   # the one I use

[profiles.stories]
# the model I trained last week
model = "demo"
threads = 2            # two cores are enough
device = "cpu"
dtype = "float32"
quantize = "none"
temperature = 0.7      # a bit calmer
max_new_tokens = 40

# another one, for tests
[profiles.other]
model = "demo"
seed = 3
"""


def test_editing_a_hand_written_profile_keeps_its_comments_and_other_settings(tmp_path):
    (tmp_path / "settings.toml").write_text(HAND_WRITTEN, encoding="utf-8")
    child = start(tmp_path, "setup", "--profile", "stories")
    answer(child, "Model:", "\r")  # demo, as saved
    answer(child, "What do you want to do", "\r")
    answer(child, "Prompt", "\r")
    answer(child, "Decoding:", "\r")  # sampling, as saved
    answer(child, "Style:", "\r")  # 0.7 is no preset: custom
    answer(child, "Temperature", CLEAR + "0.9\r")
    for question in ("Top-k", "Top-p", "Maximum new tokens", "Minimum new tokens", "Repetition penalty", "Seed"):
        answer(child, question, "\r")
    answer(child, "Stop strings", CLEAR + "\\n\\n\r")  # typed: \n\n, the end of a paragraph
    child.expect("Your settings")
    child.expect(re.escape("llmbuilder generate text --device cpu --dtype float32 --quantize none --threads 2 "
                           "--sample --temperature 0.9 --top-k 50 --top-p 0.9 --max-tokens 40 --stop $'\\n\\n' "
                           "-p 'Once upon a time'"))
    answer(child, "Now:", DOWN + "\r")  # save
    answer(child, "Profile name:", "\r")  # the profile being edited: no "Replace it?"
    answer(child, "by default", "\r")
    child.expect("Saved profile 'stories'")
    finish(child, 0)
    assert "Replace it?" not in child.screen.text()

    head, tail = HAND_WRITTEN.split("\n# another one")
    head = head.replace("temperature = 0.7      # a bit calmer", "temperature = 0.9      # a bit calmer")
    added = ("do_sample = true\ntop_k = 50\ntop_p = 0.9\nmin_new_tokens = 0\nrepetition_penalty = 1.0\n"
             'stop = ["\\n\\n"]\n')
    assert (tmp_path / "settings.toml").read_text(encoding="utf-8") == head.rstrip("\n") + "\n" + added + \
        "\n# another one" + tail
    assert st.Settings.read(tmp_path / "settings.toml").profiles["stories"]["stop"] == ["\n\n"]


@pytest.mark.parametrize("columns", [40, 100])
def test_the_screen_while_models_are_read_refused_and_chosen(tmp_path, columns):
    model = tiny_gguf(tmp_path / "tiny.gguf")
    missing = tmp_path / "no-such-folder-anywhere-on-this-disk" / "model.gguf"
    child = start(tmp_path, "setup", columns=columns, rows=30)
    answer(child, "Model:", CLEAR + str(missing) + "\r")
    reason = f"model not found: {missing} — check the model path"
    wait_screen(child, reason)  # the whole reason, wrapped to the width, under the question asked again

    def model_rows() -> list[str]:
        return [row for row in child.screen.rows() if row.startswith("? Model:")]

    assert len(model_rows()) == 1 and squeezed(f"? Model: {missing}") in squeezed(child.screen.text())
    child.send(CLEAR + str(model) + "\r")
    wait_screen(child, "tokenizer: the model's own")
    screen = child.screen.text()
    assert model_rows() == [f"? Model: {model}"[:columns]] and "no-such-folder" not in squeezed(screen)
    assert squeezed(reason) not in squeezed(screen)
    for rows in child.screen.frames:  # at every moment the spinner showed, its question stayed above it
        text = "\n".join(rows)
        if "Reading the model" in text:
            assert "? Model: " in text and sum(row.startswith("? Model:") for row in rows) == 1, text
    wait_screen(child, "What do you want to do?")
    for choice in ("One prompt: continue a text once", "Chat: a conversation in the terminal",
                   "Batch: a file of prompts, one JSON line per result"):
        assert squeezed(choice) in squeezed(child.screen.text())  # wrapped, not cut
    child.sendintr()
    finish(child, 130)


def test_keys_typed_while_a_model_is_read_wait_for_the_question_asked_again(tmp_path):
    child = start(tmp_path, "setup", columns=80, rows=30)
    answer(child, "Model:", CLEAR + str(tmp_path / "no-such-model.gguf") + "\r")
    wait_screen(child, "Reading the model")  # the first read also loads torch: seconds
    child.send(CLEAR + "demo\r")  # typed ahead, neither echoed over the spinner nor eaten by line editing
    wait_screen(child, "built-in demo model:")
    assert [row for row in child.screen.rows() if row.startswith("? Model:")] == ["? Model: demo"]
    assert "no-such-model" not in child.screen.text()
    answer(child, "What do you want to do", "\r")
    child.sendintr()
    finish(child, 130)
