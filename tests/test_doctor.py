"""``llmbuilder doctor`` (what a bug report needs, exit 1 naming a failed check) and ``llmbuilder --version``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from conftest import MODEL_PT, TOKENIZER_DIR, cli_cmd, cli_env

import llmbuilder_cli
from llmbuilder_cli.cli import doctor

HERE = Path(__file__).parent
EXPECTED = json.loads((HERE / "data" / "demo_expected.json").read_text(encoding="utf-8"))
HEAVY = ("torch", "tokenizers", "sentencepiece")


def run_cli(*args: str, home: Path, **env_extra: str) -> subprocess.CompletedProcess:
    env = cli_env()
    env["LLMBUILDER_HOME"] = str(home)
    env.update(env_extra)
    return subprocess.run(cli_cmd(*args), capture_output=True, text=True, env=env, timeout=180)


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("LLMBUILDER_HOME", str(h))
    return h


def demo_greedy_text(n_tokens: int) -> str:
    """The demo's greedy continuation of the first expected case, cut to ``n_tokens`` tokens."""
    from llmbuilder_cli import load_model

    case = EXPECTED["cases"][0]
    assert case["prompt"] == doctor.CHECK_PROMPT
    return load_model().tokenizer.decode(case["token_ids"][:n_tokens])


# ---------------------------------------------------------------------------------------------- doctor
@pytest.mark.slow
def test_doctor_json_and_text_on_a_healthy_install(home):
    import torch

    p = run_cli("doctor", "--json", home=home)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stderr == ""
    r = json.loads(p.stdout)
    assert r["ok"] is True and r["failed"] == []
    assert r["llmbuilder_cli"]["version"] == llmbuilder_cli.__version__
    assert r["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    t = r["torch"]
    assert t["version"] == torch.__version__ and t["threads"] >= 1
    assert t["build"] == ("CPU" if torch.version.cuda is None and not getattr(torch.version, "hip", None) else t["build"])
    cpu = r["devices"]["cpu"]["dtypes"]
    assert set(cpu) == {"float32", "bfloat16", "float16"} and cpu["float32"]["ok"]
    assert cpu["float32"]["max_relative_error"] < 1e-4
    assert r["auto"]["ok"] and r["auto"]["dtype"] in ("float32", "bfloat16", "float16")
    assert r["devices"]["cuda"]["available"] == torch.cuda.is_available()
    for dist in ("tokenizers", "sentencepiece", "safetensors", "gguf", "typer", "rich", "questionary", "tomlkit"):
        assert r["packages"][dist] == {"version": metadata.version(dist)}, dist
    s = r["settings"]
    assert s["path"] == str(home / "settings.toml") and s["exists"] is False and s["ok"] and s["profiles"] == {}
    assert s["home_from"] == "LLMBUILDER_HOME" and r["environment"]["LLMBUILDER_HOME"] == str(home)
    d = r["demo"]
    assert d["ok"] and d["intact"] and d["new_tokens"] == doctor.CHECK_TOKENS
    assert d["text"] == demo_greedy_text(doctor.CHECK_TOKENS)  # the demo computes what it was trained to
    assert "model" not in r

    p = run_cli("doctor", home=home)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines[-1] == "All checks passed."
    labels = [line.split("  ")[0] for line in lines if line and not line.startswith(" ")]
    for label in ("llmbuilder-cli", "Python", "Platform", "torch", "Threads", "CPU", "CUDA", "MPS", "Automatic",
                  "Packages", "Settings", "Environment", "Demo model"):
        assert label in labels, label
    demo_line = next(line for line in lines if line.startswith("Demo model"))
    assert "ok: loaded in" in demo_line and json.dumps(doctor.CHECK_PROMPT + d["text"]) in demo_line


def test_a_damaged_settings_file_fails_the_settings_check(home):
    (home / "settings.toml").write_text('[profiles.a]\ntemperature = "hot"\n', encoding="utf-8")
    r = doctor.collect()
    assert r["ok"] is False and r["failed"] == ["settings"]
    assert "line 2" in r["settings"]["error"] and "temperature" in r["settings"]["error"]
    text = doctor.format_report(r)
    assert text.splitlines()[-1] == "1 check failed: settings"
    assert "FAILED: " in text
    assert r["demo"]["ok"]  # the other checks still ran


def test_profiles_and_a_bad_environment_value(home, monkeypatch):
    (home / "settings.toml").write_text('default_profile = "b"\n[profiles.a]\n[profiles.b]\ntop_k = 5\n',
                                        encoding="utf-8")
    r = doctor.collect()
    assert r["ok"], r["failed"]
    assert r["settings"]["profiles"] == {"a": [], "b": ["top_k"]} and r["settings"]["active_profile"] == "b"
    assert "profiles: a (empty), b (top_k); in use: b" in doctor.format_report(r)
    monkeypatch.setenv("LLMBUILDER_TEMPERATURE", "warm")
    r = doctor.collect()
    assert r["failed"] == ["settings"] and "LLMBUILDER_TEMPERATURE" in r["settings"]["error"]
    assert r["environment"]["LLMBUILDER_TEMPERATURE"] == "warm"


def test_a_missing_or_altered_demo_fails(home, monkeypatch, tmp_path):
    from llmbuilder_cli import demo

    empty = tmp_path / "no-demo"
    empty.mkdir()
    monkeypatch.setattr(demo, "demo_dir", lambda: empty)
    r = doctor.collect()
    assert r["failed"] == ["demo model"] and r["demo"]["installed"] is False
    assert "1 check failed: demo model" in doctor.format_report(r)

    altered = tmp_path / "altered"
    import shutil

    shutil.copytree(Path(demo.__file__).parent / "demo_model", altered)
    with open(altered / "model.pt", "ab") as f:
        f.write(b"\0")  # zip archives tolerate trailing bytes: it still loads, but is not the shipped file
    monkeypatch.setattr(demo, "demo_dir", lambda: altered)
    r = doctor.collect()
    assert r["failed"] == ["demo model"] and r["demo"]["intact"] is False
    assert "differs from the one shipped" in r["demo"]["error"]


def test_model_option_checks_that_model_too(home, tmp_path):
    r = doctor.collect(str(MODEL_PT), str(TOKENIZER_DIR))
    assert r["ok"], r["failed"]
    m = r["model"]
    assert m["ok"] and m["new_tokens"] >= 1 and m["path"] == str(MODEL_PT.resolve())
    r = doctor.collect(str(tmp_path / "nope.pt"))
    assert r["failed"] == ["model"] and "not found" in r["model"]["error"].lower()
    assert doctor.format_report(r).splitlines()[-1] == "1 check failed: model"


@pytest.mark.slow
def test_doctor_exit_code_names_the_failure(home):
    p = run_cli("doctor", "--model", str(home / "missing.pt"), home=home)
    assert p.returncode == 1
    assert p.stdout.splitlines()[-1] == "1 check failed: model"
    assert p.stderr == ""


def test_bad_dtype_or_device_is_reported_not_crashed(home):
    r = doctor.collect(dtype="float8")
    assert "demo model" in r["failed"] and "dtype" in r["demo"]["error"]


def test_doctor_help_imports_no_torch():
    probe = ("import sys, json\nfrom llmbuilder_cli.cli.app import main\nrc = main(['doctor', '--help'])\n"
             "print(json.dumps(sorted(sys.modules)))\nassert rc == 0\n")
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=cli_env(), timeout=60)
    assert p.returncode == 0, p.stderr
    mods = {m.split(".")[0] for m in json.loads(p.stdout.strip().splitlines()[-1])}
    assert not mods & set(HEAVY)


# --------------------------------------------------------------------------------------------- --version
def test_version_names_the_tool_torch_and_tokenizers_without_importing_torch():
    probe = (
        "import sys, json, io, contextlib\n"
        "from llmbuilder_cli.cli.app import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    rc = main(['--version'])\n"
        "print(json.dumps({'rc': rc, 'out': out.getvalue(), 'mods': sorted(sys.modules)}))\n"
    )
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=cli_env(), timeout=60)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["rc"] == 0
    assert not {m.split(".")[0] for m in got["mods"]} & set(HEAVY)
    lines = got["out"].splitlines()
    assert lines[0] == f"llmbuilder-cli {llmbuilder_cli.__version__}"
    assert lines[1] == f"torch {metadata.version('torch')}"
    assert lines[2] == f"tokenizers {metadata.version('tokenizers')}"
    assert lines[3].startswith(f"Python {sys.version_info.major}.{sys.version_info.minor}.")

    t0 = time.perf_counter()
    p = subprocess.run(cli_cmd("--version"), capture_output=True, text=True, env=cli_env(), timeout=60)
    print(f"llmbuilder --version: {time.perf_counter() - t0:.2f} s")
    assert p.returncode == 0 and p.stdout == got["out"] and p.stderr == ""


def test_text_for_a_gpu_machine(home):
    """The CUDA and MPS branches of the text report, on a report as a GPU machine would give it."""
    r = doctor.collect()
    ok = {"ok": True, "max_relative_error": 0.001, "matmul_ms": 0.01}
    dtypes = {"float32": ok, "bfloat16": {**ok, "speed_vs_float32": 8.0}, "float16": {"ok": False, "error": "boom"}}
    r["devices"]["cuda"] = {"available": True, "devices": [
        {"index": 0, "name": "GPU X", "capability": "9.0", "memory_gib": 139.8, "bf16_supported": True, "dtypes": dtypes}]}
    r["devices"]["mps"] = {"available": True, "dtypes": dtypes}
    r["auto"] = {"ok": True, "device": "cuda:0", "dtype": "bfloat16"}
    text = doctor.format_report(r)
    assert "cuda:0" in text and "GPU X (compute 9.0, 139.8 GiB, bf16 supported)" in text
    assert "bfloat16 ok (matmul 8x float32's speed); float16 FAILS (boom)" in text
    assert "cuda:0, bfloat16" in text
