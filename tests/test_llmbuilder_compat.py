"""Code written for llmbuilder runs against llmbuilder_cli by changing the import.

The scripts in tests/data/llmbuilder_scripts/ are written against llmbuilder itself (its documented usage,
and its real ``llmbuilder.inference`` signatures); they run here in a fresh interpreter with only their
import lines rewritten. Then llmbuilder's other GenerationConfig fields one by one (``early_stopping``,
``eos_token_id``, ``pad_token_id``, ``length_penalty``), llmbuilder's positional order, assignment to a
frozen config, and `TextGenerator` (load once, generate many).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from conftest import FIXTURE, GREEDY_CASES, MODEL_PT, TOKENIZER_DIR, cli_env
from llmbuilder_cli import config as config_module
from llmbuilder_cli import generate, generate_text
from llmbuilder_cli.config import LLMBUILDER_FIELDS, IgnoredSettingWarning
from llmbuilder_cli.errors import ConfigError, UsageError
from llmbuilder_cli.inference import GenerationConfig, TextGenerator

SCRIPTS = Path(__file__).parent / "data" / "llmbuilder_scripts"
FIRST = GREEDY_CASES[0]  # greedy_40, "Once upon a time": new ids 508 (","), 61, 23, ...
COMMA = FIRST["new_ids"][0]


def port(source: str) -> str:
    """``source`` with its llmbuilder imports pointed at llmbuilder_cli, and nothing else changed."""
    rules = [
        (r"^from llmbuilder\.inference import ", "from llmbuilder_cli.inference import "),
        (r"^from llmbuilder import ", "from llmbuilder_cli import "),
        (r"^import llmbuilder$", "import llmbuilder_cli as llmbuilder"),
    ]
    out = []
    for line in source.splitlines():
        new = line
        for pattern, repl in rules:
            new = re.sub(pattern, repl, new)
        assert new == line or line.startswith(("from llmbuilder", "import llmbuilder")), line
        out.append(new)
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """llmbuilder's documented layout: ./model/model.pt, ./tokenizer/, plus its reference outputs."""
    d = tmp_path_factory.mktemp("llmbuilder-run")
    (d / "model").mkdir()
    shutil.copy(MODEL_PT, d / "model" / "model.pt")
    shutil.copytree(TOKENIZER_DIR, d / "tokenizer")
    shutil.copy(FIXTURE / "reference_outputs.json", d / "reference_outputs.json")
    return d


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    """Each test sees the once-per-process warnings as a new process would."""
    monkeypatch.setattr(config_module, "_SAID", set())


# ------------------------------------------------------------------------------------ llmbuilder's scripts
def test_port_changes_only_the_imports():
    src = "import llmbuilder\nfrom llmbuilder.inference import TextGenerator\nx = 'llmbuilder.inference'\n"
    assert port(src) == ("import llmbuilder_cli as llmbuilder\nfrom llmbuilder_cli.inference import TextGenerator\n"
                         "x = 'llmbuilder.inference'\n")


@pytest.mark.slow
@pytest.mark.parametrize("script", ["documented_usage.py", "text_generator.py"])
def test_llmbuilder_scripts_run_with_only_the_import_changed(script, run_dir):
    source = (SCRIPTS / script).read_text(encoding="utf-8")
    assert "llmbuilder_cli" not in source  # written against llmbuilder itself
    ported = run_dir / f"ported_{script}"
    ported.write_text(port(source), encoding="utf-8")
    p = subprocess.run([sys.executable, str(ported)], capture_output=True, text=True, cwd=run_dir, env=cli_env(),
                       timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout == {"documented_usage.py": "documented usage: ok\n",
                        "text_generator.py": "text generator: ok\n"}[script]
    if script == "text_generator.py":  # llmbuilder's pad_token_id=0 is accepted; it is said once that it does nothing
        warned = [line for line in p.stderr.splitlines() if "IgnoredSettingWarning" in line]
        assert len(warned) == 1, p.stderr
        assert "pad_token_id=0 has no effect: one sequence is generated at a time, so nothing is ever padded" in warned[0]
        assert f"ported_{script}:" in warned[0]  # it points at the user's line, not at this package
    else:
        assert p.stderr == ""


def test_the_inference_module_is_an_attribute_of_the_package_as_in_llmbuilder():
    code = ("import llmbuilder_cli as llmbuilder\n"
            "print(llmbuilder.inference.TextGenerator.__name__, llmbuilder.inference.GenerationConfig().max_new_tokens)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert (p.returncode, p.stdout, p.stderr) == (0, "TextGenerator 100\n", "")


# ------------------------------------------------------------------------ llmbuilder's GenerationConfig fields
def test_llmbuilder_fields_are_keywords_with_llmbuilder_defaults():
    cfg = GenerationConfig()
    assert (cfg.early_stopping, cfg.eos_token_id, cfg.pad_token_id, cfg.length_penalty) == (True, None, None, 1.0)
    cfg = GenerationConfig(early_stopping=False, eos_token_id=3, pad_token_id=None, length_penalty=1)
    assert (cfg.early_stopping, cfg.eos_token_id, cfg.length_penalty) == (False, 3, 1.0)
    # They are Python-API keywords, not settings: profiles, /set, batch lines and --json's config leave them out.
    assert set(LLMBUILDER_FIELDS).isdisjoint(GenerationConfig.field_names())
    assert set(LLMBUILDER_FIELDS).isdisjoint(cfg.to_dict())
    assert cfg.replace(temperature=0.5).eos_token_id == 3


@pytest.mark.parametrize("kwargs, field", [
    ({"early_stopping": "yes"}, "early_stopping"),
    ({"eos_token_id": -1}, "eos_token_id"),
    ({"eos_token_id": 2.0}, "eos_token_id"),
    ({"eos_token_id": True}, "eos_token_id"),
    ({"pad_token_id": -3}, "pad_token_id"),
    ({"length_penalty": float("nan")}, "length_penalty"),
    ({"length_penalty": "long"}, "length_penalty"),
])
def test_llmbuilder_fields_are_validated(kwargs, field):
    with pytest.raises(ConfigError) as info:
        GenerationConfig(**kwargs)
    assert info.value.field == field and field in str(info.value)


def test_early_stopping_false_never_stops_at_eos(tiny_loaded):
    # With the comma as the end-of-sequence token, greedy generation stops at once ...
    stopped = generate(tiny_loaded, prompt=FIRST["prompt"], max_new_tokens=6, do_sample=False, eos_token_id=COMMA)
    assert (stopped.token_ids, stopped.finish_reason, stopped.text) == ([COMMA], "eos", "")
    # ... and early_stopping=False runs to max_new_tokens, as ignore_eos=True does.
    for off in ({"early_stopping": False}, {"ignore_eos": True}):
        r = generate(tiny_loaded, prompt=FIRST["prompt"], max_new_tokens=6, do_sample=False, eos_token_id=COMMA, **off)
        assert r.token_ids == FIRST["new_ids"][:6] and r.finish_reason == "length", off


def test_eos_token_id_replaces_the_tokenizers_also_for_min_new_tokens(tiny_loaded):
    assert list(tiny_loaded.tokenizer.eos_ids) == [3]
    r = generate(tiny_loaded, prompt=FIRST["prompt"], max_new_tokens=8, min_new_tokens=3, do_sample=False,
                 eos_token_id=COMMA)
    assert r.token_ids[0] != COMMA and len(r.token_ids) >= 3  # the comma was blocked until 3 tokens existed
    with pytest.raises(ConfigError) as info:
        generate(tiny_loaded, prompt=FIRST["prompt"], eos_token_id=512)
    assert str(info.value).startswith("eos_token_id 512 is not a token of this model (its ids are 0 to 511)")


def test_generate_text_takes_the_llmbuilder_fields_and_device_fourth():
    text = generate_text(str(MODEL_PT), str(TOKENIZER_DIR), FIRST["prompt"], "cpu", max_new_tokens=5,
                         do_sample=False, eos_token_id=COMMA, early_stopping=True, length_penalty=1.0)
    assert text == "once upon a time"  # stopped at the comma, which is not part of the text
    text = generate_text(str(MODEL_PT), str(TOKENIZER_DIR), FIRST["prompt"], "cpu", max_new_tokens=5,
                         do_sample=False, eos_token_id=COMMA, early_stopping=False)
    assert FIRST["text"].startswith(text) and text.startswith("once upon a time,")
    with pytest.raises(TypeError):
        generate_text(str(MODEL_PT), str(TOKENIZER_DIR), FIRST["prompt"], num_beams=2)  # not a field anywhere


@pytest.mark.parametrize("name, value, why", [
    ("pad_token_id", 0, "one sequence is generated at a time, so nothing is ever padded"),
    ("length_penalty", 2.0, "it only scores beams in beam search"),
])
def test_fields_that_cannot_apply_say_so_once(name, value, why):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GenerationConfig(**{name: value})  # the line the warning points at
        line = sys._getframe().f_lineno - 1
        GenerationConfig(**{name: value}).replace(temperature=0.5)
        GenerationConfig(**{name: value})
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert str(caught[0].message).startswith(f"{name}={value!r} has no effect: {why}")
    assert caught[0].category is IgnoredSettingWarning and issubclass(IgnoredSettingWarning, UserWarning)
    assert caught[0].filename == __file__ and caught[0].lineno == line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GenerationConfig(pad_token_id=None, length_penalty=1.0)  # the defaults say nothing


# ------------------------------------------------------------------------------ positional order, frozen
def test_llmbuilders_positional_temperature_names_the_keyword():
    with pytest.raises(ConfigError) as info:
        GenerationConfig(40, 0.5)  # llmbuilder: max_new_tokens=40, temperature=0.5
    assert info.value.field == "min_new_tokens"
    assert str(info.value) == ("min_new_tokens must be a whole number >= 0 (got 0.5) — the second field of this "
                               "GenerationConfig is min_new_tokens, not temperature as in llmbuilder: pass the "
                               "temperature by name, temperature=0.5")
    assert GenerationConfig(40, temperature=0.5).temperature == 0.5
    assert GenerationConfig(40, 5).min_new_tokens == 5  # our documented order still works
    with pytest.raises(ConfigError) as info:
        GenerationConfig(40, 12.5)  # not a temperature llmbuilder users write: the plain message
    assert "temperature" not in str(info.value)


def test_assigning_a_field_says_how_to_change_it():
    cfg = GenerationConfig(max_new_tokens=40)
    with pytest.raises(dataclasses.FrozenInstanceError) as info:
        cfg.temperature = 0.5
    assert isinstance(info.value, AttributeError)
    assert str(info.value) == ("cannot assign to field 'temperature': a GenerationConfig is immutable (validated once, "
                               "then shared) — make a changed copy instead: cfg = cfg.replace(temperature=0.5) "
                               "(or dataclasses.replace(cfg, temperature=0.5))")
    assert cfg.temperature == 0.8
    assert cfg.replace(temperature=0.5).temperature == 0.5
    assert dataclasses.replace(cfg, temperature=0.5) == cfg.replace(temperature=0.5)
    with pytest.raises(ConfigError):
        cfg.replace(temperature=-1)  # the copy is validated
    assert hash(cfg) == hash(GenerationConfig(max_new_tokens=40))


# ------------------------------------------------------------------------------------------- TextGenerator
def test_text_generator_loads_once_and_generates_many(monkeypatch):
    from llmbuilder_cli.engine import loading

    calls = []
    real_load = loading.load
    monkeypatch.setattr(loading, "load", lambda *a, **k: calls.append(a) or real_load(*a, **k))
    gen = TextGenerator(MODEL_PT, TOKENIZER_DIR, device="cpu", config=GenerationConfig(do_sample=False,
                                                                                        max_new_tokens=40))
    texts = [gen.generate(c["prompt"], repetition_penalty=c["config"]["repetition_penalty"]) for c in GREEDY_CASES]
    assert texts == [c["text"] for c in GREEDY_CASES]
    assert len(calls) == 1
    assert gen.model_path == MODEL_PT.resolve() and gen.tokenizer_path == (TOKENIZER_DIR / "tokenizer.model").resolve()
    assert str(gen.device) == "cpu" and gen.tokenizer.encode(FIRST["prompt"]) == FIRST["prompt_ids"]
    assert generate(gen.loaded, prompt=FIRST["prompt"], max_new_tokens=40, do_sample=False).full_text == FIRST["text"]


def test_text_generator_config_rules(tiny_loaded):
    cfg = GenerationConfig(do_sample=False, max_new_tokens=4)
    gen = TextGenerator(MODEL_PT, TOKENIZER_DIR, device="cpu", config=cfg)
    four = gen.generate(FIRST["prompt"])
    assert gen.generate(FIRST["prompt"], max_new_tokens=2) != four and gen.config is cfg  # keywords: this call only
    assert gen.config.eos_token_id is None  # never filled in: None means the tokenizer's EOS at every call
    # A config= replaces the instance config for the call, and a fresh one keeps the EOS stop.
    assert gen.generate(FIRST["prompt"], config=GenerationConfig(do_sample=False, max_new_tokens=3,
                                                                 eos_token_id=COMMA)) == "once upon a time"
    gen.update_config(max_new_tokens=2)
    assert gen.config == cfg.replace(max_new_tokens=2) and len(gen.generate(FIRST["prompt"])) < len(four)
    with pytest.raises(TypeError):
        gen.update_config(num_beams=4)  # an unknown name fails at the call (llmbuilder only logged it)
    with pytest.raises(ConfigError):
        gen.update_config(temperature=-1)  # validated
    assert gen.config.max_new_tokens == 2
    with pytest.raises(ConfigError):
        gen.config = {"temperature": 0.5}
    seeded = [gen.generate("the fox", do_sample=True, seed=7, max_new_tokens=8) for _ in range(2)]
    assert seeded[0] == seeded[1]
    assert gen.generate_batch(["the fox", FIRST["prompt"]], max_new_tokens=3) == [
        gen.generate("the fox", max_new_tokens=3), gen.generate(FIRST["prompt"], max_new_tokens=3)]
    with pytest.raises(UsageError):
        gen.generate_batch(["the fox", ""])  # a failing prompt raises instead of becoming ""
