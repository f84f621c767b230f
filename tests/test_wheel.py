"""Packaging: the sdist and the wheel built from it (as ``python -m build`` does) hold the demo model and
the shell completions, and the wheel installed into a fresh virtual environment runs.

The environment sees this one's packages through a ``.pth`` file (so torch is never downloaded or
reinstalled, and no network is needed), while llmbuilder-cli itself comes only from the installed wheel:
the test checks which copy was imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import llmbuilder_cli
from llmbuilder_cli.cli.completion import completion_script, script_files

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DEMO_REPORT = json.loads((ROOT / "llmbuilder_cli" / "demo_model" / "training.json").read_text(encoding="utf-8"))
DEMO_FILES = ("model.pt", "model.metadata.json", "training.json", "tokenizer/tokenizer.json",
              "tokenizer/tokenizer_config.json")


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert p.returncode == 0, f"{cmd}\n{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> tuple[Path, Path]:
    """(sdist, wheel): the sdist built from a copy of the source tree, the wheel built from the sdist."""
    tmp = tmp_path_factory.mktemp("dists")
    src = tmp / "src"
    shutil.copytree(ROOT / "llmbuilder_cli", src / "llmbuilder_cli",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(ROOT / "completions", src / "completions")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp / "dist"
    out.mkdir()
    build_sdist = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    name = run([sys.executable, "-c", build_sdist, str(out)], cwd=src).stdout.strip().splitlines()[-1]
    sdist = out / name
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp / "unpacked", **safe)
    (unpacked,) = (tmp / "unpacked").iterdir()
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(out), str(unpacked)])
    (wheel,) = out.glob("llmbuilder_cli-*.whl")
    return sdist, wheel


def test_sdist_holds_the_sources_demo_and_completions(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for rel in ("pyproject.toml", "README.md", "llmbuilder_cli/__init__.py", "llmbuilder_cli/cli/app.py"):
        assert rel in names, rel
    for rel in DEMO_FILES:
        assert f"llmbuilder_cli/demo_model/{rel}" in names, rel
    for file in script_files():
        assert f"completions/{file}" in names, file


def test_wheel_holds_the_demo_and_the_completions(dists):
    _, wheel = dists
    version = llmbuilder_cli.__version__
    assert wheel.name.startswith(f"llmbuilder_cli-{version}-")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for rel in DEMO_FILES:
            assert f"llmbuilder_cli/demo_model/{rel}" in names, rel
        assert hashlib.sha256(z.read("llmbuilder_cli/demo_model/model.pt")).hexdigest() == DEMO_REPORT["model"]["sha256"]
        for file, (shell, prog, where) in script_files().items():
            member = f"llmbuilder_cli-{version}.data/data/{where}/{Path(file).name}"
            assert z.read(member).decode("utf-8") == completion_script(shell, prog), member
        entry_points = z.read(f"llmbuilder_cli-{version}.dist-info/entry_points.txt").decode()
    assert "[console_scripts]" in entry_points and "llmbuilder = llmbuilder_cli." in entry_points
    assert "llmbuilder-cli = llmbuilder_cli." in entry_points  # the name no other package takes
    assert {n.split("/")[0] for n in names} == {"llmbuilder_cli", f"llmbuilder_cli-{version}.dist-info",
                                                 f"llmbuilder_cli-{version}.data"}  # no tests, scripts, checkpoints


def _visible_site_dirs() -> list[str]:
    """This interpreter's site-packages directories (where torch and the other dependencies are)."""
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    out = []
    for d in dirs:
        if d not in out and Path(d).is_dir():
            out.append(d)
    return out


@pytest.fixture(scope="module")
def venv(dists, tmp_path_factory) -> dict[str, Path]:
    """A fresh virtual environment with the wheel installed and this environment's packages visible."""
    _, wheel = dists
    return _make_venv(wheel, tmp_path_factory.mktemp("venv"))


def _make_venv(wheel: Path, tmp: Path) -> dict[str, Path]:
    env_dir = tmp / "env"
    run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / ("python.exe" if os.name == "nt" else "python")
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       env=_clean_env()).stdout.strip())
    # Plain paths in a .pth file: this environment's packages come after the venv's own, and the .pth
    # files there (such as an editable install of this repository) are not run.
    (purelib / "_parent_environment.pth").write_text("\n".join(_visible_site_dirs()) + "\n", encoding="utf-8")
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)],
        env=_clean_env())
    home = tmp / "home"
    home.mkdir()
    return {"dir": env_dir, "bin": bin_dir, "python": python, "purelib": purelib, "home": home, "cwd": tmp}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP") and not k.startswith("LLMBUILDER_")}
    env.update(NO_COLOR="1", PYTHONIOENCODING="utf-8", PYTHONNOUSERSITE="1", **extra)
    return env


def in_venv(venv: dict[str, Path], *args: str) -> subprocess.CompletedProcess:
    exe = venv["bin"] / ("llmbuilder.exe" if os.name == "nt" else "llmbuilder")
    env = _clean_env(LLMBUILDER_HOME=str(venv["home"]), VIRTUAL_ENV=str(venv["dir"]),
                     PATH=str(venv["bin"]) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300, env=env, cwd=venv["cwd"])


def test_the_installed_copy_is_the_one_that_runs(venv):
    code = "import json, llmbuilder_cli, torch; print(json.dumps([llmbuilder_cli.__file__, torch.__file__]))"
    p = run([str(venv["python"]), "-c", code], env=_clean_env(), cwd=venv["cwd"])
    pkg, torch_file = json.loads(p.stdout)
    assert Path(pkg).resolve().is_relative_to(venv["purelib"].resolve())  # the wheel, not the repository
    assert not Path(torch_file).resolve().is_relative_to(venv["dir"].resolve())  # torch was not installed
    for file, (_, _, where) in script_files().items():
        installed = venv["dir"] / where / Path(file).name
        assert installed.read_text(encoding="utf-8") == (ROOT / "completions" / file).read_text(encoding="utf-8")


def test_installed_version_and_generation(venv):
    from importlib import metadata

    p = in_venv(venv, "--version")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == f"llmbuilder-cli {llmbuilder_cli.__version__}"
    assert lines[1] == f"torch {metadata.version('torch')}" and lines[2] == f"tokenizers {metadata.version('tokenizers')}"

    p = in_venv(venv, "generate", "text", "-p", "hi", "--max-tokens", "5")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("hi") and p.stdout.endswith("\n")
    assert "built-in demo model" in p.stderr  # the first run says so

    p = in_venv(venv, "generate", "text", "-p", "Once upon a time", "--max-tokens", "5", "--greedy", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["finish_reason"] == "length" and len(r["token_ids"]) == 5
    assert Path(r["model"]["path"]).resolve().is_relative_to(venv["purelib"].resolve())
    assert r["model"]["sha256"] == DEMO_REPORT["model"]["sha256"]
    from llmbuilder_cli import api

    same = api.generate(prompt="Once upon a time", max_new_tokens=5, do_sample=False)  # the repository's copy
    assert r["token_ids"] == list(same.token_ids) and r["text"] == same.text


def test_installed_doctor_passes(venv):
    p = in_venv(venv, "doctor", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout)
    assert r["ok"] and r["demo"]["intact"]
    assert Path(r["llmbuilder_cli"]["location"]).resolve().is_relative_to(venv["purelib"].resolve())


# ------------------------------------------------------------- another package's `llmbuilder` command
def _competing_wheel(folder: Path) -> Path:
    """A minimal wheel of a package named llmbuilder, version 2.0.0, whose console script is also called
    ``llmbuilder`` and (like llmbuilder 2.0.0's wizard) asks for a checkpoint path: built here, offline."""
    import base64

    files = {
        "llmbuilder/__init__.py": "",
        "llmbuilder/cli.py": "import sys\n\ndef main():\n    sys.stdout.write('Path to your trained model checkpoint: ')\n"
                             "    return 1\n",
        "llmbuilder-2.0.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: llmbuilder\nVersion: 2.0.0\n",
        "llmbuilder-2.0.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "llmbuilder-2.0.0.dist-info/entry_points.txt": "[console_scripts]\nllmbuilder = llmbuilder.cli:main\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append("llmbuilder-2.0.0.dist-info/RECORD,,")
    files["llmbuilder-2.0.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / "llmbuilder-2.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return wheel


def _run_in(venv: dict[str, Path], command: str, *args: str) -> subprocess.CompletedProcess:
    env = _clean_env(LLMBUILDER_HOME=str(venv["home"]), VIRTUAL_ENV=str(venv["dir"]),
                     PATH=str(venv["bin"]) + os.pathsep + os.environ.get("PATH", ""))
    exe = venv["bin"] / (f"{command}.exe" if os.name == "nt" else command)
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300, env=env, cwd=venv["cwd"])


def _pip_install(venv: dict[str, Path], *args: str) -> None:
    run([str(venv["python"]), "-m", "pip", "install", "--no-deps", "--no-index", "-q", *args], env=_clean_env())


def test_llmbuilder_installed_after_this_tool_is_named_by_doctor_and_llmbuilder_cli_still_works(dists, tmp_path):
    _, wheel = dists
    venv = _make_venv(wheel, tmp_path)
    _pip_install(venv, str(_competing_wheel(tmp_path)))  # the other package, installed last, takes `llmbuilder`
    shadowing = venv["bin"] / "llmbuilder"

    p = _run_in(venv, "llmbuilder", "generate", "text", "-p", "hi")
    assert (p.returncode, p.stdout) == (1, "Path to your trained model checkpoint: ")  # not this tool any more

    p = _run_in(venv, "llmbuilder-cli", "generate", "text", "-p", "hi", "--max-tokens", "3")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("hi") and "3 tokens" in p.stderr

    p = _run_in(venv, "llmbuilder-cli", "doctor", "--json")
    assert p.returncode == 1, p.stdout + p.stderr
    r = json.loads(p.stdout)
    assert r["failed"] == ["command name"]
    c = r["command"]
    assert (c["path"], c["package"], c["runs"], c["ours"]) == (str(shadowing), "llmbuilder 2.0.0", "llmbuilder.cli:main",
                                                               False)
    assert sorted(c["declared_by"]) == ["llmbuilder 2.0.0", f"llmbuilder-cli {llmbuilder_cli.__version__}"]
    assert c["llmbuilder-cli"] == str(venv["bin"] / "llmbuilder-cli")
    p = _run_in(venv, "llmbuilder-cli", "doctor")
    lines = p.stdout.splitlines()
    assert (f"Command         FAILED: 'llmbuilder' on PATH is {shadowing}, llmbuilder 2.0.0's command, which runs "
            "llmbuilder.cli:main, not this tool's") in lines
    assert ("                fix: run 'llmbuilder-cli' or 'python -m llmbuilder_cli' instead (both always start this "
            "tool); to get 'llmbuilder' back: pip install --force-reinstall --no-deps llmbuilder-cli (installing "
            "llmbuilder 2.0.0 again takes it over again), or keep the two packages in separate virtual "
            "environments") in lines
    assert lines[-1] == "1 check failed: command name"

    # The fix the report gives: reinstalling this tool takes the command back; doctor still warns about it.
    _pip_install(venv, "--force-reinstall", str(wheel))
    p = _run_in(venv, "llmbuilder", "doctor", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    c = json.loads(p.stdout)["command"]
    assert c["ours"] is True and c["package"] == f"llmbuilder-cli {llmbuilder_cli.__version__}"
    assert c["note"] == ("llmbuilder 2.0.0 also installs a 'llmbuilder' command, which replaces this one whenever "
                         "that package is installed after it; 'llmbuilder-cli' always starts this tool")
