"""``--json``, ``--jsonl`` and batch runs from ``--prompts-file``: the output scripts and CI read."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import GREEDY_CASES, MODEL_PT, TOKENIZER_DIR
from test_cli import BASE, assert_one_line_error, run

from llmbuilder_cli.batch import parse_prompts
from llmbuilder_cli.config import GenerationConfig
from llmbuilder_cli.errors import UsageError

CASE = GREEDY_CASES[0]
SHA = hashlib.sha256(MODEL_PT.read_bytes()).hexdigest()


def test_json_is_one_object_with_the_exact_generation():
    p = run(*BASE, "-p", CASE["prompt"], "--greedy", "--max-tokens", str(CASE["config"]["max_new_tokens"]), "--json")
    assert p.returncode == 0, p.stderr
    assert "\x1b" not in p.stdout
    d = json.loads(p.stdout)
    assert d["prompt"] == CASE["prompt"]
    assert d["prompt_token_ids"] == CASE["prompt_ids"]
    assert d["token_ids"] == CASE["new_ids"]
    assert d["full_text"] == CASE["text"] == d["prompt_text"] + d["text"]
    assert d["finish_reason"] == "length"
    assert d["stats"]["new_tokens"] == len(CASE["new_ids"]) and d["stats"]["load_s"] > 0
    assert d["config"] == GenerationConfig(do_sample=False, max_new_tokens=CASE["config"]["max_new_tokens"]).to_dict()
    m = d["model"]
    assert m["name"] is None and m["sha256"] == SHA and m["path"] == str(MODEL_PT.resolve())
    assert (m["parameters"], m["context_length"], m["vocab_size"]) == (140672, 128, 512)
    assert m["tokenizer"]["kind"] == "sentencepiece"
    assert "tok/s" in p.stderr  # the footer stays on stderr
    q = run(*BASE, "-p", CASE["prompt"], "--greedy", "--max-tokens", "5", "--jsonl", "-q")
    assert q.stderr == "" and len(q.stdout.splitlines()) == 1 and json.loads(q.stdout)["token_ids"] == CASE["new_ids"][:5]


def test_batch_writes_one_line_per_prompt_in_order(tmp_path):
    f = tmp_path / "prompts.jsonl"
    f.write_text(
        "\ufeffOnce upon a time\r\n"
        "\n"
        '{"id": "short", "prompt": "Once upon a time", "max_new_tokens": 3}\n'
        '{"prompt": "the fox", "do_sample": true, "seed": 5, "temperature": 1.0}\n',
        encoding="utf-8",
    )
    args = (*BASE, "--prompts-file", str(f), "--jsonl", "--greedy", "--max-tokens", "40", "--ordered")
    p = run(*args)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["line"] for r in rows] == [1, 3, 4]
    assert "id" not in rows[0] and rows[1]["id"] == "short"
    assert rows[0]["token_ids"] == CASE["new_ids"]
    assert rows[1]["token_ids"] == CASE["new_ids"][:3] and rows[1]["config"]["max_new_tokens"] == 3
    assert rows[2]["config"]["do_sample"] is True and rows[2]["stats"]["seed"] == 5
    assert rows[0]["stats"]["load_s"] > 0 and rows[1]["stats"]["load_s"] == 0
    assert p.stderr.strip().startswith("[3 prompts · ")
    assert run(*args).stdout.splitlines()[2] != ""  # seeded: the same sample again
    assert json.loads(run(*args).stdout.splitlines()[2])["token_ids"] == rows[2]["token_ids"]


def test_batch_from_stdin():
    p = run(*BASE, "--prompts-file", "-", "--jsonl", "--greedy", "--max-tokens", "4", "-q", stdin="a\nb\n")
    assert p.returncode == 0, p.stderr
    assert [json.loads(x)["prompt"] for x in p.stdout.splitlines()] == ["a", "b"]


def test_bad_batch_line_fails_before_anything_is_generated(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text('fine\n{"prompt": "x", "temprature": 2}\n', encoding="utf-8")
    assert_one_line_error(
        run(*BASE, "--prompts-file", str(f), "--jsonl"), 2, "line 2", "unknown key 'temprature'", "'temperature'"
    )
    assert_one_line_error(run(*BASE, "--prompts-file", str(tmp_path / "nope"), "--jsonl"), 2, "not found")


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (("-p", "x", "--json", "--jsonl"), "--json and --jsonl"),
        (("--prompts-file", "-"), "needs --jsonl"),
        (("--prompts-file", "-", "--jsonl", "-p", "x"), "cannot be combined"),
        (("-i", "--json"), "--interactive prints text"),
    ],
)
def test_output_flag_conflicts(extra, fragment):
    assert_one_line_error(run("generate", "text", "-m", str(MODEL_PT), "-t", str(TOKENIZER_DIR), *extra), 2, fragment)


def test_parse_prompts_rules():
    base = GenerationConfig()
    specs = parse_prompts('plain \\n text\n  {"prompt": "a\\nb", "stop": ["."], "id": [1]}\n\n', base)
    assert [(s.line, s.prompt) for s in specs] == [(1, "plain \\n text"), (2, "a\nb")]
    assert specs[1].config.stop == (".",) and specs[1].id == [1] and specs[0].config is base
    for text, fragment in [
        ("", "no prompts"),
        ('{"prompt": ""}', "non-empty"),
        ('{"text": "x"}', "non-empty"),
        ("[1, 2]\n{1}", "line 2: invalid JSON"),
        ('{"prompt": "x", "top_p": 3}', "top_p"),
        ('["not", "an object"]', None),
    ]:
        if fragment is None:
            assert parse_prompts(text, base)[0].prompt == text  # does not start with '{': a plain prompt
            continue
        with pytest.raises(UsageError, match=fragment):
            parse_prompts(text, base)


def test_ctrl_c_in_a_batch_writes_the_cancelled_line_and_exits_130(tmp_path):
    import os
    import signal
    import subprocess
    import time

    from conftest import cli_cmd, cli_env, default_sigint

    f = tmp_path / "p.txt"
    f.write_text('{"prompt": "once", "max_new_tokens": 2}\n' + "once upon a time\n" * 3, encoding="utf-8")
    proc = subprocess.Popen(
        cli_cmd(*BASE, "--prompts-file", str(f), "--jsonl", "--ignore-eos", "--max-tokens", "1000000", "--seed", "1",
                "--batch-size", "1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(), text=True, preexec_fn=default_sigint,
    )  # fmt: skip
    first = json.loads(proc.stdout.readline())  # the short first prompt finished: the second is running
    assert first["line"] == 1 and first["finish_reason"] == "length"
    time.sleep(1.0)  # well into the long second prompt
    os.kill(proc.pid, signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    (second,) = [json.loads(x) for x in rest.splitlines()]
    assert second["line"] == 2 and second["finish_reason"] == "cancelled"
    assert second["stats"]["new_tokens"] == len(second["token_ids"]) > 0
    assert "Interrupted after 1 of 4 prompts" in err and "Traceback" not in err
