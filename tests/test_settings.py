"""Settings and profiles: precedence, provenance, damaged files, atomic and concurrent writes, `config`."""

from __future__ import annotations

import multiprocessing
import os
import subprocess

import pytest

from conftest import MODEL_PT, TOKENIZER_DIR, cli_cmd, cli_env
from llmbuilder_cli import settings as st
from llmbuilder_cli.errors import ConfigError, UsageError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMBUILDER_HOME", str(tmp_path))
    for key in [k for k in os.environ if k.startswith("LLMBUILDER_") and k != "LLMBUILDER_HOME"]:
        monkeypatch.delenv(key)
    return tmp_path


def run(*args, env=None, stdin=None):
    proc = subprocess.run(cli_cmd(*args), capture_output=True, text=True, env=env or cli_env(), input=stdin,
                          timeout=120)
    return proc


SETTINGS = """# my own notes
default_profile = "warm"

[profiles.warm]   # a warm profile
temperature = 1.1
top_k = 20
model = "some/model.pt"
tokenizer = "some/tokenizer"

[profiles.cold]
temperature = 0.2
max_new_tokens = 7
"""


# ----------------------------------------------------------------------------------------- precedence
def test_precedence_flag_env_profile_model_default(home):
    s = st.Settings.read(write(home / "settings.toml", SETTINGS))
    r = st.resolve({"top_k": 5}, env={"LLMBUILDER_TEMPERATURE": "0.6"}, settings=s,
                   model_defaults={"top_p": 0.95, "top_k": 99, "temperature": 0.1})
    assert r.profile == "warm"
    assert (r.values["top_k"], r.sources["top_k"]) == (5, "flag")
    assert (r.values["temperature"], r.sources["temperature"]) == (0.6, "env LLMBUILDER_TEMPERATURE")
    assert (r.values["top_p"], r.sources["top_p"]) == (0.95, "model (generation_config.json)")
    assert (r.values["max_new_tokens"], r.sources["max_new_tokens"]) == (100, "default")
    assert r.values["model"] == "some/model.pt"
    assert r.sources["model"] == f"profile 'warm' ({home / 'settings.toml'}, line 7)"
    cfg = r.generation_config()
    assert (cfg.temperature, cfg.top_k, cfg.top_p) == (0.6, 5, 0.95)


def test_profile_choice_flag_then_env_then_default_profile(home):
    s = st.Settings.read(write(home / "settings.toml", SETTINGS))
    assert st.resolve({}, env={}, settings=s).profile == "warm"
    assert st.resolve({}, env={"LLMBUILDER_PROFILE": "cold"}, settings=s).profile == "cold"
    r = st.resolve({}, profile="cold", env={"LLMBUILDER_PROFILE": "warm"}, settings=s)
    assert r.profile == "cold" and r.values["max_new_tokens"] == 7 and r.values["temperature"] == 0.2
    with pytest.raises(UsageError, match="no profile named 'hot'.*profiles: warm, cold"):
        st.resolve({}, profile="hot", env={}, settings=s)


def test_a_profile_tokenizer_is_not_paired_with_a_model_from_a_flag(home):
    s = st.Settings.read(write(home / "settings.toml", SETTINGS))
    r = st.resolve({"model": "other/model.pt"}, env={}, settings=s)
    assert r.values["model"] == "other/model.pt"
    assert "tokenizer" not in r.values and r.sources["tokenizer"] == "default"
    r = st.resolve({}, env={"LLMBUILDER_MODEL": "env/model.pt"}, settings=s)
    assert "tokenizer" not in r.values
    r = st.resolve({}, env={}, settings=s)  # same layer: kept
    assert r.values["tokenizer"] == "some/tokenizer"


def test_bad_values_name_their_source(home):
    s = st.Settings.read(write(home / "settings.toml", SETTINGS))
    with pytest.raises(ConfigError, match="LLMBUILDER_TOP_P: top_p must be a number"):
        st.resolve({}, env={"LLMBUILDER_TOP_P": "lots"}, settings=s)
    with pytest.raises(ConfigError, match="LLMBUILDER_TEMPERATURE: temperature must be 0"):
        st.resolve({}, env={"LLMBUILDER_TEMPERATURE": "-3"}, settings=s)
    r = st.resolve({"min_new_tokens": 9}, env={}, profile="cold", settings=s)
    with pytest.raises(ConfigError, match=r"min_new_tokens \(9\) must not exceed max_new_tokens \(7\)"):
        r.generation_config()


# ------------------------------------------------------------------------------------- damaged files
@pytest.mark.parametrize(
    "text, fragments",
    [
        ("[profiles.a]\ntemperature = = 1\n", ["line 2", "damaged"]),
        ("[profiles.a]\ntop_k = 3\ntempreature = 1\n", ["line 3", "unknown setting 'tempreature'",
                                                         "did you mean 'temperature'"]),
        ("[profiles.a]\n\ntemperature = \"hot\"\n", ["line 3", "profile 'a'", "temperature"]),
        ("[profiles.a]\ntemperature = -1.0\n", ["line 2", "temperature must be 0"]),
        ("[profiles.a]\nmin_new_tokens = 50\nmax_new_tokens = 10\n", ["profile 'a'", "must not exceed"]),
        ("default_profile = \"b\"\n[profiles.a]\n", ["line 1", "'b' names no profile"]),
        ("colour = 1\n", ["line 1", "unknown top-level key 'colour'"]),
        ("[profiles.a]\nstop = [1, 2]\n", ["line 2", "stop must be a list of strings"]),
        ("[profiles.a]\ndevice = \"gpu\"\n", ["line 2", "unknown device 'gpu'"]),
        ("[profiles.a]\nthreads = 0\n", ["line 2", "threads must be"]),
    ],
)
def test_damaged_settings_are_reported_with_path_and_line(home, text, fragments):
    path = write(home / "settings.toml", text)
    with pytest.raises(ConfigError) as exc:
        st.Settings.read(path)
    message = exc.value.one_line()
    assert str(path) in message
    for f in fragments:
        assert f in message, (f, message)


def test_a_damaged_file_is_never_overwritten(home):
    path = write(home / "settings.toml", "[profiles.a]\ntemperature = = 1\n")
    before = path.read_bytes()
    proc = run("config", "set", "top_k", "5", env={**cli_env(), "LLMBUILDER_HOME": str(home)})
    assert proc.returncode == 2 and "line 2" in proc.stderr and "Traceback" not in proc.stderr
    assert path.read_bytes() == before
    proc = run("generate", "text", "-p", "x", env={**cli_env(), "LLMBUILDER_HOME": str(home)})
    assert proc.returncode == 2 and "damaged" in proc.stderr
    assert path.read_bytes() == before


# --------------------------------------------------------------------------------------------- writes
def test_update_keeps_comments_and_is_atomic(home):
    path = write(home / "settings.toml", SETTINGS)
    st.update(lambda doc: doc["profiles"]["cold"].__setitem__("top_p", 0.5))
    text = path.read_text(encoding="utf-8")
    assert "# my own notes" in text and "# a warm profile" in text
    assert st.Settings.read(path).profiles["cold"]["top_p"] == 0.5
    assert [p.name for p in home.iterdir() if p.name.startswith(".settings-")] == []
    with pytest.raises(ConfigError, match="top_p must be a number in"):  # an invalid change writes nothing
        st.update(lambda doc: doc["profiles"]["cold"].__setitem__("top_p", 3.0))
    assert st.Settings.read(path).profiles["cold"]["top_p"] == 0.5


def _writer(home: str, name: str, n: int) -> None:
    os.environ["LLMBUILDER_HOME"] = home
    import tomlkit

    def change(doc):
        if "profiles" not in doc:
            doc["profiles"] = tomlkit.table(is_super_table=True)
        doc["profiles"][name] = {"max_new_tokens": n}

    st.update(change)


def test_concurrent_writers_keep_each_others_profiles(home):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(home), f"p{i}", i + 1)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    profiles = st.Settings.read(home / "settings.toml").profiles
    assert {k: v["max_new_tokens"] for k, v in profiles.items()} == {f"p{i}": i + 1 for i in range(6)}


def test_unwritable_home_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"  # a home below a regular file cannot be created, even by root
    blocker.write_text("x", encoding="utf-8")
    proc = run("config", "set", "top_k", "5", env={**cli_env(), "LLMBUILDER_HOME": str(blocker / "home")})
    assert proc.returncode == 2 and proc.stderr.startswith("Error: cannot create the settings directory")
    assert "LLMBUILDER_HOME" in proc.stderr and "Traceback" not in proc.stderr


# -------------------------------------------------------------------------------------- config command
def test_config_commands_end_to_end(home):
    env = {**cli_env(), "LLMBUILDER_HOME": str(home)}
    assert run("config", "path", env=env).stdout.strip() == str(home / "settings.toml")
    assert run("config", "set", "temperature", "0.5", env=env).returncode == 0
    assert run("config", "set", "max-tokens", "12", "--profile", "short", env=env).returncode == 0
    assert run("config", "set", "stop", "THE END|Moral", "--profile", "short", env=env).returncode == 0
    assert run("config", "set", "model", str(MODEL_PT), "--profile", "short", env=env).returncode == 0
    assert run("config", "set", "tokenizer", str(TOKENIZER_DIR), "--profile", "short", env=env).returncode == 0
    bad = run("config", "set", "temperature", "-1", env=env)
    assert bad.returncode == 2 and "temperature must be 0 (greedy)" in bad.stderr
    typo = run("config", "set", "tempreture", "1", env=env)
    assert typo.returncode == 2 and "did you mean 'temperature'" in typo.stderr
    missing = run("config", "set", "model", str(home / "nope.pt"), env=env)
    assert missing.returncode == 2 and "not found" in missing.stderr

    listing = run("config", "profiles", env=env).stdout.splitlines()
    assert listing == ["* default  (temperature)", "  short  (max_new_tokens, stop, model, tokenizer)"]

    show = run("config", "show", "--profile", "short", env={**env, "LLMBUILDER_TOP_K": "7"}).stdout
    lines = {line.split()[0]: line for line in show.splitlines()[1:]}
    assert "12" in lines["max_new_tokens"] and "profile 'short'" in lines["max_new_tokens"]
    assert "line" in lines["max_new_tokens"]
    assert "7" in lines["top_k"] and "env LLMBUILDER_TOP_K" in lines["top_k"]
    assert '["THE END", "Moral"]' in lines["stop"]
    assert "0.8" in lines["temperature"] and lines["temperature"].rstrip().endswith("default")

    # The profile drives generation; a flag beats it.
    gen = run("generate", "text", "--profile", "short", "-p", "Once", "--greedy", env=env)
    assert gen.returncode == 0, gen.stderr
    assert "[12 tokens" in gen.stderr or "finish: stop" in gen.stderr
    gen5 = run("generate", "text", "--profile", "short", "-p", "Once", "--greedy", "--max-tokens", "5", env=env)
    assert "[5 tokens" in gen5.stderr

    assert run("config", "use", "short", env=env).returncode == 0
    assert run("config", "profiles", env=env).stdout.splitlines()[1].startswith("* short")
    assert run("config", "unset", "stop", "--profile", "short", env=env).returncode == 0
    assert "stop" not in st.Settings.read(home / "settings.toml").profiles["short"]
    assert run("config", "remove", "short", env=env).returncode == 0
    after = st.Settings.read(home / "settings.toml")
    assert "short" not in after.profiles and after.default_profile is None
    nope = run("config", "use", "ghost", env=env)
    assert nope.returncode == 2 and "no profile named 'ghost'" in nope.stderr


def test_config_show_json_lists_every_key_with_its_source(home):
    import json

    env = {**cli_env(), "LLMBUILDER_HOME": str(home), "LLMBUILDER_SEED": "3"}
    data = json.loads(run("config", "show", "--json", env=env).stdout)
    assert set(data["settings"]) == set(st.KEYS)
    assert data["settings"]["seed"] == {"value": 3, "source": "env LLMBUILDER_SEED"}
    assert data["settings"]["top_p"] == {"value": 0.9, "source": "default"}
