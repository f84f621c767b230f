"""Every way a user or a script can get things wrong ends in one line and a documented exit code.

`CASES` is the table in the README ("When things go wrong"): one row per case, each run here through the
real entry point (`main`, in-process, so the suite stays fast) and checked for the exit code, a single
``Error:`` line on stderr that names the problem, an empty stdout, and no traceback. A drift test keeps
the README table and this list the same. Interrupts, pipes and signals run in real subprocesses below.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import struct
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from conftest import MODEL_PT, TOKENIZER_DIR, cli_cmd, cli_env, spawn_pty
from llmbuilder_cli.cli.app import main

ROOT = Path(__file__).resolve().parents[1]
DEMO_TOKENIZER = ROOT / "llmbuilder_cli" / "demo_model" / "tokenizer"
GEN = ["generate", "text", "--device", "cpu", "--max-tokens", "3"]


class Evil:
    """A pickle that would create a file when unpickled by an unsafe loader."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


# --------------------------------------------------------------------------------------- file builders
def _evil(d: Path) -> list[str]:
    torch.save({"model_state_dict": Evil(str(d / "PWNED"))}, d / "evil.pt")
    return ["-m", str(d / "evil.pt"), "-t", str(TOKENIZER_DIR)]


def _bytes(name: str, data: bytes) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        (d / name).write_bytes(data)
        return ["-m", str(d / name), "-t", str(TOKENIZER_DIR)]

    return build


def _truncated(d: Path) -> list[str]:
    data = MODEL_PT.read_bytes()
    (d / "t.pt").write_bytes(data[: len(data) // 2])
    return ["-m", str(d / "t.pt"), "-t", str(TOKENIZER_DIR)]


def _zip(d: Path) -> list[str]:
    with zipfile.ZipFile(d / "z.pt", "w") as z:
        z.writestr("notes.txt", "hello")
    return ["-m", str(d / "z.pt"), "-t", str(TOKENIZER_DIR)]


def _saved(obj_builder) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        torch.save(obj_builder(), d / "m.pt")
        return ["-m", str(d / "m.pt"), "-t", str(TOKENIZER_DIR)]

    return build


def _fixture_ck() -> dict:
    ck = torch.load(MODEL_PT, weights_only=True)
    ck["model_config"] = dict(ck["model_config"])
    return ck


def _contradicting() -> dict:
    ck = _fixture_ck()
    ck["model_config"]["num_layers"] = 9
    return ck


def _no_tokenizer(d: Path) -> list[str]:
    (d / "run").mkdir()
    (d / "run" / "model.pt").write_bytes(MODEL_PT.read_bytes())
    return ["-m", str(d / "run" / "model.pt")]


def _hf(config: dict, weights: bytes | None) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        (d / "hf").mkdir()
        (d / "hf" / "config.json").write_text(json.dumps(config), encoding="utf-8")
        if weights is not None:
            (d / "hf" / "model.safetensors").write_bytes(weights)
        return ["-m", str(d / "hf")]

    return build


_LLAMA = {"model_type": "llama", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
          "num_attention_heads": 2, "vocab_size": 10, "max_position_embeddings": 16}
_HEADER = json.dumps({"model.embed_tokens.weight": {"dtype": "F32", "shape": [10, 8],
                                                    "data_offsets": [0, 10**12]}}).encode()


def _args(*argv: str) -> Callable[[Path], list[str]]:
    return lambda d: ["-m", str(MODEL_PT), "-t", str(TOKENIZER_DIR), *argv]


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], list[str]]
    code: int
    fragment: str
    prompt: bool = True  # add -p hello unless the case sets its own


CASES = [
    # hostile and broken files
    Case("pickle-that-runs-code", _evil, 3, "pickled Python object"),
    Case("empty-file", _bytes("e.pt", b""), 3, "is empty (0 bytes)"),
    Case("truncated-file", _truncated, 3, "truncated"),
    Case("text-file", _bytes("x.pt", b"just some notes\n"), 3, "not a PyTorch checkpoint (it holds text)"),
    Case("zip-not-torch", _zip, 3, "not one written by torch.save"),
    Case("directory-without-model", lambda d: ["-m", str(d)], 3, "no model.pt"),
    Case("missing-model", lambda d: ["-m", str(d / "nope.pt")], 3, "model not found"),
    Case("no-architecture", _saved(lambda: {"epoch": 3}), 3, "holds no model weights"),
    Case("shapes-contradict-config", _saved(_contradicting), 3, "disagrees with the weights"),
    Case("tokenizer-does-not-fit", lambda d: ["-m", str(MODEL_PT), "-t", str(DEMO_TOKENIZER)], 3,
         "tokenizer has 2048 tokens but the model's embedding has only"),
    Case("missing-tokenizer", _no_tokenizer, 3, "no tokenizer given and none found"),
    Case("unsupported-architecture", _hf({**_LLAMA, "model_type": "bert"}, None), 3, "supported"),
    Case("safetensors-absurd-header", _hf(_LLAMA, struct.pack("<Q", 10**15) + b"{}"), 3,
         "not a readable safetensors file"),
    Case("safetensors-offset-past-end", _hf(_LLAMA, struct.pack("<Q", len(_HEADER)) + _HEADER + b"\0" * 64), 3,
         "not a readable safetensors file"),
    Case("gguf-absurd-counts", _bytes("b.gguf", b"GGUF" + struct.pack("<I", 3) + b"\xff" * 16), 3,
         "corrupt GGUF header"),
    Case("gguf-truncated", _bytes("t.gguf", b"GGUF" + struct.pack("<I", 3)), 3, "GGUF"),
    # bad parameters
    Case("temperature-negative", _args("--temperature", "-1"), 2, "temperature must be"),
    Case("temperature-nan", _args("--temperature", "nan"), 2, "temperature must be"),
    Case("temperature-inf", _args("--temperature", "inf"), 2, "temperature must be"),
    Case("top-p-zero", _args("--top-p", "0"), 2, "top_p must be a number in (0, 1]"),
    Case("top-p-above-one", _args("--top-p", "1.5"), 2, "top_p must be a number in (0, 1]"),
    Case("top-k-negative", _args("--top-k", "-1"), 2, "top_k must be"),
    Case("min-above-max", _args("--min-tokens", "9", "--max-tokens", "5"), 2, "must not exceed"),
    Case("repetition-penalty-zero", _args("--repetition-penalty", "0"), 2, "repetition_penalty must be"),
    Case("max-tokens-zero", _args("--max-tokens", "0"), 2, "max_new_tokens must be"),
    Case("unknown-device", _args("--device", "tpu"), 2, "unknown device"),
    Case("cuda-without-cuda", _args("--device", "cuda"), 2, "CUDA is not available"),
    Case("unknown-dtype", _args("--dtype", "float64"), 2, "unknown dtype"),
    Case("unknown-option", _args("--frobnicate"), 2, "No such option"),
    Case("invalid-utf8-argument", _args("-p", "a\udcff"), 2, "the text is not valid UTF-8", prompt=False),
    Case("too-many-threads", _args("--threads", "100000"), 2, "threads must be a whole number from 1 to 1024"),
    Case("name-too-long", lambda d: ["-m", str(d / ("a" * 300)), "-t", str(TOKENIZER_DIR)], 3,
         "File name too long"),
    # bad text
    Case("empty-prompt", _args("-p", ""), 2, "the prompt is empty", prompt=False),
    Case("prompt-empty-after-tokenization", _args("-p", "   "), 2, "the prompt is empty", prompt=False),
    # settings
    Case("damaged-settings", lambda d: (d / "home").mkdir() or (d / "home" / "settings.toml").write_text(
        "[profiles.a]\ntemperature = = 1\n") and _args()(d), 2, "settings.toml, line 2"),
    Case("unknown-profile", _args("--profile", "ghost"), 2, "no profile named 'ghost'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_case_is_one_clear_line(case, tmp_path, monkeypatch, capsys):
    if case.id == "cuda-without-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv("LLMBUILDER_HOME", str(tmp_path / "home"))
    argv = GEN + case.build(tmp_path) + (["-p", "hello"] if case.prompt else [])
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == case.code, (code, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert case.fragment in lines[0], (case.fragment, lines[0])
    assert "Traceback" not in err and "this is a bug" not in err
    if case.id == "pickle-that-runs-code":
        assert not (tmp_path / "PWNED").exists()  # nothing in the pickle ran


def test_the_readme_table_lists_every_case():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## When things go wrong", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\| `([a-z0-9-]+)` \|.*\| (\d+) \|$", section, re.M)}
    assert rows == {**{c.id: c.code for c in CASES}, **RUNTIME_CASES}


# ----------------------------------------------------------------------------- cases that still run
RUNTIME_CASES = {
    "whitespace-prompt": 0, "prompt-longer-than-context": 0, "unencodable-characters": 0, "nul-bytes": 0,
    "very-long-line": 0, "absurd-max-tokens": 0, "invalid-utf8-stdin": 2, "closed-stdout-pipe": 0,
    "ctrl-c-while-loading": 130, "ctrl-c-while-generating": 130, "sigterm": 143, "settings-disk-full": 2,
}


def run(*args: str, stdin: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    p = subprocess.run(cli_cmd(*args), input=stdin, capture_output=True, env=cli_env(), timeout=timeout)
    p.stdout, p.stderr = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    return p


BASE = ["generate", "text", "-m", str(MODEL_PT), "-t", str(TOKENIZER_DIR), "--greedy"]


@pytest.mark.slow
def test_text_that_is_odd_but_valid_still_generates():
    demo = ["generate", "text", "--greedy", "--max-tokens", "4", "-q"]
    p = run(*demo, "-p", "   ")  # the demo's byte-level tokenizer keeps spaces: a real prompt
    assert p.returncode == 0 and p.stdout.startswith("   "), p.stderr
    p = run(*BASE, "--max-tokens", "3", "-p", "the cat 🦊 ∑ 你好")  # not in the vocabulary: <unk> pieces
    assert p.returncode == 0 and "⁇" in p.stdout, p.stderr
    p = run(*BASE, "--max-tokens", "3", stdin=b"the cat\x00sat")  # NUL from a pipe (argv cannot carry one)
    assert p.returncode == 0 and "Traceback" not in p.stderr
    long_line = ("the little fox ran to the garden " * 20000).encode()  # ~660 kB on one line
    p = run(*BASE, "--max-tokens", "3", stdin=long_line)
    assert p.returncode == 0 and "sees only the last 128" in p.stderr
    p = run(*demo, "-p", "Once upon a time", "--max-tokens", str(10**30))  # memory is bounded by the context
    assert p.returncode == 0 and p.stdout.rstrip().endswith("."), p.stderr
    p = run(*BASE, stdin=b"\xff\xfe not utf-8")
    assert p.returncode == 2 and "not valid UTF-8" in p.stderr


def test_a_closed_stdout_pipe_exits_quietly():
    cmd = shlex.join(cli_cmd(*BASE, "--max-tokens", "200", "--ignore-eos", "-p", "once upon a time"))
    # pipefail: the pipeline's status is ours (head exits 0 whatever we do)
    p = subprocess.run(f"set -o pipefail; {cmd} | head -c 10", shell=True, capture_output=True, env=cli_env(),
                       timeout=120, executable="/bin/bash")
    assert p.returncode == 0 and len(p.stdout) == 10
    assert b"Traceback" not in p.stderr and b"Error" not in p.stderr, p.stderr


def _interrupt(sig: int, delay: float, *args: str) -> tuple[int, str]:
    env = {**cli_env(), "LLMBUILDER_HOME": str(Path(os.environ["LLMBUILDER_HOME"]))}
    child = spawn_pty(sys.executable, ["-m", "llmbuilder_cli", *args], env=env, encoding="utf-8", timeout=60)
    time.sleep(delay)
    child.kill(sig)
    for _ in range(20):  # a signal that lands inside a library's own catch-all during import can be lost:
        time.sleep(0.5)  # send it again, as a person would press Ctrl-C again
        if not child.isalive():
            break
        child.kill(sig)
    child.expect(__import__("pexpect").EOF)
    child.close()
    return child.exitstatus if child.exitstatus is not None else 128 + child.signalstatus, child.before


@pytest.mark.slow
def test_ctrl_c_while_loading_exits_130_without_traceback():
    code, text = _interrupt(signal.SIGINT, 0.3, *BASE, "--max-tokens", "100000", "--ignore-eos", "-p", "hi")
    assert code == 130 and "Traceback" not in text, text


@pytest.mark.slow
def test_sigterm_stops_cleanly_with_143():
    code, text = _interrupt(signal.SIGTERM, 4.0, *BASE, "--max-tokens", "100000", "--ignore-eos", "--plain",
                            "-p", "once upon a time")
    assert code == 143 and "Traceback" not in text and "Terminated" in text, text


def test_settings_write_on_a_full_disk_changes_nothing(tmp_path, monkeypatch):
    from llmbuilder_cli import settings as st
    from llmbuilder_cli.errors import ConfigError

    path = tmp_path / "settings.toml"
    path.write_text("[profiles.a]\ntop_k = 3\n", encoding="utf-8")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ConfigError, match="cannot write .*No space left on device"):
        st.update(lambda doc: doc["profiles"]["a"].__setitem__("top_k", 4), path)
    assert path.read_text(encoding="utf-8") == "[profiles.a]\ntop_k = 3\n"
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


@pytest.mark.slow
def test_the_same_seed_gives_the_same_bytes_in_every_mode():
    args = [*BASE[:-1], "--temperature", "1.3", "--top-k", "0", "--seed", "1234", "--max-tokens", "40",
            "-p", "once upon a time", "--no-echo", "-q"]
    plain = [run(*args) for _ in range(2)]
    as_json = json.loads(run(*args, "--json").stdout)
    as_jsonl = json.loads(run(*args, "--jsonl").stdout)
    assert plain[0].returncode == 0 and plain[0].stdout == plain[1].stdout
    assert plain[0].stdout == as_json["text"] + "\n" and as_json["text"] == as_jsonl["text"]
    assert as_json["token_ids"] == as_jsonl["token_ids"] and as_json["stats"]["seed"] == 1234


def test_threads_are_capped_by_this_machine():
    from llmbuilder_cli.engine.loading import choose_threads, max_threads
    from llmbuilder_cli.errors import UsageError

    assert choose_threads(max_threads(), 10) == max_threads()
    with pytest.raises(UsageError, match="more than this machine can use"):
        choose_threads(max_threads() + 1, 10)
