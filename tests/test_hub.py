"""Models by name: ``-m ORG/NAME`` from the local Hugging Face cache, ``llmbuilder pull``, ``list``, ``rm``.

Every download goes to a local stand-in for the hub (tests/fake_hub.py, through ``HF_ENDPOINT``) and into a
cache under tmp_path (``HF_HOME``); nothing touches the internet. The model served is the llmbuilder test
fixture exported to the Hugging Face layout by ``llmbuilder export hf``, so what runs by name can be compared
token for token with the same files run by path.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
from pathlib import Path

import pytest

from conftest import MODEL_PT, cli_cmd, cli_env, spawn_pty
from fake_hub import FakeHub, Repo

from llmbuilder_cli.hub import ModelName, gguf_architecture, parse_name

#: What a pull of the exported fixture fetches: config, generation defaults, tokenizer, weights.
NEEDED = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json", "model.safetensors"]
PROMPT = "Once upon a time"


def run(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cli_cmd(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The fixture model as a Hugging Face directory."""
    out = tmp_path_factory.mktemp("export") / "tiny"
    r = run("export", "hf", str(MODEL_PT), "--out", str(out), env=cli_env())
    assert r.returncode == 0, r.stderr
    return out


def gguf_bytes(arch: str, size: int) -> bytes:
    """A GGUF header whose first key is general.architecture, padded with a byte pattern to ``size``."""
    key, val = b"general.architecture", arch.encode()
    head = (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key + struct.pack("<I", 8)
            + struct.pack("<Q", len(val)) + val)
    pattern = bytes(range(256))
    return head + (pattern * (size // 256 + 1))[: size - len(head)]


@pytest.fixture
def hub(exported):
    files = {p.name: p.read_bytes() for p in exported.iterdir()}
    files["README.md"] = b"# tiny\n"
    files["pytorch_model.bin"] = b"not needed"
    ggufs = {"tiny-Q4_K_M.gguf": gguf_bytes("llama", 3000), "tiny-Q8_0.gguf": gguf_bytes("llama", 5000),
             "README.md": b"# ggufs\n"}
    h = FakeHub(repos={
        "acme/tiny": Repo(files),
        "acme/tiny-gguf": Repo(ggufs, commit="b" * 40),
        "acme/big-gguf": Repo({"big.gguf": gguf_bytes("qwen2", 24 << 20)}, commit="c" * 40),
        "acme/gated": Repo(files, commit="d" * 40, gated=True),
        "acme/private": Repo(files, commit="e" * 40, token="secret"),
    }).start()
    yield h
    h.stop()


@pytest.fixture
def env(tmp_path, hub) -> dict[str, str]:
    e = cli_env()
    for k in [k for k in e if k.startswith(("HF_", "HUGGINGFACE_"))]:
        del e[k]
    e.update(HF_HOME=str(tmp_path / "hf-home"), HF_ENDPOINT=hub.url, HF_HUB_DISABLE_TELEMETRY="1")
    return e


def blobs(env: dict[str, str], repo: str) -> Path:
    return Path(env["HF_HOME"]) / "hub" / ("models--" + repo.replace("/", "--")) / "blobs"


def greedy_json(model: str, env: dict[str, str], cwd: Path | None = None) -> dict:
    r = run("generate", "text", "-m", model, "-p", PROMPT, "--greedy", "--max-tokens", "12", "--json", env=env,
            cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# --------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("text, name", [
    ("acme/tiny", ModelName("acme/tiny")),
    ("HuggingFaceTB/SmolLM2-135M", ModelName("HuggingFaceTB/SmolLM2-135M")),
    ("acme/tiny-gguf:tiny-Q8_0.gguf", ModelName("acme/tiny-gguf", "tiny-Q8_0.gguf")),
    ("acme/tiny-gguf:Q4_K_M", ModelName("acme/tiny-gguf", "Q4_K_M")),
    ("./acme/tiny", None), ("/acme/tiny", None), ("~/tiny", None), ("acme/tiny/model.pt", None),
    ("run/model.pt", None), ("out/tiny.gguf", None), ("acme/tiny.v2", ModelName("acme/tiny.v2")), ("acme", None), ("acme/../x", None), (".acme/x", None),
    ("acme/x:../../etc", None), ("demo", None), ("acme\\tiny", None),
])
def test_what_is_a_name(text, name):
    assert parse_name(text) == name


def test_a_path_is_never_a_name():
    assert parse_name(Path("acme/tiny")) is None


def test_gguf_architecture_from_the_header(tmp_path):
    (tmp_path / "m.gguf").write_bytes(gguf_bytes("qwen2", 1000))
    assert gguf_architecture(tmp_path / "m.gguf") == "qwen2"
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03")
    assert gguf_architecture(tmp_path / "bad.gguf") is None


# --------------------------------------------------------------------------------------- pull and run
def test_pull_fetches_what_generation_needs_and_runs_by_name_like_by_path(hub, env, exported, tmp_path):
    r = run("pull", "acme/tiny", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        "acme/tiny: 6 files, 913.2 KiB",
        "Downloaded 6 files (913.2 KiB) of acme/tiny.",
        'Run it: llmbuilder generate text -m acme/tiny -p "..."',
    ]
    fetched = sorted(p.rsplit("/", 1)[1] for m, p, _ in hub.log if m == "GET" and "/resolve/" in p)
    assert fetched == sorted(NEEDED)  # not README.md, pytorch_model.bin or llmbuilder_export.json
    snap = Path(env["HF_HOME"]) / "hub" / "models--acme--tiny" / "snapshots" / ("a" * 40)
    assert sorted(p.name for p in snap.iterdir()) == sorted(NEEDED)
    for f in NEEDED:
        assert (snap / f).read_bytes() == (exported / f).read_bytes()

    hub.stop()  # from here on nothing may need the network
    by_name = greedy_json("acme/tiny", env)
    by_path = greedy_json(str(exported), env)
    assert by_name["token_ids"] == by_path["token_ids"] and len(by_name["token_ids"]) == 12
    assert by_name["text"] == by_path["text"]
    assert greedy_json("acme/tiny", {**env, "HF_HUB_OFFLINE": "1"})["token_ids"] == by_path["token_ids"]

    again = run("pull", "acme/tiny", env={**env, "HF_HUB_OFFLINE": "1"})
    assert again.returncode == 0, again.stderr
    assert again.stderr.splitlines()[0] == "acme/tiny is already downloaded."

    info = run("info", "acme/tiny", "--json", env=env)
    assert info.returncode == 0, info.stderr
    d = json.loads(info.stdout)
    assert d["name"] == "acme/tiny" and d["path"] == str(snap) and d["format"] == "Hugging Face safetensors"
    lines = run("info", "acme/tiny", env=env).stdout.splitlines()
    assert lines[0] == "Model         acme/tiny (Hugging Face cache)"


def test_a_second_pull_downloads_nothing(hub, env):
    assert run("pull", "acme/tiny", env=env).returncode == 0
    hub.log.clear()
    r = run("pull", "acme/tiny", env=env)
    assert r.returncode == 0, r.stderr
    assert "acme/tiny is already downloaded." in r.stderr.splitlines()
    assert [p for m, p, _ in hub.log if m == "GET" and "/resolve/" in p] == []


def test_a_name_not_downloaded_says_which_pull_fetches_it_and_downloads_nothing(hub, env):
    r = run("generate", "text", "-m", "acme/tiny", "-p", PROMPT, env=env)
    assert r.returncode == 3
    cache = Path(env["HF_HOME"]) / "hub"
    assert r.stderr == (f"Error: acme/tiny is not in the local Hugging Face cache ({cache}) — download it with: "
                        "llmbuilder pull acme/tiny (a local directory of that name: write ./acme/tiny)\n")
    assert hub.log == []
    r = run("info", "acme/tiny-gguf:Q8_0", env=env)
    assert r.returncode == 3 and "llmbuilder pull acme/tiny-gguf:Q8_0" in r.stderr


def test_a_local_path_wins_over_a_name(hub, env, exported, tmp_path):
    (tmp_path / "acme").mkdir()
    os.symlink(exported, tmp_path / "acme" / "tiny")
    want = greedy_json(str(exported), env)["token_ids"]
    assert greedy_json("acme/tiny", env, cwd=tmp_path)["token_ids"] == want  # the directory, not the cache
    assert greedy_json("./acme/tiny", env, cwd=tmp_path)["token_ids"] == want
    assert hub.log == []


# ---------------------------------------------------------------------------------- interrupted pulls
def test_a_dropped_connection_is_resumed_where_it_stopped(hub, env):
    hub.cut_once.add("big.gguf")
    r = run("pull", "acme/big-gguf", env=env)
    assert r.returncode == 0, r.stderr
    # huggingface_hub keeps what it received in whole 10 MiB chunks and asks for the rest with Range.
    assert hub.gets("big.gguf") == [None, "bytes=10485760-"]
    (blob,) = blobs(env, "acme/big-gguf").iterdir()
    data = hub.repos["acme/big-gguf"].files["big.gguf"]
    assert blob.name == hashlib.sha256(data).hexdigest() and blob.read_bytes() == data


def test_a_pull_cut_off_by_the_server_completes_when_run_again(hub, env, exported):
    hub.die_in.add("model.safetensors")
    r = run("pull", "acme/tiny", env=env)
    assert r.returncode == 1
    (line,) = r.stderr.splitlines()[1:]
    assert line.startswith(f"Error: cannot reach the hub at {hub.url}: ")
    assert line.endswith(" — check the connection, then run again: llmbuilder pull acme/tiny")
    r = run("generate", "text", "-m", "acme/tiny", "-p", PROMPT, env=env)
    assert r.returncode == 3
    assert r.stderr == ("Error: acme/tiny is only partly downloaded (missing its weights) — finish the download "
                        "with: llmbuilder pull acme/tiny\n")

    second = FakeHub(repos=hub.repos).start()
    try:
        r = run("pull", "acme/tiny", env={**env, "HF_ENDPOINT": second.url})
        assert r.returncode == 0, r.stderr
        assert "Downloaded 1 files (553.6 KiB) of acme/tiny." in r.stderr.splitlines()
        assert [p.rsplit("/", 1)[1] for m, p, _ in second.log if m == "GET" and "/resolve/" in p] == \
            ["model.safetensors"]  # the files of the first run are kept
    finally:
        second.stop()
    assert greedy_json("acme/tiny", env)["token_ids"] == greedy_json(str(exported), env)["token_ids"]


@pytest.mark.parametrize("file, algorithm", [("model.safetensors", "sha256"), ("tokenizer.json", "git sha1")])
def test_a_file_that_does_not_match_the_hubs_checksum_is_refused_and_removed(hub, env, file, algorithm):
    hub.corrupt.add(file)
    r = run("pull", "acme/tiny", env=env)
    assert r.returncode == 1
    data = hub.repos["acme/tiny"].files[file]
    want = hashlib.sha256(data).hexdigest() if algorithm == "sha256" else hashlib.sha1(
        b"blob %d\0" % len(data) + data).hexdigest()
    (line,) = r.stderr.splitlines()[1:]
    assert line.startswith(f"Error: {file} of acme/tiny does not match the hub's checksum ({algorithm} {want[:12]}…, got ")
    assert line.endswith("; it was removed — run the pull again (llmbuilder pull acme/tiny); if it repeats, a proxy "
                         "alters the file")
    assert want not in {p.name for p in blobs(env, "acme/tiny").iterdir()}
    hub.corrupt.clear()
    assert run("pull", "acme/tiny", env=env).returncode == 0
    assert hub.gets(file) == [None, None]


# --------------------------------------------------------------------------------- offline and access
def test_offline_pull_of_a_model_not_in_the_cache(hub, env):
    r = run("pull", "acme/tiny", env={**env, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 1
    assert r.stderr == ("Error: cannot download acme/tiny: offline mode is on (HF_HUB_OFFLINE) and it is not fully in "
                        "the cache — unset HF_HUB_OFFLINE to download\n")
    assert hub.log == []


def test_unknown_private_and_gated_models(hub, env):
    token_fix = "log in with 'hf auth login' or set HF_TOKEN to a token that can read it"
    r = run("pull", "acme/nothing", env=env)
    assert (r.returncode, r.stderr) == (3, "Error: no model acme/nothing on the hub (or it is private) — check the "
                                           f"name; for a private model, {token_fix}\n")
    r = run("pull", "acme/private", env=env)
    assert (r.returncode, r.stderr) == (3, "Error: no model acme/private on the hub (or it is private) — check the "
                                           f"name; for a private model, {token_fix}\n")
    r = run("pull", "acme/private", env={**env, "HF_TOKEN": "wrong"})
    assert (r.returncode, r.stderr) == (3, "Error: the hub refused the token for acme/private (401) — "
                                           f"{token_fix}, or unset HF_TOKEN for a public model\n")
    assert run("pull", "acme/private", env={**env, "HF_TOKEN": "secret"}).returncode == 0
    r = run("pull", "acme/gated", env=env)
    assert r.returncode == 3
    assert r.stderr.splitlines()[1:] == [
        "Error: acme/gated is gated: its page asks you to accept its conditions first — accept them on the model's "
        f"page, then {token_fix}"]
    assert run("pull", "acme/gated", env={**env, "HF_TOKEN": "gated-ok"}).returncode == 0


def test_not_a_name(env):
    r = run("pull", "./acme/tiny", env=env)
    assert (r.returncode, r.stderr) == (2, "Error: './acme/tiny' is not a model name — write ORG/NAME, e.g. "
                                           "HuggingFaceTB/SmolLM2-135M\n")


# ------------------------------------------------------------------------------------------ GGUF repos
def test_a_repository_with_several_ggufs_needs_a_choice(hub, env):
    r = run("pull", "acme/tiny-gguf", env=env)
    assert r.returncode == 2
    assert r.stderr == ("Error: acme/tiny-gguf has several GGUF files: tiny-Q4_K_M.gguf, tiny-Q8_0.gguf — choose "
                        "one: llmbuilder pull acme/tiny-gguf:tiny-Q4_K_M.gguf\n")
    assert hub.gets("tiny-Q4_K_M.gguf") == hub.gets("tiny-Q8_0.gguf") == []

    assert run("pull", "acme/tiny-gguf:Q8_0", env=env).returncode == 0
    assert hub.gets("tiny-Q8_0.gguf") == [None] and hub.gets("tiny-Q4_K_M.gguf") == []  # one quantization only
    snap = Path(env["HF_HOME"]) / "hub" / "models--acme--tiny-gguf" / "snapshots" / ("b" * 40)
    listed = json.loads(run("list", "--json", env=env).stdout)
    assert listed == [{"name": "acme/tiny-gguf", "format": "gguf", "architecture": "llama", "size": 5000,
                       "path": str(snap / "tiny-Q8_0.gguf")}]

    r = run("pull", "acme/tiny-gguf:tiny-Q4_K_M.gguf", env=env)
    assert r.returncode == 0, r.stderr
    r = run("list", env=env)
    assert r.stdout.splitlines() == [
        "NAME                             FORMAT  ARCHITECTURE  SIZE",
        "acme/tiny-gguf:tiny-Q4_K_M.gguf  gguf    llama         2.9 KiB",
        "acme/tiny-gguf:tiny-Q8_0.gguf    gguf    llama         4.9 KiB",
    ]
    r = run("info", "acme/tiny-gguf", env=env)
    assert (r.returncode, r.stderr) == (2, "Error: acme/tiny-gguf has several GGUF files: tiny-Q4_K_M.gguf, "
                                           "tiny-Q8_0.gguf — choose one: -m acme/tiny-gguf:tiny-Q4_K_M.gguf\n")
    r = run("pull", "acme/tiny-gguf:Q5_K_M", env=env)
    assert (r.returncode, r.stderr) == (3, "Error: acme/tiny-gguf has no GGUF file 'Q5_K_M' (tiny-Q4_K_M.gguf, "
                                           "tiny-Q8_0.gguf) — check the file name: llmbuilder pull "
                                           "acme/tiny-gguf:FILE.gguf\n")


# ------------------------------------------------------------------------------------------ list and rm
def test_list_and_rm(hub, env):
    r = run("list", env=env)
    assert (r.returncode, r.stdout) == (0, "")
    assert r.stderr == f"No models in {Path(env['HF_HOME']) / 'hub'}. Download one with: llmbuilder pull ORG/NAME\n"
    assert run("pull", "acme/tiny", env=env).returncode == 0
    assert run("pull", "acme/big-gguf", env=env).returncode == 0
    r = run("list", env=env)
    assert r.stdout.splitlines() == [
        "NAME           FORMAT       ARCHITECTURE     SIZE",
        "acme/big-gguf  gguf         qwen2            24.0 MiB",
        "acme/tiny      huggingface  GPT2LMHeadModel  913.2 KiB",
    ]
    r = run("rm", "acme/tiny", env=env)
    assert (r.returncode, r.stderr) == (2, "Error: not deleting acme/tiny without confirmation — run: llmbuilder rm "
                                           "acme/tiny --yes\n")
    r = run("rm", "acme/tiny", "--yes", env=env)
    assert (r.returncode, r.stderr) == (0, "Deleted acme/tiny.\n")
    assert not (Path(env["HF_HOME"]) / "hub" / "models--acme--tiny").exists()
    assert [m["name"] for m in json.loads(run("list", "--json", env=env).stdout)] == ["acme/big-gguf"]
    r = run("rm", "acme/tiny", "--yes", env=env)
    assert r.returncode == 3 and r.stderr.startswith("Error: acme/tiny is not in the local Hugging Face cache")
    r = run("generate", "text", "-m", "acme/tiny", "-p", PROMPT, env=env)
    assert r.returncode == 3 and "download it with: llmbuilder pull acme/tiny" in r.stderr


@pytest.mark.parametrize("answer, deleted", [("y", True), ("n", False)])
def test_rm_asks_on_a_terminal(hub, env, answer, deleted):
    import pexpect

    assert run("pull", "acme/big-gguf", env=env).returncode == 0
    child = spawn_pty(cli_cmd()[0], cli_cmd("rm", "acme/big-gguf")[1:], env=env, encoding="utf-8", timeout=60)
    child.expect_exact(f"Delete acme/big-gguf (24.0 MiB) from {Path(env['HF_HOME']) / 'hub'}? [y/N] ")
    child.sendline(answer)
    child.expect_exact("Deleted acme/big-gguf." if deleted else "Nothing deleted.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == (0 if deleted else 1)
    assert (Path(env["HF_HOME"]) / "hub" / "models--acme--big-gguf").exists() is not deleted


# ----------------------------------------------------------------- a cache written by another program
def hf_cache_entry(hf_home: Path, repo: str, files: dict[str, bytes], commit: str = "f" * 40) -> Path:
    """A repository laid out as huggingface_hub's own downloads leave it (transformers, `hf download`):
    blobs named by their ETag, the snapshot's files as relative links to them, refs/main naming the commit."""
    storage = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    snap = storage / "snapshots" / commit
    (storage / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(commit)
    for name, data in files.items():
        etag = hashlib.sha256(data).hexdigest()
        (storage / "blobs" / etag).write_bytes(data)
        os.symlink(os.path.relpath(storage / "blobs" / etag, snap), snap / name)
    return snap


def test_a_model_another_program_downloaded_runs_by_name_and_completes(exported, tmp_path):
    e = {**cli_env(), "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens
    hf_cache_entry(tmp_path / "hf", "acme/tiny", {f: (exported / f).read_bytes() for f in NEEDED})
    assert greedy_json("acme/tiny", e)["token_ids"] == greedy_json(str(exported), e)["token_ids"]
    probe = "from llmbuilder_cli.cli.completion import complete_model; print(complete_model('ac'))"
    r = subprocess.run([cli_cmd()[0], "-c", probe], env=e, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[('acme/tiny', 'huggingface, 913.2 KiB')]"


def test_the_wizard_offers_downloaded_models_and_keeps_the_name(exported, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from test_wizard import wizard

    hf_cache_entry(tmp_path / "hf", "acme/tiny", {f: (exported / f).read_bytes() for f in NEEDED})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    ask, r = wizard(["acme/nothing", "acme/tiny", "prompt", "Once", "greedy", "4", None, None, "", "run"])
    assert "Downloaded models (by name): acme/tiny." in ask.said
    assert ask.refused[0][2] == (f"acme/nothing is not in the local Hugging Face cache ({tmp_path / 'hf' / 'hub'}) — "
                                 "download it with: llmbuilder pull acme/nothing (a local directory of that name: "
                                 "write ./acme/nothing)")
    assert "  tokenizer: the model's own (tokenizer.json): huggingface, 512 tokens" in ask.said  # not asked for
    assert r.values["model"] == "acme/tiny"
    assert r.argv[:4] == ["generate", "text", "-m", "acme/tiny"]


def test_pull_draws_a_progress_bar_per_file_on_a_terminal(hub, env):
    import pexpect
    import pyte

    child = spawn_pty(cli_cmd()[0], cli_cmd("pull", "acme/tiny")[1:], env=env, encoding="utf-8", timeout=120,
                      dimensions=(24, 100))
    screen = pyte.Screen(100, 24)
    pyte.Stream(screen).feed(child.read())
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    rows = [r.rstrip() for r in screen.display if r.strip()]
    assert rows[0] == "acme/tiny: 6 files, 913.2 KiB"
    bars = [r.split()[:3] for r in rows[1:7]]
    assert bars == [
        ["config.json", "━" * 40, "631/631"], ["generation_config.json", "━" * 40, "194/194"],
        ["tokenizer.json", "━" * 40, "358.5/358.5"], ["tokenizer_config.json", "━" * 40, "240/240"],
        ["special_tokens_map.json", "━" * 40, "72/72"], ["model.safetensors", "━" * 40, "553.6/553.6"],
    ]
    assert rows[7:] == ["Downloaded 6 files (913.2 KiB) of acme/tiny.",
                        'Run it: llmbuilder generate text -m acme/tiny -p "..."']


def test_a_download_that_cannot_be_written_is_one_line(hub, env):
    """A write the system refuses (here the file-size limit, EFBIG, as a full disk refuses with ENOSPC)."""
    import resource
    import signal

    def small_files_only():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    r = subprocess.run(cli_cmd("pull", "acme/tiny"), env=env, capture_output=True, text=True, timeout=300,
                       preexec_fn=small_files_only)
    assert r.returncode == 1
    assert r.stderr.splitlines()[1:] == [
        f"Error: cannot write acme/tiny into {Path(env['HF_HOME']) / 'hub'}: File too large — free some space, or "
        "set HF_HUB_CACHE to a disk with room; files already downloaded are kept"]
    assert [p.name for p in blobs(env, "acme/tiny").iterdir() if p.name.endswith(".incomplete")] == []
