"""Hostile paths, files and outputs at the command line: each ends in one ``Error:`` line with its
documented exit code, in bounded time, with the user's files intact.

* ``export hf --force`` replaces only a previous export (it holds ``llmbuilder_export.json``): never the
  source run directory, its parent, its tokenizer/ or checkpoints/, a link to one of them, or a previous
  export someone added files to. A real previous export is replaced. Exports get the umask's
  permissions; a killed export's hidden temporary directory is removed by the next export.
* Writing fails: stdout on ``/dev/full`` (the real device), a file-size limit (``RLIMIT_FSIZE``: the
  kernel refuses the write, as on a full disk; it works as root, where chmod does not), a small tmpfs
  when this machine lets the test mount one, a directory the system refuses (``/sys`` refuses even
  root; other users get a chmod 0555 directory), a file where a directory is expected.
* Reading is bounded: ``/dev/zero`` as a prompts file, as stdin or as a chat template.
* ``~nouser/...`` paths, a FIFO or a symlinked settings file, batch lines that fail up front (with their
  line number) or while running (an error object, the others still run, exit 4).

The last test runs a few dozen vectors of ``scripts/fuzz_cli_args.py`` (slow-marked).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FIXTURE, MODEL_PT, TOKENIZER_DIR, cli_cmd, cli_env
from llmbuilder_cli.cli.app import main
MARKER = "llmbuilder_export.json"  # the file that marks a directory as a previous export

ROOT = Path(__file__).resolve().parents[1]
GEN = ["generate", "text", "-m", str(MODEL_PT), "-t", str(TOKENIZER_DIR), "--greedy", "--max-tokens", "3"]
TIMEOUT = 120  # generous: only catches a hang


def run(*args: str, stdin=None, stdout=subprocess.PIPE, env: dict | None = None, preexec_fn=None,
        timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """The real console command in a subprocess; text output; asserts it never prints a traceback."""
    p = subprocess.run(cli_cmd(*args), stdin=stdin if not isinstance(stdin, bytes) else None,
                       input=stdin if isinstance(stdin, bytes) else None, stdout=stdout, stderr=subprocess.PIPE,
                       env=env or cli_env(), timeout=timeout, preexec_fn=preexec_fn)
    p.stdout = (p.stdout or b"").decode("utf-8", "replace")
    p.stderr = p.stderr.decode("utf-8", "replace")
    assert "Traceback" not in p.stderr and "this is a bug" not in p.stderr, p.stderr
    assert "Exception ignored" not in p.stderr, p.stderr
    return p


def one_error(p_or_err, code: int, *fragments: str, rc: int | None = None) -> str:
    """The single ``Error:`` line of a failed run (a CompletedProcess or captured stderr + rc)."""
    if isinstance(p_or_err, subprocess.CompletedProcess):
        err, rc = p_or_err.stderr, p_or_err.returncode
    else:
        err = p_or_err
    assert rc == code, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    assert "Traceback" not in err and "this is a bug" not in err
    return lines[0]


def in_process(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "this is a bug" not in err, err
    return rc, out, err


def snapshot(d: Path) -> dict[str, str]:
    """Every entry under ``d`` (hidden ones too): files by content hash, directories and links by kind."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d).as_posix()
        if p.is_symlink():
            out[rel] = "link -> " + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def project(tmp_path) -> Path:
    """proj/run (model.pt, tokenizer/, checkpoints/, notes) beside unrelated files in proj."""
    proj = tmp_path / "proj"
    shutil.copytree(FIXTURE, proj / "run")
    (proj / "run" / "notes.txt").write_text("my notes\n")
    (proj / "sibling.txt").write_text("unrelated\n")
    (proj / "other").mkdir()
    (proj / "other" / "data.bin").write_bytes(b"\x00\x01")
    return proj


# ------------------------------------------------------------------------------------- export --force
@pytest.mark.parametrize("target", ["run", ".", "run/tokenizer", "run/checkpoints", "link-to-run"])
def test_force_never_replaces_the_source_or_unrelated_files(project, target, capsys):
    (project / "link-to-run").symlink_to(project / "run")
    before = snapshot(project)
    rc, out, err = in_process(["export", "hf", str(project / "run" / "model.pt"), "-o", str(project / target),
                               "--force"], capsys)
    one_error(err, 2, "is not a previous export, so --force does not replace it", "llmbuilder_export.json", rc=rc)
    assert out == ""
    assert snapshot(project) == before  # the model, tokenizer/, checkpoints/, siblings: all there, no temporaries
    assert (project / "run" / "model.pt").read_bytes() == MODEL_PT.read_bytes()


def test_force_replaces_a_real_previous_export(project, capsys):
    out_dir = project / "hf"
    rc, _, err = in_process(["export", "hf", str(project / "run"), "-o", str(out_dir)], capsys)
    assert rc == 0, err
    assert json.loads((out_dir / "config.json").read_text())["torch_dtype"] == "float32"
    others = {k: v for k, v in snapshot(project).items() if not k.startswith("hf")}
    rc, _, err = in_process(["export", "hf", str(project / "run"), "-o", str(out_dir), "--force", "--dtype",
                             "float16"], capsys)
    assert rc == 0, err
    assert json.loads((out_dir / "config.json").read_text())["torch_dtype"] == "float16"
    assert json.loads((out_dir / MARKER).read_text())["dtype"] == "float16"
    assert {k: v for k, v in snapshot(project).items() if not k.startswith("hf")} == others  # nothing else touched
    # Without --force the export is refused, and a file added by hand makes it no longer "only an export".
    rc, _, err = in_process(["export", "hf", str(project / "run"), "-o", str(out_dir)], capsys)
    one_error(err, 2, "already exists and is not empty", "--force", rc=rc)
    (out_dir / "README.md").write_text("model card\n")
    before = snapshot(project)
    rc, _, err = in_process(["export", "hf", str(project / "run"), "-o", str(out_dir), "--force"], capsys)
    one_error(err, 2, "not a previous export", "README.md", rc=rc)
    assert snapshot(project) == before


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_export_files_get_the_umask_permissions(tmp_path, mask, capsys):
    old = os.umask(mask)
    try:
        rc, _, err = in_process(["export", "hf", str(MODEL_PT), "-o", str(tmp_path / "hf")], capsys)
    finally:
        os.umask(old)
    assert rc == 0, err
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "hf").iterdir()}
    assert "model.safetensors" in modes
    assert set(modes.values()) == {0o666 & ~mask}, {k: oct(v) for k, v in modes.items()}
    assert stat.S_IMODE((tmp_path / "hf").stat().st_mode) == 0o777 & ~mask


_SLOW_EXPORT = """
import sys, time, safetensors.torch
real = safetensors.torch.save_file
def slow(tensors, path, metadata=None):
    real(tensors, path, metadata=metadata)
    print("WRITTEN", flush=True)
    time.sleep(600)
safetensors.torch.save_file = slow
from llmbuilder_cli.cli.app import main
sys.exit(main(["export", "hf", sys.argv[1], "-o", sys.argv[2]]))
"""


def test_a_killed_exports_temporary_directory_is_removed_by_the_next_export(tmp_path):
    out_dir = tmp_path / "hf"
    p = subprocess.Popen([sys.executable, "-c", _SLOW_EXPORT, str(MODEL_PT), str(out_dir)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=cli_env())
    try:
        assert p.stdout.readline().strip() == b"WRITTEN", p.stderr.read()
    finally:
        p.kill()  # SIGKILL: no handler, no clean-up
        p.wait(timeout=TIMEOUT)
    left = [e for e in tmp_path.iterdir() if e.name.startswith(".hf.tmp-")]
    assert len(left) == 1 and (left[0] / "model.safetensors").is_file() and (left[0] / MARKER).is_file()
    # A temporary directory of a running export, and a look-alike that is not an export, are left alone.
    alive = tmp_path / f".hf.tmp-{os.getpid()}-0123abcd"
    alive.mkdir()
    (alive / MARKER).write_text("{}")
    lookalike = tmp_path / ".mine.tmp-999999-0123abcd"
    lookalike.mkdir()
    (lookalike / "precious.txt").write_text("keep")
    assert main(["export", "hf", str(MODEL_PT), "-o", str(tmp_path / "other")]) == 0
    assert not left[0].exists()
    assert alive.is_dir() and (lookalike / "precious.txt").read_text() == "keep"
    assert not out_dir.exists()


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_export_when_the_kernel_refuses_the_write(tmp_path):
    p = run("export", "hf", str(MODEL_PT), "-o", str(tmp_path / "hf"), preexec_fn=_file_size_limit(64 << 10))
    one_error(p, 2, f"cannot write the export to {tmp_path / 'hf'}: File too large", "check free space")
    assert sorted(e.name for e in tmp_path.iterdir()) == []  # no export, no temporary directory


def test_export_to_a_full_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (the file-size-limit test covers a refused write)")
    try:
        p = run("export", "hf", str(MODEL_PT), "-o", str(mnt / "hf"))
        one_error(p, 2, "No space left on device")
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_export_where_writing_is_refused(tmp_path, capsys):
    if os.geteuid() == 0:  # root ignores chmod: use a directory the kernel refuses even to root
        if not Path("/sys").is_dir():
            pytest.skip("no /sys on this system")
        target = Path("/sys") / "llmbuilder-export-test"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        target = ro / "hf"
    rc, out, err = in_process(["export", "hf", str(MODEL_PT), "-o", str(target)], capsys)
    line = one_error(err, 2, f"cannot write the export to {target}: ", rc=rc)
    assert "Permission denied" in line or "Operation not permitted" in line, line
    (tmp_path / "afile").write_text("x")
    rc, out, err = in_process(["export", "hf", str(MODEL_PT), "-o", str(tmp_path / "afile" / "hf")], capsys)
    one_error(err, 2, "cannot", "afile", rc=rc)
    rc, out, err = in_process(["export", "hf", str(MODEL_PT), "-o", "/dev/full"], capsys)
    one_error(err, 2, "/dev/full exists and is not a directory", rc=rc)


def test_export_disk_full_in_process(tmp_path, monkeypatch, capsys):
    """ENOSPC as safetensors reports it (its own error class, not an OSError)."""
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    rc, out, err = in_process(["export", "hf", str(MODEL_PT), "-o", str(tmp_path / "hf")], capsys)
    one_error(err, 2, "cannot write the export", "No space left on device", rc=rc)
    assert list(tmp_path.iterdir()) == []


def test_export_from_and_to_paths_that_are_not_utf8(tmp_path, capsys):
    """Such names reach Python as surrogate escapes; sentencepiece could not open them by name."""
    run_dir = tmp_path / "run\udcff"
    shutil.copytree(FIXTURE, run_dir)
    rc, out, err = in_process(["export", "hf", str(run_dir), "-o", str(tmp_path / "hf\udcff")], capsys)
    assert rc == 0, err
    assert (tmp_path / "hf\udcff" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "hf\udcff" / MARKER).read_text())["source"] == str(run_dir / "model.pt")


def test_paths_that_are_not_utf8_on_a_strict_stdout(tmp_path):
    run_dir = tmp_path / "run\udcff"
    shutil.copytree(FIXTURE, run_dir)
    env = {**cli_env(), "PYTHONIOENCODING": "utf-8:strict", "LLMBUILDER_HOME": os.fsencode(tmp_path / "home\udcff")}
    for argv in (["config", "path"], ["config", "show"], ["config", "show", "--json"]):
        p = subprocess.run(cli_cmd(*argv), capture_output=True, env=env, timeout=TIMEOUT)
        assert p.returncode == 0 and b"Traceback" not in p.stderr and b"bug" not in p.stderr, p.stderr
        assert b"home\\udcff" in p.stdout, p.stdout
    for extra, check in (([], lambda out: f"{tmp_path}/run\\udcff/model.pt" in out.decode()),
                         (["--json"], lambda out: json.loads(out)["path"] == str(run_dir / "model.pt"))):
        p = subprocess.run(cli_cmd("info", os.fsencode(run_dir / "model.pt"), *extra), capture_output=True,
                           env={**cli_env(), "PYTHONIOENCODING": "utf-8:strict"}, timeout=TIMEOUT)
        assert p.returncode == 0 and b"Traceback" not in p.stderr, p.stderr
        assert check(p.stdout), p.stdout


# ------------------------------------------------------------------------------------------- ~user paths
@pytest.mark.parametrize("argv", [
    ["generate", "text", "-m", "~nouser-llmb/run/model.pt", "-p", "x"],
    ["generate", "text", "-m", str(MODEL_PT), "-t", "~nouser-llmb/tok", "-p", "x"],
    [*GEN, "--jsonl", "--prompts-file", "~nouser-llmb/prompts.txt"],
    [*GEN, "--chat", "--chat-template", "~nouser-llmb/t.jinja", "-p", "x"],
    ["export", "hf", str(MODEL_PT), "-o", "~nouser-llmb/hf"],
    ["info", "~nouser-llmb/model.pt"],
    ["config", "set", "model", "~nouser-llmb/model.pt"],
])
def test_tilde_of_an_unknown_user(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, out, err = in_process(argv, capsys)
    one_error(err, 2, "there is no user 'nouser-llmb'", rc=rc)
    assert out == "" and list(tmp_path.iterdir()) == []  # no directory named '~nouser-llmb' either


def test_llmbuilder_home_with_an_unknown_user(monkeypatch, capsys):
    monkeypatch.setenv("LLMBUILDER_HOME", "~nouser-llmb/settings")
    rc, out, err = in_process([*GEN, "-p", "x"], capsys)
    one_error(err, 2, "there is no user 'nouser-llmb'", rc=rc)


# ---------------------------------------------------------------------------------------- bounded reads
def test_dev_zero_as_every_input_is_bounded():
    t0 = time.monotonic()
    one_error(run(*GEN, "--jsonl", "--prompts-file", "/dev/zero"), 2, "prompts file /dev/zero is larger than 64 MiB")
    with open("/dev/zero", "rb") as zero:
        one_error(run(*GEN, stdin=zero), 2, "standard input is larger than 64 MiB")
        one_error(run(*GEN, "--jsonl", "--prompts-file", "-", stdin=zero), 2, "standard input is larger than 64 MiB")
    one_error(run(*GEN, "--chat", "--chat-template", "/dev/zero", "-p", "x"), 2,
              "chat template /dev/zero is larger than 64 MiB")
    assert time.monotonic() - t0 < 4 * TIMEOUT


def test_a_directory_as_an_input_file(tmp_path, capsys):
    rc, out, err = in_process([*GEN, "--jsonl", "--prompts-file", str(tmp_path)], capsys)
    one_error(err, 2, f"prompts file {tmp_path} is a directory", rc=rc)
    rc, out, err = in_process([*GEN, "--chat", "--chat-template", str(tmp_path), "-p", "x"], capsys)
    one_error(err, 2, f"chat template {tmp_path} is a directory", rc=rc)


# ---------------------------------------------------------------------------------------- full output
FULL_OUTPUT = "Error: cannot write the output: No space left on device — free some space, or send the output elsewhere"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
@pytest.mark.parametrize("argv", [
    ["--version"],
    [*GEN, "-p", "hello"],
    [*GEN, "-p", "hello", "--json"],
    ["config", "show"],
    ["info", str(MODEL_PT)],
    ["export", "--help"],
])
def test_stdout_on_dev_full(argv):
    with open("/dev/full", "w") as full:
        p = run(*argv, stdout=full)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1] == FULL_OUTPUT, p.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_batch_stdout_on_dev_full(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("one\ntwo\n")
    with open("/dev/full", "w") as full:
        p = run(*GEN, "--jsonl", "--prompts-file", str(f), stdout=full)
    one_error(p, 2, "cannot write the output: No space left on device")


class FullStream:
    """A text stream whose every write fails as a full disk does (for the in-process check)."""

    encoding = "utf-8"

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError(9, "no file descriptor")


def test_enospc_on_stdout_in_process(monkeypatch, capsys):
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", FullStream())
    rc = main([*GEN, "-p", "hello", "--json"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == FULL_OUTPUT, err


# ---------------------------------------------------------------------------------------------- batch
def _batch(tmp_path: Path, text: str, *extra: str) -> subprocess.CompletedProcess:
    f = tmp_path / "prompts.jsonl"
    f.write_text(text, encoding="utf-8")
    return run(*GEN, "--jsonl", "--prompts-file", str(f), *extra)


def test_a_line_that_fails_while_running_does_not_stop_the_batch(tmp_path):
    p = _batch(tmp_path, '{"prompt": "once upon"}\n{"id": "blank", "prompt": "   "}\nthe fox\n', "--ordered")
    assert p.returncode == 4, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3]
    assert rows[0]["text"] and rows[2]["text"] and "error" not in rows[0] and "error" not in rows[2]
    assert rows[1] == {"index": 1, "line": 2, "id": "blank", "prompt": "   ",
                       "error": {"message": "prompts file line 2: the prompt is empty",
                                 "hint": "give some text for the model to continue", "exit_code": 2}}
    err = p.stderr.strip().splitlines()
    assert err[0] == "Error: prompts file line 2: the prompt is empty — give some text for the model to continue"
    assert err[1].startswith("[3 prompts · 1 failed (line 2) · ")


@pytest.mark.parametrize("line, fragment", [
    ('{"prompt": "x", "id": "\\ud800"}', '"id" holds a lone surrogate'),
    ('{"prompt": "x", "stop": ["ok", "\\udfff"]}', '"stop" holds a lone surrogate'),
    ('{"prompt": "x\\ud83d"}', '"prompt" holds a lone surrogate'),
    ('{"prompt": "x", "seed": ' + "9" * 5000 + "}", "invalid JSON (Exceeds the limit"),
    ('{"prompt": ' + "[" * 50000, "invalid JSON (nested too deeply)"),
    ('{"prompt": "x", "id": NaN}', "the id holds NaN"),
    ('{"prompt": "x", "stop": {"a": 1}}', '"stop" must be a string or a list of strings'),
    ('{"prompt": "x", "temperature": "hot"}', "temperature must be"),
])
def test_every_line_is_checked_before_the_first_generation(tmp_path, line, fragment):
    p = _batch(tmp_path, f'{{"prompt": "first"}}\nsecond\n{line}\n')
    one_error(p, 2, "prompts file line 3: ", fragment)
    assert p.stdout == ""


# ---------------------------------------------------------------------------------------- settings file
def test_config_set_writes_through_a_symlinked_settings_file(tmp_path, monkeypatch):
    home, dotfiles = tmp_path / "home", tmp_path / "dotfiles"
    home.mkdir()
    dotfiles.mkdir()
    (dotfiles / "settings.toml").write_text("# kept in my dotfiles\n[profiles.default]\ntop_k = 7\n")
    (dotfiles / "settings.toml").chmod(0o640)
    (home / "settings.toml").symlink_to(dotfiles / "settings.toml")
    monkeypatch.setenv("LLMBUILDER_HOME", str(home))
    assert main(["config", "set", "temperature", "0.5"]) == 0
    assert (home / "settings.toml").is_symlink()
    assert os.readlink(home / "settings.toml") == str(dotfiles / "settings.toml")
    text = (dotfiles / "settings.toml").read_text()
    assert "# kept in my dotfiles" in text and "temperature = 0.5" in text and "top_k = 7" in text
    assert stat.S_IMODE((dotfiles / "settings.toml").stat().st_mode) == 0o640
    assert sorted(p.name for p in dotfiles.iterdir()) == ["settings.toml"]  # no temporary left beside it


@pytest.mark.parametrize("argv", [[*GEN, "-p", "hello"], ["config", "show"], ["config", "set", "top_k", "3"]])
def test_a_fifo_settings_file_is_refused_not_waited_on(tmp_path, argv):
    home = tmp_path / "home"
    home.mkdir()
    os.mkfifo(home / "settings.toml")
    p = run(*argv, env={**cli_env(), "LLMBUILDER_HOME": str(home)}, timeout=60)
    one_error(p, 2, "settings.toml is not a regular file")
    assert stat.S_ISFIFO(os.lstat(home / "settings.toml").st_mode)


# --------------------------------------------------------------------------------------------- fuzzing
@pytest.mark.slow
def test_fuzzed_argument_vectors(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import fuzz_cli_args
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    counts = fuzz_cli_args.fuzz(count=40, seed=20, workdir=tmp_path)
    assert counts["run"] == 40
    assert counts["traceback"] == 0 and counts["bug"] == 0, counts["examples"]
