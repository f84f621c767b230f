"""Constrained output (constraint.py, engine/constrain.py, the CLI's --json-schema/--format/--regex/--choice/
--grammar): what is generated always parses or matches, greedy takes the best valid token, bad constraints
fail before any model loads, and prompts-file lines and --json records carry the constraint."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import torch

from llmbuilder_cli import Constraint, GenerationConfig, FinishReason
from llmbuilder_cli.api import generate, load_model
from llmbuilder_cli.errors import ConfigError, UsageError

from conftest import cli_cmd, cli_env, MODEL_PT, TOKENIZER_DIR

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 99},
        "pet": {"enum": ["cat", "dog", "owl"]},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "pet", "ok"],
    "additionalProperties": False,
}
TAGS = {"type": "array", "items": {"enum": ["red", "blue"]}, "minItems": 1, "maxItems": 3}
GRAMMAR = 'start: "The " ANIMAL " " VERB "."\nANIMAL: "cat" | "dog" | "fox"\nVERB: "ran" | "sat"\n'
GBNF = 'root ::= "yes" | "no" | "it" " " ("is" | "was")\n'


def valid(value, schema) -> bool:
    """Structural check of the schema subset used here (the jsonschema package is not installed)."""
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema["type"]
    if kind == "object":
        return (isinstance(value, dict) and set(schema["required"]) <= set(value) and set(value) <= set(schema["properties"])
                and all(valid(v, schema["properties"][k]) for k, v in value.items()))
    if kind == "array":
        return (isinstance(value, list) and schema["minItems"] <= len(value) <= schema["maxItems"]
                and all(valid(v, schema["items"]) for v in value))
    if kind == "string":
        return isinstance(value, str) and len(value) <= schema["maxLength"]
    if kind == "integer":
        return type(value) is int and schema["minimum"] <= value <= schema["maximum"]
    if kind == "boolean":
        return isinstance(value, bool)
    raise AssertionError(kind)


@pytest.fixture(scope="module")
def demo():
    return load_model(None, device="cpu", threads=1)  # one thread: the fastest for these small models


@pytest.fixture(scope="module")
def tiny():
    return load_model(MODEL_PT, TOKENIZER_DIR, device="cpu", threads=1)


# Sampling settings every constraint is run under (the mask runs before all of them).
SETTINGS = [
    dict(temperature=1.5),
    dict(temperature=1.5, top_k=3),
    dict(temperature=1.5, top_p=0.5, repetition_penalty=1.3),
    dict(temperature=1.5, top_k=None, top_p=None, repetition_penalty=0.7),
]


def _check(kind, value, text):
    if kind == "json_schema":
        return valid(json.loads(text), value)
    if kind == "json":
        json.loads(text)
        return True
    if kind in ("regex",):
        return re.fullmatch(value, text) is not None
    if kind == "choice":
        return text in value
    if kind == "grammar":
        return re.fullmatch(r"The (cat|dog|fox) (ran|sat)\.", text) is not None
    raise AssertionError(kind)


DEMO_CASES = [
    ("json_schema", PERSON, 40),
    ("json_schema", TAGS, 20),
    ("regex", r"[a-z]{1,6} [0-9]{2}", 12),
    ("choice", ("yes", "no", "maybe so"), 6),
    ("grammar", GRAMMAR, 10),
]
TINY_CASES = [
    ("regex", r"( the (cat|dog|fox)){1,3}\.", 12),
    ("choice", (" the cat", " a dog", " the rabbit", "x"), 6),
    ("regex", r" [a-z]{2,5}( [a-z]{2,5})?", 12),
]


def _run(loaded, cases, seeds, prompt):
    count = 0
    for kind, value, budget in cases:
        constraint = Constraint(kind, value)
        for seed in seeds:
            settings = SETTINGS[seed % len(SETTINGS)]
            config = GenerationConfig(max_new_tokens=budget, seed=seed, constraint=constraint, **settings)
            result = generate(loaded, prompt=prompt, config=config)
            assert result.finish_reason is FinishReason.EOS, (kind, seed, result.text)
            assert _check(kind, value, result.text), (kind, seed, settings, result.text)
            count += 1
    return count


@pytest.mark.slow  # about a minute on a busy 2-CPU machine: 1,000 generations
def test_a_thousand_constrained_samples_all_parse_or_match(demo, tiny):
    n = _run(demo, DEMO_CASES, range(20), "Once upon a time")  # the demo is the slower model: fewer runs
    n += _run(tiny, TINY_CASES, range(250), "once upon a time")
    n += _run(tiny, [("choice", (" the cat", " a dog"), 6)], range(150), "the")
    assert n == 1000


def test_any_json_with_format_json_parses(demo):
    for seed in range(30):
        config = GenerationConfig(max_new_tokens=60, seed=seed, temperature=0.7, constraint=Constraint("json"))
        result = generate(demo, prompt="Once upon a time", config=config)
        if result.finish_reason is FinishReason.EOS:
            json.loads(result.text)
        else:  # cut by max_new_tokens: nothing invalid was written so far (the value is simply unfinished)
            assert result.text[:1] in '{["-0123456789tfn'


def _text_of(tok, i):
    """The text token ``i`` spells inside a sequence ('' for special tokens); SentencePiece's ▁ is a space."""
    if tok.decode([i]) == "":
        return ""
    return tok.id_to_token(i).replace("\u2581", " ") if tok.kind == "sentencepiece" else tok.decode([i])


def _best_valid(loaded, prompt, choices):
    """The id with the highest raw logit after ``prompt`` (the model run directly) among the tokens that
    start one of ``choices``."""
    tok, model = loaded.tokenizer, loaded.model
    allowed = [i for i in range(tok.vocab_size)
               if (t := _text_of(tok, i)) and "\ufffd" not in t and any(c.startswith(t) for c in choices)]
    prompt_ids = tok.encode(prompt)
    with torch.inference_mode():
        logits = model.forward(torch.tensor([prompt_ids]), start=0, cache=model.new_cache(len(prompt_ids)))[0]
    return max(allowed, key=lambda i: float(logits[i]))


@pytest.mark.parametrize("which", ["demo", "tiny"])
def test_greedy_takes_the_best_valid_token(which, demo, tiny):
    loaded = demo if which == "demo" else tiny
    tok = loaded.tokenizer
    prompt = "Once upon a time" if which == "demo" else "once upon a time"
    # Choices that leave out the model's own first pick: greedy must take the best token that starts one.
    free = generate(loaded, prompt=prompt, config=GenerationConfig(temperature=0, max_new_tokens=1)).token_ids[0]
    words = [_text_of(tok, i) for i in range(20, 300) if i != free]
    choices = sorted({w for w in words if w.strip() and w.isascii() and w != _text_of(tok, free)})[:12]
    expected = _best_valid(loaded, prompt, choices)
    config = GenerationConfig(temperature=0, max_new_tokens=8, constraint=Constraint("choice", choices))
    result = generate(loaded, prompt=prompt, config=config)
    assert result.token_ids[0] == expected
    assert result.text in choices
    assert result.finish_reason is FinishReason.EOS


def test_constraint_is_validated_on_construction():
    with pytest.raises(ConfigError, match="the regex cannot be used: .*unclosed group"):
        Constraint("regex", "a(b")
    with pytest.raises(ConfigError, match="the JSON schema cannot be used: .*frob"):
        Constraint("json_schema", {"type": "frob"})
    with pytest.raises(ConfigError, match="the JSON schema is not valid JSON"):
        Constraint("json_schema", "{oops")
    with pytest.raises(ConfigError, match='unknown name: "foo"'):
        Constraint("grammar", "start: foo")
    with pytest.raises(ConfigError, match="non-empty list of strings"):
        Constraint("choice", "yes")
    with pytest.raises(ConfigError, match="constraint must be a Constraint"):
        GenerationConfig(constraint="json")
    assert "constraint" not in GenerationConfig.field_names()
    assert "constraint" not in GenerationConfig(constraint=Constraint("json")).to_dict()


def test_gbnf_grammar_is_accepted(demo):
    constraint = Constraint("grammar", GBNF)
    for seed in range(10):
        result = generate(demo, prompt="Once", config=GenerationConfig(temperature=1.5, seed=seed, max_new_tokens=8,
                                                                       constraint=constraint))
        assert result.text in ("yes", "no", "it is", "it was"), result.text


def _cli(*args, input=None, cwd=None):
    return subprocess.run(cli_cmd("generate", "text", *args), capture_output=True, text=True, env=cli_env(),
                          input=input, cwd=cwd, timeout=300)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--regex", "a(b"], "Error: the regex cannot be used: "),
        (["--json-schema", '{"type": "frob"}'], "Error: the JSON schema cannot be used: Invalid type: frob — "),
        (["--json-schema", "missing.json"], "Error: schema file not found: missing.json — "),
        (["--format", "yaml"], "Error: unknown --format 'yaml' — "),
        (["--regex", "a", "--choice", "b"], "Error: --regex and --choice cannot be combined — "),
        (["--grammar", "bad.lark"], 'Error: the grammar bad.lark cannot be used: at 1(8): unknown name: "foo" — '),
    ],
)
def test_bad_constraints_exit_2_before_the_model_loads(tmp_path, flags, message):
    (tmp_path / "bad.lark").write_text("start: foo\n")
    (tmp_path / "model.pt").write_bytes(b"not a model")  # loading it would fail with exit 3
    proc = _cli("-m", "model.pt", "-p", "x", *flags, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr


def test_json_record_and_text_output(tmp_path):
    schema = tmp_path / "tags.json"
    schema.write_text(json.dumps(TAGS))
    proc = _cli("-p", "Once upon a time", "--json-schema", str(schema), "--temperature", "1.5", "--seed", "5",
                "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert valid(json.loads(record["text"]), TAGS)
    assert record["constraint"] == {"type": "json_schema", "schema": TAGS, "file": str(schema)}
    assert record["finish_reason"] == "eos"
    proc = _cli("-p", "Once upon a time", "--choice", "yes", "--choice", "no", "--greedy", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout in ("Once upon a timeyes\n", "Once upon a timeno\n")


def test_prompts_file_lines_set_their_own_constraint(tmp_path):
    lines = [
        {"id": 1, "prompt": "Once upon a time", "choice": ["red", "blue"]},
        {"id": 2, "prompt": "Once", "regex": "[0-9]{3}"},
        {"id": 3, "prompt": "Once", "json_schema": TAGS},
        {"id": 4, "prompt": "Once", "format": "json", "temperature": 0},
        {"id": 5, "prompt": "Once"},
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    proc = _cli("--prompts-file", str(path), "--jsonl", "--regex", "[a-z]{2}", "--temperature", "1.5", "--seed", "1",
                "--max-tokens", "40")
    assert proc.returncode == 0, proc.stderr
    out = {r["id"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert out[1]["text"] in ("red", "blue") and out[1]["constraint"] == {"type": "choice", "choices": ["red", "blue"]}
    assert re.fullmatch("[0-9]{3}", out[2]["text"]) and out[2]["constraint"]["pattern"] == "[0-9]{3}"
    assert valid(json.loads(out[3]["text"]), TAGS)
    assert out[4]["constraint"] == {"type": "json"}
    json.loads(out[4]["text"])
    assert re.fullmatch("[a-z]{2}", out[5]["text"]) and out[5]["constraint"] == {"type": "regex", "pattern": "[a-z]{2}"}

    path.write_text(json.dumps({"prompt": "a", "regex": "a(", "choice": ["x"]}) + "\n")
    proc = _cli("--prompts-file", str(path), "--jsonl")
    assert proc.returncode == 2
    assert proc.stderr.strip() == 'Error: prompts file line 1: "regex" and "choice" cannot be combined — give one output constraint'


def _tokens(cells: str) -> list[str]:
    return [json.loads(t) for t in re.findall(r'("(?:[^"\\]|\\.)*")', cells)]


def test_show_probs_shows_what_the_constraint_removed():
    proc = _cli("-p", "Once upon a time", "--choice", "yes", "--choice", "no", "--greedy", "--show-probs", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout in ("Once upon a timeyes\n", "Once upon a timeno\n")
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("#0 ")
    raw, constrained = lines[1].split(maxsplit=1), lines[2].split(maxsplit=1)
    assert raw[0] == "raw" and constrained[0] == "constraint"
    kept_part, _, removed_part = constrained[1].partition("(removed: ")
    kept = _tokens(kept_part)
    assert kept and all(any(c.startswith(t) for c in ("yes", "no")) for t in kept)
    assert _tokens(removed_part) == [t for t in _tokens(raw[1]) if t not in kept]
    assert _tokens(removed_part)  # the demo's own favourites after this prompt are not "y…" or "n…"


def test_chat_format_command_in_a_terminal(tmp_path):
    pexpect = pytest.importorskip("pexpect")
    pyte = pytest.importorskip("pyte")
    import shlex

    from conftest import spawn_pty

    out = tmp_path / "replies.txt"
    argv = cli_cmd("generate", "text", "-m", str(MODEL_PT), "-t", str(TOKENIZER_DIR), "--device", "cpu", "-i",
                   "--mode", "chat", "--temperature", "1.5", "--seed", "3", "--max-tokens", "12")
    line = "exec " + shlex.join(argv) + " > " + shlex.quote(str(out))
    env = {**cli_env(), "LLMBUILDER_HOME": str(tmp_path / "home")}
    child = spawn_pty("bash", ["--norc", "-c", line], env=env, timeout=120, dimensions=(40, 120))
    child.logfile_read = open(tmp_path / "pty.bin", "wb")  # noqa: SIM115
    child.expect(">>>")
    child.sendline("/format regex a(")
    child.expect("unclosed group")
    child.sendline("/format choice cat|dog fox")
    child.expect('replies must be one of "cat", "dog fox"')
    child.sendline("once upon a time")
    child.expect(r"\[context \d+/128\]")
    child.expect(">>>")
    child.sendline("/format")
    child.expect(r"\(/format off to free them\)")
    child.sendline("/format off")
    child.expect("replies are free text again")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    child.logfile_read.close()
    assert child.exitstatus == 0
    assert out.read_text().splitlines()[0] in ("cat", "dog fox")
    scr = pyte.Screen(120, 40)
    pyte.ByteStream(scr).feed((tmp_path / "pty.bin").read_bytes())
    rows = [r.rstrip() for r in scr.display]
    assert any(r.startswith("Error: the regex cannot be used: ") for r in rows), rows
    assert 'replies must be one of "cat", "dog fox"' in rows
    assert 'replies must be one of "cat", "dog fox" (/format off to free them)' in rows


def test_python_api_takes_a_constraint_keyword(tiny):
    from llmbuilder_cli import generate_text, stream_text

    text = generate_text(tiny, prompt="once upon a time", constraint=Constraint("choice", [" the cat", " a dog"]),
                         temperature=1.5, seed=2)
    assert text in ("once upon a time the cat", "once upon a time a dog")
    chunks = list(stream_text(tiny, prompt="the", constraint=Constraint("regex", r" [a-z]{2,4}"), seed=1))
    assert re.fullmatch(r" [a-z]{2,4}", "".join(c.text for c in chunks))
    assert chunks[-1].finish_reason is FinishReason.EOS


def test_chat_save_keeps_the_format_and_load_restores_it(tiny_loaded, tmp_path):
    """/save records the /format constraint (as --json records it); /load compiles it again, so the next
    reply is constrained as before saving; a damaged record is a one-line error and changes nothing."""
    import io

    from llmbuilder_cli.chat import run_chat
    from llmbuilder_cli.engine.conversation import Conversation

    def chat(conv, text):
        out, err = io.StringIO(), io.StringIO()
        cfg = GenerationConfig(temperature=1.5, seed=4, max_new_tokens=12)
        code = run_chat(conv, cfg, input_stream=io.StringIO(text), output_stream=out, error_stream=err)
        return code, out.getvalue(), err.getvalue()

    f, md = tmp_path / "chat.json", tmp_path / "chat.md"
    code, out, _ = chat(Conversation(tiny_loaded), f"/format choice cat|dog fox\nonce upon a time\n/save {f}\n/save {md}\n")
    assert code == 0 and out.splitlines() == [out.splitlines()[0]] and out.strip() in ("cat", "dog fox")
    saved = json.loads(f.read_text())
    assert saved["constraint"] == {"type": "choice", "choices": ["cat", "dog fox"]}
    assert 'Replies must be one of "cat", "dog fox".' in md.read_text()
    fresh = Conversation(tiny_loaded)
    code, out, err = chat(fresh, f"/load {f}\n/format\nthe owl\n")
    assert code == 0 and 'replies must be one of "cat", "dog fox" (/format off to free them)' in err
    assert out.strip() in ("cat", "dog fox")
    saved["constraint"] = {"type": "regex", "pattern": "a("}
    f.write_text(json.dumps(saved))
    code, _, err = chat(Conversation(tiny_loaded), f"/load {f}\n/format\n")
    assert "Error: the regex cannot be used: " in err and "replies are free text" in err
