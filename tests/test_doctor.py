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
    for dist in ("tokenizers", "sentencepiece", "safetensors", "gguf", "typer", "rich", "questionary", "tomlkit",
                 "huggingface_hub", "llguidance"):
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


# ------------------------------------------------------------------------------------ the command name
def _command_check(monkeypatch, path_dirs: list[Path]) -> tuple[dict, list[str], str]:
    """`doctor`'s command-name check with PATH = ``path_dirs``: (its section, failed checks, its text)."""
    import os

    monkeypatch.setenv("PATH", os.pathsep.join(map(str, path_dirs)))
    report = doctor.Report()
    doctor._command_name(report)
    r = report.to_dict()
    width = len("llmbuilder-cli")
    text = "\n".join(f"{k:<{width}}  {v}" for k, v in doctor._command_rows(r))
    return r["command"], r["failed"], text


def _script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / name
    f.write_text(body, encoding="utf-8")
    f.chmod(0o755)
    return f


PIP_SCRIPT = ("#!/usr/bin/python3\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom {module} import {func}\n"
              "if __name__ == '__main__':\n    sys.exit({func}())\n")


def test_a_llmbuilder_command_of_another_program_fails_the_check(monkeypatch, tmp_path):
    import sysconfig

    other = _script(tmp_path / "bin", "llmbuilder", PIP_SCRIPT.format(module="llmbuilder.cli", func="main"))
    c, failed, text = _command_check(monkeypatch, [tmp_path / "bin"])
    assert failed == ["command name"] and c["ok"] is False and c["ours"] is False
    assert (c["path"], c["package"], c["runs"]) == (str(other), None, "llmbuilder.cli:main")
    assert c["error"] == f"'llmbuilder' on PATH is {other}, another program's command, which runs llmbuilder.cli:main, not this tool's"
    lines = text.splitlines()
    assert lines[0] == f"Command         FAILED: {c['error']}"
    assert lines[1] == ("                fix: run 'llmbuilder-cli' or 'python -m llmbuilder_cli' instead (both always "
                        f"start this tool); or put {sysconfig.get_path('scripts')} before {tmp_path / 'bin'} on PATH")


def test_no_llmbuilder_on_path_or_one_from_elsewhere_is_not_a_failure(monkeypatch, tmp_path):
    import sysconfig

    (tmp_path / "empty").mkdir()
    c, failed, text = _command_check(monkeypatch, [tmp_path / "empty"])
    assert failed == [] and c["ok"] and c["path"] is None
    assert text == (f"Command         no 'llmbuilder' on PATH: run 'python -m llmbuilder_cli', or add "
                    f"{sysconfig.get_path('scripts')} to PATH")
    # This tool installed into another environment: it is this tool, so all is well.
    ours = _script(tmp_path / "elsewhere", "llmbuilder", PIP_SCRIPT.format(module="llmbuilder_cli.entry", func="run"))
    second = _script(tmp_path / "elsewhere", "llmbuilder-cli", PIP_SCRIPT.format(module="llmbuilder_cli.entry",
                                                                                 func="run"))
    c, failed, text = _command_check(monkeypatch, [tmp_path / "elsewhere"])
    assert failed == [] and c["ours"] is True and c["runs"] == "llmbuilder_cli.entry:run"
    assert text.splitlines()[0] == f"Command         llmbuilder → {ours} (this tool); llmbuilder-cli → {second}"
    # A file that says nothing about what it runs (a compiled launcher, a shell wrapper): reported, not failed.
    _script(tmp_path / "wrapper", "llmbuilder", "#!/bin/sh\nexec something \"$@\"\n")
    c, failed, text = _command_check(monkeypatch, [tmp_path / "wrapper"])
    assert failed == [] and c["ours"] is False
    assert text.splitlines()[0] == f"Command         llmbuilder → {tmp_path / 'wrapper' / 'llmbuilder'} (origin unknown)"
    assert text.splitlines()[1] == (f"                note: {tmp_path / 'wrapper' / 'llmbuilder'} was not installed by a "
                                    "package of this Python environment")


def test_this_environments_own_command_is_recognised_from_its_record(monkeypatch):
    import shutil

    scripts = Path(sys.executable).parent
    if shutil.which("llmbuilder", path=str(scripts)) is None:
        pytest.skip("llmbuilder-cli is not installed into this interpreter's environment")
    c, failed, text = _command_check(monkeypatch, [scripts])
    assert failed == [] and c["ours"] is True and c["package"] == f"llmbuilder-cli {llmbuilder_cli.__version__}"
    assert c["declared_by"][0] == c["package"]
    assert text.startswith(f"Command         llmbuilder → {scripts / 'llmbuilder'} (llmbuilder-cli ")
