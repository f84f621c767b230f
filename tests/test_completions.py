"""Shell completion: the shipped scripts match the program, the program answers completion requests (without
torch), the real shells complete through the shipped scripts, and ``--install-completion`` works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli_env

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import gen_completions  # noqa: E402

from llmbuilder_cli import settings as st  # noqa: E402
from llmbuilder_cli.cli import completion as comp  # noqa: E402

HEAVY = ("torch", "tokenizers", "sentencepiece")


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = cli_env()
    env["LLMBUILDER_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def wrapper_bin(tmp_path: Path) -> Path:
    """A directory holding an ``llmbuilder`` command that runs this checkout with this interpreter."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "llmbuilder"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m llmbuilder_cli "$@"\n', encoding="utf-8")
    exe.chmod(0o755)
    return bin_dir


def bash_request(words: list[str], home: Path, cwd: Path | None = None) -> list[str]:
    """Candidates the program answers to bash's request for the last of ``words`` ('' = a new word)."""
    env = env_for(home, _LLMBUILDER_COMPLETE="complete_bash", COMP_WORDS=" ".join(words), COMP_CWORD=str(len(words) - 1))
    p = subprocess.run([sys.executable, "-m", "llmbuilder_cli"], env=env, capture_output=True, text=True, timeout=60,
                       cwd=cwd)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    return [line for line in p.stdout.splitlines() if line]


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def write_profiles(home: Path) -> None:
    (home / "settings.toml").write_text(
        'default_profile = "stories"\n[profiles.stories]\ntemperature = 0.7\n[profiles.code]\ndevice = "cpu"\n',
        encoding="utf-8",
    )


# ---------------------------------------------------------------------------------------------- files
def test_committed_scripts_match_the_generator():
    stale = gen_completions.stale_files()
    assert not stale, f"run: python scripts/gen_completions.py (stale: {[p.name for p in stale]})"
    files = sorted(p.relative_to(ROOT / "completions").as_posix() for p in (ROOT / "completions").rglob("*") if p.is_file())
    assert files == sorted(comp.script_files())  # every shell, for each command name
    assert sorted({prog for _, prog, _ in comp.script_files().values()}) == ["llmbuilder", "llmbuilder-cli"]


def test_scripts_are_what_the_program_shows_and_installs():
    """bash and fish files hold exactly `llmbuilder --show-completion SHELL`; zsh's differs only in completing
    on the first Tab when autoloaded. The zsh file starts with #compdef (zsh reads the first line)."""
    env = cli_env()
    env["_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION"] = "1"  # Typer: take the shell as an argument
    for shell, (name, _) in comp.SHELLS.items():
        p = subprocess.run([sys.executable, "-m", "llmbuilder_cli", "--show-completion", shell], env=env,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        shown = p.stdout.strip()
        shipped = (ROOT / "completions" / name).read_text(encoding="utf-8")
        body = "\n".join(line for line in shipped.splitlines() if not line.startswith("# ")).strip()
        if shell == "zsh":
            assert shipped.startswith("#compdef llmbuilder\n")
            assert shown.endswith(comp._ZSH_REGISTER)
            assert body.startswith(shown[: -len(comp._ZSH_REGISTER)].strip())
            assert "(loadautofunc|shfunc)" in body and comp._ZSH_REGISTER in body
        else:
            assert body == shown, shell


# -------------------------------------------------------------------------------------------- callbacks
def test_value_candidates():
    assert [w for w, _ in comp.complete_device("")] == ["auto", "cpu", "cuda", "mps"]
    assert [w for w, _ in comp.complete_device("c")] == ["cpu", "cuda"]
    assert [w for w, _ in comp.complete_dtype("")] == list(st.DTYPES)
    assert [w for w, _ in comp.complete_dtype("b")] == ["bfloat16"]
    assert all(help_ for _, help_ in comp.complete_device("") + comp.complete_dtype(""))
    assert [w for w, _ in comp.complete_setting_key("top_")] == ["top_k", "top_p"]


def test_paths_beside_keywords(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo-run").mkdir()
    (tmp_path / "demo.gguf").write_bytes(b"")
    (tmp_path / ".hidden").write_bytes(b"")
    (tmp_path / "other.pt").write_bytes(b"")
    assert [w for w, _ in comp.complete_model("")] == ["demo", "demo-run/", "demo.gguf", "other.pt"]
    assert [w for w, _ in comp.complete_model("de")] == ["demo", "demo-run/", "demo.gguf"]
    # no keyword matches: nothing, so the shell completes file names itself (directories, ~, quoting)
    assert comp.complete_model("oth") == [] and comp.complete_model("./") == []
    assert [w for w, _ in comp.complete_chat_template("")][:2] == ["auto", "none"]
    assert [w for w, _ in comp.complete_chat_template("no")] == ["none"]
    sub = tmp_path / "demo-run"
    (sub / "model.pt").write_bytes(b"")
    monkeypatch.chdir(sub)
    assert comp._listing("../d") == [("../demo-run/", ""), ("../demo.gguf", "")]
    assert comp._listing("../.h") == [("../.hidden", "")]
    assert comp._listing("/no/such/dir/x") == []


def test_profiles_from_the_settings_file(home, monkeypatch):
    monkeypatch.setenv("LLMBUILDER_HOME", str(home))
    assert comp.complete_profile("") == []  # no file yet
    write_profiles(home)
    got = dict(comp.complete_profile(""))
    assert list(got) == ["stories", "code"]
    assert got["stories"].startswith("default profile") and "temperature" in got["stories"]
    assert [w for w, _ in comp.complete_profile("c")] == ["code"]
    (home / "settings.toml").write_text("[profiles.x\n", encoding="utf-8")  # damaged: no error on Tab
    assert comp.complete_profile("") == []


# ------------------------------------------------------------------------------------ program round trip
@pytest.mark.slow
def test_bash_requests(home, tmp_path):
    write_profiles(home)
    assert {"generate", "info", "config", "export", "setup", "doctor"} <= set(bash_request(["llmbuilder", ""], home))
    assert bash_request(["llmbuilder", "generate", "text", "--dev"], home) == ["--device"]
    assert bash_request(["llmbuilder", "generate", "text", "--device", ""], home) == ["auto", "cpu", "cuda", "mps"]
    assert bash_request(["llmbuilder", "generate", "text", "--dtype", "f"], home) == ["float32", "float16"]
    assert bash_request(["llmbuilder", "generate", "text", "--profile", ""], home) == ["stories", "code"]
    assert bash_request(["llmbuilder", "config", "show", "-P", "s"], home) == ["stories"]
    assert bash_request(["llmbuilder", "config", "use", ""], home) == ["stories", "code"]
    assert bash_request(["llmbuilder", "setup", "--profile", "co"], home) == ["code"]
    assert bash_request(["llmbuilder", "config", "set", "dtype", "bf"], home) == ["bfloat16"]
    assert bash_request(["llmbuilder", "config", "set", "ignore-eos", ""], home) == ["true", "false"]
    assert bash_request(["llmbuilder", "export", "hf", "demo", "--dtype", ""], home) == ["float32", "float16", "bfloat16"]
    assert bash_request(["llmbuilder", "doctor", "--device", "m"], home) == ["mps"]
    (tmp_path / "runs").mkdir()
    assert bash_request(["llmbuilder", "info", ""], home, cwd=tmp_path) == ["demo", "home/", "runs/"]
    assert bash_request(["llmbuilder", "generate", "text", "-m", "ru"], home, cwd=tmp_path) == []  # → the shell's files
    assert bash_request(["llmbuilder", "generate", "text", "--chat-template", "n"], home) == ["none"]


def test_a_completion_request_imports_no_torch(home):
    probe = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: sys.stderr.write(json.dumps(sorted(sys.modules))))\n"
        "from llmbuilder_cli.cli.app import main\n"
        "main()\n"
    )
    env = env_for(home, _LLMBUILDER_COMPLETE="complete_bash", COMP_WORDS="llmbuilder generate text --dtype ",
                  COMP_CWORD="4")
    write_profiles(home)
    for words, cword in (("llmbuilder generate text --dtype ", "4"), ("llmbuilder generate text --profile ", "4"),
                         ("llmbuilder generate text -m ", "4"), ("llmbuilder ", "1")):
        env.update(COMP_WORDS=words, COMP_CWORD=cword)
        p = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        mods = {m.split(".")[0] for m in json.loads(p.stderr)}
        assert "typer" in mods and not mods & set(HEAVY), (words, mods & set(HEAVY))
        assert p.stdout.strip(), words


def test_zsh_and_fish_requests(home):
    env = env_for(home, _LLMBUILDER_COMPLETE="complete_zsh", _TYPER_COMPLETE_ARGS="llmbuilder generate text --device ")
    p = subprocess.run([sys.executable, "-m", "llmbuilder_cli"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and '"auto":"CUDA, else MPS, else CPU"' in p.stdout and '"mps":' in p.stdout
    env.update(_TYPER_COMPLETE_ARGS="llmbuilder generate text -m ./")  # no candidates → zsh's own file completion
    p = subprocess.run([sys.executable, "-m", "llmbuilder_cli"], env=env, capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "_files"
    env.update(_LLMBUILDER_COMPLETE="complete_fish", _TYPER_COMPLETE_FISH_ACTION="get-args",
               _TYPER_COMPLETE_ARGS="llmbuilder generate text --dtype b")
    p = subprocess.run([sys.executable, "-m", "llmbuilder_cli"], env=env, capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "bfloat16\thalf the memory, float32's range"
    env.update(_TYPER_COMPLETE_FISH_ACTION="is-args", _TYPER_COMPLETE_ARGS="llmbuilder generate text -m ./")
    p = subprocess.run([sys.executable, "-m", "llmbuilder_cli"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1  # fish: "no program candidates, complete files"


# ------------------------------------------------------------------------------------------ real shells
@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_bash_completes_through_the_shipped_script(home, tmp_path):
    write_profiles(home)
    env = env_for(home)
    env["PATH"] = str(wrapper_bin(tmp_path)) + os.pathsep + env["PATH"]
    script = ROOT / "completions" / "bash" / "llmbuilder"

    def complete(words: str, cword: int) -> list[str]:
        code = (f"source '{script}'\n"
                f"COMP_WORDS=({words}); COMP_CWORD={cword}\n"
                "_llmbuilder_completion llmbuilder\n"
                "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
                "complete -p llmbuilder\n")
        p = subprocess.run(["bash", "--norc", "--noprofile", "-c", code], env=env, capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stderr
        lines = p.stdout.splitlines()
        assert lines[-1] == "complete -o default -F _llmbuilder_completion llmbuilder"  # -o default: files
        return [line for line in lines[:-1] if line]

    assert complete("llmbuilder generate text --device ''", 4) == ["auto", "cpu", "cuda", "mps"]
    assert complete("llmbuilder generate text --profile st", 4) == ["stories"]
    assert complete("llmbuilder gen", 1) == ["generate"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_bash_completes_the_second_name_even_when_llmbuilder_is_another_program(home, tmp_path):
    """llmbuilder 2.0.0 may own `llmbuilder`: `llmbuilder-cli` completes through its own script, which asks
    `llmbuilder-cli`, never the other program."""
    env = env_for(home)
    bin_dir = wrapper_bin(tmp_path)
    (bin_dir / "llmbuilder").write_text("#!/bin/sh\necho not-this-tool\n", encoding="utf-8")  # the other one
    second = bin_dir / "llmbuilder-cli"
    second.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m llmbuilder_cli "$@"\n', encoding="utf-8")
    second.chmod(0o755)
    env["PATH"] = str(bin_dir) + os.pathsep + env["PATH"]
    code = (f"source '{ROOT / 'completions' / 'bash' / 'llmbuilder-cli'}'\n"
            "COMP_WORDS=(llmbuilder-cli generate text --device ''); COMP_CWORD=4\n"
            "_llmbuilder_cli_completion llmbuilder-cli\n"
            "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
            "complete -p llmbuilder-cli\n")
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", code], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["auto", "cpu", "cuda", "mps",
                                     "complete -o default -F _llmbuilder_cli_completion llmbuilder-cli"]


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish not installed")
def test_fish_completes_through_the_shipped_script(home, tmp_path):
    write_profiles(home)
    env = env_for(home)
    env["PATH"] = str(wrapper_bin(tmp_path)) + os.pathsep + env["PATH"]
    (tmp_path / "model.gguf").write_bytes(b"")
    code = (f"source '{ROOT / 'completions' / 'fish' / 'llmbuilder.fish'}'\n"
            "complete -C 'llmbuilder generate text --device '\n"
            "echo ---\n"
            "complete -C 'llmbuilder generate text --profile '\n"
            "echo ---\n"
            "complete -C 'llmbuilder generate text -m mod'\n")
    p = subprocess.run(["fish", "--no-config", "-c", code], env=env, capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    devices, profiles, files = p.stdout.split("---\n")
    assert sorted(line.split("\t")[0] for line in devices.splitlines()) == ["auto", "cpu", "cuda", "mps"]
    assert sorted(line.split("\t")[0] for line in profiles.splitlines()) == ["code", "stories"]
    assert files.split() == ["model.gguf"]  # the shell's own file completion


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh not installed")
def test_zsh_completes_on_the_first_tab_from_fpath(home, tmp_path):
    from conftest import spawn_pty

    env = env_for(home, PS1="%% ", TERM="dumb")
    env["PATH"] = str(wrapper_bin(tmp_path)) + os.pathsep + env["PATH"]
    child = spawn_pty("zsh", ["-f", "-i"], env=env, encoding="utf-8", timeout=30, dimensions=(40, 200))
    try:
        child.sendline(f"fpath=('{ROOT / 'completions' / 'zsh'}' $fpath); autoload -Uz compinit; "
                       f"compinit -u -d '{tmp_path / 'zcompdump'}'; echo READY")
        child.expect("READY\r\n")
        for words, want in (("llmbuilder generate text --device ", "CUDA, else MPS, else CPU"),  # the first Tab
                            ("llmbuilder generate text --dtype ", "full precision")):  # and later ones
            child.send(words + "\t")
            child.expect(want)
            child.sendcontrol("c")
            time.sleep(0.3)
        child.sendline("exit")
    finally:
        child.close(force=True)


# -------------------------------------------------------------------------------------------- install
@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_install_completion_detects_bash_and_installs_the_script(tmp_path, home):
    """``llmbuilder --install-completion`` as a user types it, from a bash (Typer detects the shell)."""
    fake_home = tmp_path / "user"
    fake_home.mkdir()
    env = env_for(home, HOME=str(fake_home))
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", f"'{sys.executable}' -m llmbuilder_cli --install-completion; true"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert "bash completion installed" in p.stdout, p.stdout + p.stderr
    installed = fake_home / ".bash_completions" / "llmbuilder.sh"
    assert installed.read_text(encoding="utf-8").strip() in (ROOT / "completions" / "bash" / "llmbuilder").read_text()
    assert f"source '{installed}'" in (fake_home / ".bashrc").read_text(encoding="utf-8")


def test_help_lists_the_completion_options_and_stays_quick():
    env = cli_env()
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "llmbuilder_cli", "--help"], env=env, capture_output=True, text=True,
                       timeout=60)
    elapsed = time.perf_counter() - t0
    assert p.returncode == 0 and "--install-completion" in p.stdout and "--show-completion" in p.stdout
    assert "doctor" in p.stdout
    print(f"--help took {elapsed:.2f} s")
