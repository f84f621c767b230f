"""Models by name: ``ORG/NAME`` (and ``ORG/NAME:FILE.gguf``) found in the local Hugging Face cache,
downloaded into it (``llmbuilder pull``), listed (``llmbuilder list``) and removed (``llmbuilder rm``).
torch-free: the cache is read with the standard library and ``huggingface_hub`` (its cache layout, its
settings ``HF_HOME``/``HF_HUB_CACHE``/``HF_HUB_OFFLINE``/``HF_ENDPOINT``/``HF_TOKEN``, its downloads);
there is no HTTP code here.

**Name or path.** A local path that exists always wins. Otherwise a *string* of the form ``ORG/NAME`` (one
slash, each part a Hugging Face repository name: letters, digits, ``-``, ``_``, ``.``, not starting with
``.``), optionally followed by ``:FILE``, is a name. Anything else (``./org/name``, ``/abs``, ``~/x``,
``a/b/c``, ``run/model.pt`` and other file names, a ``pathlib.Path``) is a path. So ``./org/name`` always
means the directory, and a missing ``run/model.pt`` is reported as a missing file.

**Resolution is offline.** A name resolves to the snapshot of the cache's ``main`` ref (else its only, or
newest, snapshot): the snapshot directory for a Hugging Face model (``config.json`` + safetensors, every
shard of the index present), else its one GGUF file. ``:FILE`` picks a GGUF file (a file name, or a
quantization label such as ``Q4_K_M`` that one file name carries). A model that is not in the cache is a
`NotDownloaded` error (exit 3) naming the ``llmbuilder pull`` command that fetches it; nothing is
downloaded without that command.

**Pull** downloads only what generation needs: ``config.json``, ``generation_config.json``, the tokenizer
files, and the safetensors weights (every shard listed by the index), or the one chosen GGUF file, never
every quantization. ``huggingface_hub`` does the transfer: one file at a time into the cache, under a
process-unique temporary name renamed into place, a dropped connection resumed where it stopped (HTTP
``Range``) within the run, a short file refused by its expected size. Files completed by an earlier,
interrupted run are kept and not fetched again. huggingface_hub 2.4 does not hash what it downloads, so
each new file is checked here against the hub's checksum, the ETag that names the cached blob (sha256 of a
large (LFS) file, git's sha1 of a small one); a file that does not match is removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import EXIT_RUNTIME, LLMBuilderError, ModelLoadError, UsageError
from .files import os_error_text

__all__ = [
    "ModelName",
    "NotDownloaded",
    "DownloadError",
    "parse_name",
    "name_for",
    "cache_dir",
    "resolve_local",
    "LocalModel",
    "local_models",
    "remove",
    "PullPlan",
    "pull",
]

_PART = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}"
_NAME = re.compile(rf"(?P<repo>{_PART}/{_PART})(?::(?P<file>[^:]+))?")

#: A second part ending like a model or tokenizer file makes a path (``run/model.pt``), never a name.
_FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".gguf", ".safetensors", ".json", ".model")

#: Files a generation reads besides the weights (each fetched when the repository has it).
SMALL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
_GGUF_MAGIC = b"GGUF"


class NotDownloaded(ModelLoadError):
    """A model name that is not (fully) in the local cache; the hint is the pull command."""


class DownloadError(LLMBuilderError):
    """A download that could not finish (network, offline mode, checksum, disk)."""

    exit_code = EXIT_RUNTIME


@dataclasses.dataclass(frozen=True)
class ModelName:
    """``repo`` (``ORG/NAME``) and the optional ``file`` after the colon."""

    repo: str
    file: str | None = None

    def __str__(self) -> str:
        return self.repo if self.file is None else f"{self.repo}:{self.file}"

    @property
    def folder(self) -> str:
        """The cache's directory name for the repository (``models--ORG--NAME``)."""
        return "models--" + self.repo.replace("/", "--")


def parse_name(text: Any) -> ModelName | None:
    """The `ModelName` that ``text`` spells, or None when it is not name-shaped (see the module docstring).
    Only ``str`` values can be names; whether a path of that spelling exists is the caller's question."""
    if not isinstance(text, str):
        return None
    m = _NAME.fullmatch(text)
    if m is None:
        return None
    repo, file = m.group("repo"), m.group("file")
    if repo.lower().endswith(_FILE_SUFFIXES):  # run/model.pt, out/model.gguf: a (missing) file, not a name
        return None
    if ".." in repo or "--" in repo or any(p.endswith((".", "-")) for p in repo.split("/")):
        return None
    if file is not None and (file.startswith("/") or ".." in file.split("/")):
        return None
    return ModelName(repo, file)


def name_for(model: Any) -> ModelName | None:
    """The `ModelName` a ``--model`` value means, or None when it is a path: an existing path always wins."""
    name = parse_name(model)
    if name is None:
        return None
    with contextlib.suppress(OSError, ValueError):
        if os.path.lexists(model):
            return None
    return name


def cache_dir() -> Path:
    """The Hugging Face hub cache (``HF_HUB_CACHE``, else ``HF_HOME``/hub, else ``~/.cache/huggingface/hub``),
    as huggingface_hub computes it."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def pull_command(name: ModelName | str) -> str:
    return f"llmbuilder pull {name}"


# ------------------------------------------------------------------------------------------- resolution
def _snapshot(storage: Path) -> Path | None:
    """The snapshot directory the cache's ``main`` ref points at, else the only (or newest) snapshot."""
    with contextlib.suppress(OSError):
        commit = (storage / "refs" / "main").read_text(encoding="utf-8").strip()
        if commit and (storage / "snapshots" / commit).is_dir():
            return storage / "snapshots" / commit
    try:
        snaps = [p for p in (storage / "snapshots").iterdir() if p.is_dir()]
    except OSError:
        return None
    return max(snaps, key=lambda p: p.stat().st_mtime) if snaps else None


def _ggufs(snap: Path) -> list[str]:
    """The GGUF files of a snapshot, as repository-relative names, sorted."""
    return sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.name.lower().endswith(".gguf")
                  and p.is_file())


def _missing_weights(snap: Path) -> list[str] | None:
    """None when ``snap`` holds no safetensors weights; else the weight files it still lacks ([] = complete)."""
    index = snap / SAFETENSORS_INDEX
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return [SAFETENSORS_INDEX]
        return [s for s in shards if not (snap / s).is_file()]
    if (snap / SAFETENSORS).is_file():
        return []
    return None


def _pick_gguf(name: ModelName, ggufs: list[str]) -> list[str]:
    """The GGUF files ``name.file`` selects: the file itself, or the files whose name carries the label."""
    assert name.file is not None
    want = name.file
    if want.lower().endswith(".gguf"):
        return [g for g in ggufs if g == want]
    label = re.compile(rf"(?<![A-Za-z0-9]){re.escape(want)}(?![A-Za-z0-9])", re.IGNORECASE)
    return [g for g in ggufs if label.search(Path(g).name)]


def several_ggufs(name: ModelName, ggufs: list[str], verb: str) -> UsageError:
    shown = ", ".join(ggufs[:8]) + (f" and {len(ggufs) - 8} more" if len(ggufs) > 8 else "")
    return UsageError(f"{name} has several GGUF files: {shown}",
                      hint=f"choose one: {verb} {name.repo}:{ggufs[0]}")


def resolve_local(name: ModelName, *, verb: str = "-m") -> Path:
    """The path to load for ``name`` from the local cache (no network): a snapshot directory or a GGUF file.

    Not there (or incomplete) → `NotDownloaded` with the pull command; a repository with several GGUF
    files and no ``:FILE`` → `UsageError` listing them. ``verb`` is how the fix names the model (``-m``)."""
    storage = cache_dir() / name.folder
    snap = _snapshot(storage) if storage.is_dir() else None
    if snap is None:
        raise NotDownloaded(f"{name} is not in the local Hugging Face cache ({cache_dir()})",
                            hint=f"download it with: {pull_command(name)} (a local directory of that name: "
                            f"write ./{name})")
    if name.file is not None:
        chosen = _pick_gguf(name, _ggufs(snap))
        if len(chosen) == 1:
            return snap / chosen[0]
        if len(chosen) > 1:
            raise several_ggufs(name, chosen, verb)
        raise NotDownloaded(f"{name} is not in the local Hugging Face cache (the repository is, without that file)",
                            hint=f"download it with: {pull_command(name)}")
    missing = _missing_weights(snap)
    if missing:
        raise NotDownloaded(f"{name} is only partly downloaded (missing {', '.join(missing[:3])})",
                            hint=f"finish the download with: {pull_command(name)}")
    if missing == [] and (snap / "config.json").is_file():
        return snap
    ggufs = _ggufs(snap)
    if len(ggufs) == 1:
        return snap / ggufs[0]
    if len(ggufs) > 1:
        raise several_ggufs(name, ggufs, verb)
    other = [p for p in snap.iterdir() if p.suffix.lower() in (".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx")]
    if (snap / "config.json").is_file() and other:
        return snap  # weights in a format we do not read (pytorch_model.bin): the loader explains
    raise NotDownloaded(f"{name} is only partly downloaded (missing its weights)",
                        hint=f"finish the download with: {pull_command(name)}")


def resolve_model(model: Any) -> Path | None:
    """What the model loader should open for a ``--model`` value: the cached path when it is a name, None
    when it is a path (or the demo). Raises `NotDownloaded` for a name that is not in the cache."""
    name = name_for(model)
    return None if name is None else resolve_local(name)


# ---------------------------------------------------------------------------------------------- listing
@dataclasses.dataclass(frozen=True)
class LocalModel:
    """One runnable model of the cache, as ``llmbuilder list`` shows it."""

    name: str
    format: str  # "huggingface" | "gguf"
    architecture: str | None
    size: int
    path: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _file_size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def _hf_architecture(snap: Path) -> str | None:
    try:
        cfg = json.loads((snap / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict):
        return None
    archs = cfg.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        return archs[0]
    return cfg.get("model_type") if isinstance(cfg.get("model_type"), str) else None


def gguf_architecture(path: Path) -> str | None:
    """``general.architecture`` from a GGUF header when it is among the first few keys (where writers put
    it); None otherwise. Reads a few hundred bytes, never the tensors."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    if head[:4] != _GGUF_MAGIC or len(head) < 24:
        return None
    pos = 24  # magic, version (u32), tensor count (u64), key/value count (u64)
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    try:
        (count,) = struct.unpack_from("<Q", head, 16)
        for _ in range(min(count, 8)):
            (n,) = struct.unpack_from("<Q", head, pos)
            key = head[pos + 8:pos + 8 + n].decode("utf-8")
            pos += 8 + n
            (vtype,) = struct.unpack_from("<I", head, pos)
            pos += 4
            if vtype == 8:  # string
                (n,) = struct.unpack_from("<Q", head, pos)
                value = head[pos + 8:pos + 8 + n]
                pos += 8 + n
                if key == "general.architecture":
                    return value.decode("utf-8")[:64] or None
            elif vtype in sizes:
                pos += sizes[vtype]
            else:  # an array first: stop rather than parse it
                return None
    except (struct.error, UnicodeDecodeError):
        return None
    return None


def local_models() -> list[LocalModel]:
    """The runnable models of the cache: a Hugging Face model (config.json + complete safetensors) under its
    repository name; each GGUF file under ``ORG/NAME:FILE`` (just ``ORG/NAME`` when it is the only model of
    the repository). Sorted by name."""
    root = cache_dir()
    try:
        folders = sorted(p for p in root.iterdir() if p.name.startswith("models--") and p.is_dir())
    except OSError:
        return []
    out: list[LocalModel] = []
    for storage in folders:
        repo = storage.name[len("models--"):].replace("--", "/", 1)
        name = parse_name(repo)
        snap = _snapshot(storage)
        if name is None or snap is None:
            continue
        hf = _missing_weights(snap) == [] and (snap / "config.json").is_file()
        ggufs = _ggufs(snap)
        if hf:
            size = sum(_file_size(p) for p in snap.rglob("*") if p.is_file() and not p.name.lower().endswith(".gguf"))
            out.append(LocalModel(repo, "huggingface", _hf_architecture(snap), size, str(snap)))
        for g in ggufs:
            shown = repo if not hf and len(ggufs) == 1 else f"{repo}:{g}"
            out.append(LocalModel(shown, "gguf", gguf_architecture(snap / g), _file_size(snap / g), str(snap / g)))
    return out


def repo_size(name: ModelName) -> int:
    """Bytes the repository takes in the cache (its blobs)."""
    storage = cache_dir() / name.folder
    return sum(_file_size(p) for p in (storage / "blobs").glob("*") if p.is_file())


def remove(name: ModelName) -> Path:
    """Delete a repository from the cache (every revision, its blobs, its lock files); returns the folder.
    Not in the cache → `NotDownloaded` (exit 3)."""
    if name.file is not None:
        raise UsageError(f"rm removes a whole repository, not one file ({name})", hint=f"run: llmbuilder rm {name.repo}")
    storage = cache_dir() / name.folder
    if not storage.is_dir():
        raise NotDownloaded(f"{name} is not in the local Hugging Face cache ({cache_dir()})",
                            hint="see what is there with: llmbuilder list")
    try:
        shutil.rmtree(storage)
        shutil.rmtree(cache_dir() / ".locks" / name.folder, ignore_errors=True)
    except OSError as exc:
        raise DownloadError(f"cannot remove {storage}: {os_error_text(exc)}",
                            hint="check the permissions of the cache") from None
    return storage


# ------------------------------------------------------------------------------------------------- pull
@dataclasses.dataclass
class PullPlan:
    """What a pull fetches: the commit, the files (repository-relative) and their sizes when the hub says."""

    repo: str
    commit: str
    files: list[str]
    sizes: dict[str, int]


def _plan(name: ModelName, siblings: list[Any], commit: str, fetch: Callable[[str], Path]) -> PullPlan:
    """Choose the files of a pull from the repository's file list (``fetch`` downloads one small file: the
    safetensors index, whose shards are the weights)."""
    sizes = {s.rfilename: (s.lfs.size if s.lfs is not None else s.size) or 0 for s in siblings}
    names = set(sizes)
    ggufs = sorted(n for n in names if n.lower().endswith(".gguf"))
    if name.file is not None:
        chosen = _pick_gguf(name, ggufs)
        if not chosen:
            listing = ", ".join(ggufs[:8]) if ggufs else "it has no GGUF files"
            raise ModelLoadError(f"{name.repo} has no GGUF file {name.file!r} ({listing})",
                                 hint=f"check the file name: llmbuilder pull {name.repo}:FILE.gguf")
        if len(chosen) > 1:
            raise several_ggufs(name, chosen, "llmbuilder pull")
        return PullPlan(name.repo, commit, chosen, sizes)
    small = [f for f in SMALL_FILES if f in names]
    if SAFETENSORS_INDEX in names:
        index = fetch(SAFETENSORS_INDEX)
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise ModelLoadError(f"the safetensors index of {name.repo} cannot be read",
                                 hint="report it to the model's authors") from None
        return PullPlan(name.repo, commit, small + [SAFETENSORS_INDEX] + shards, sizes)
    if SAFETENSORS in names:
        return PullPlan(name.repo, commit, small + [SAFETENSORS], sizes)
    if len(ggufs) == 1:
        return PullPlan(name.repo, commit, ggufs, sizes)
    if ggufs:
        raise several_ggufs(name, ggufs, "llmbuilder pull")
    kinds = ", ".join(sorted(n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx"))))
    raise ModelLoadError(f"{name.repo} has no safetensors or GGUF weights" + (f" (it has {kinds})" if kinds else ""),
                         hint="choose a repository that publishes safetensors or GGUF weights")


def _hub_error(exc: BaseException, name: ModelName) -> LLMBuilderError | None:
    """The one-line error for what huggingface_hub raised, or None when it is not one of its errors."""
    from huggingface_hub import errors as e

    token_fix = "log in with 'hf auth login' or set HF_TOKEN to a token that can read it"
    if isinstance(exc, e.GatedRepoError):
        return ModelLoadError(f"{name.repo} is gated: its page asks you to accept its conditions first",
                              hint=f"accept them on the model's page, then {token_fix}")
    if isinstance(exc, e.RevisionNotFoundError):
        return ModelLoadError(f"{name.repo} has no revision 'main'", hint="check the name")
    if isinstance(exc, e.RepositoryNotFoundError):
        return ModelLoadError(f"no model {name.repo} on the hub (or it is private)",
                              hint=f"check the name; for a private model, {token_fix}")
    if isinstance(exc, e.RemoteEntryNotFoundError):
        return ModelLoadError(f"a file of {name.repo} is missing on the hub", hint="run the pull again later")
    if isinstance(exc, e.OfflineModeIsEnabled):
        return DownloadError(f"cannot download {name}: offline mode is on (HF_HUB_OFFLINE)",
                             hint="unset HF_HUB_OFFLINE to download")
    if isinstance(exc, e.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            return ModelLoadError(f"the hub refused the token for {name.repo} (401)",
                                  hint=f"{token_fix}, or unset HF_TOKEN for a public model")
        if status == 403:
            return ModelLoadError(f"the token may not read {name.repo} (403)", hint=token_fix)
        return DownloadError(f"the hub answered {status or 'an error'} for {name.repo}",
                             hint="try again later; files already downloaded are kept")
    return None


def _network_error(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"ConnectError", "TimeoutException", "RemoteProtocolError", "NetworkError",
                         "LocalEntryNotFoundError", "FileMetadataError", "TransportError"})


@contextlib.contextmanager
def _errors(name: ModelName) -> Iterator[None]:
    """Translate what a download raises into one-line errors."""
    from huggingface_hub.constants import ENDPOINT

    try:
        yield
    except LLMBuilderError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise DownloadError(f"cannot write {name} into {cache_dir()}: {os_error_text(exc)}",
                                hint="free some space, or set HF_HUB_CACHE to a disk with room; files already "
                                "downloaded are kept") from None
        mapped = _hub_error(exc, name)
        if mapped is not None:
            raise mapped from None
        if _network_error(exc) or "Consistency check failed" in str(exc):
            raise DownloadError(f"the download of {name} stopped: {_first_line(exc)}",
                                hint=f"run the same pull again to continue ({pull_command(name)})") from None
        raise DownloadError(f"cannot write the download of {name}: {os_error_text(exc)}",
                            hint="check the cache's free space and permissions") from None
    except Exception as exc:
        mapped = _hub_error(exc, name)
        if mapped is not None:
            raise mapped from None
        if _network_error(exc):
            raise DownloadError(f"cannot reach the hub at {ENDPOINT}: {_first_line(exc)}",
                                hint=f"check the connection, then run again: {pull_command(name)}") from None
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def verify(path: Path) -> tuple[str, str, str] | None:
    """Check a cached file against the ETag its blob is named by (sha256 when it has 64 hex digits, git's
    blob sha1 when 40). None when it matches (or the name is no checksum); else (algorithm, expected, got)."""
    from huggingface_hub.utils.sha import git_hash, sha_fileobj

    blob = Path(os.path.realpath(path))
    expected = blob.name.lower()
    if re.fullmatch(r"[0-9a-f]{64}", expected):
        with open(blob, "rb") as f:
            got = sha_fileobj(f).hex()
        algorithm = "sha256"
    elif re.fullmatch(r"[0-9a-f]{40}", expected):
        got = git_hash(blob.read_bytes())
        algorithm = "git sha1"
    else:
        return None
    return None if got == expected else (algorithm, expected, got)


def _discard(path: Path) -> None:
    """Remove a cached file and the blob it links to, so the next pull fetches it again."""
    blob = Path(os.path.realpath(path))
    for p in (path, blob):
        with contextlib.suppress(OSError):
            p.unlink()


def pull(name: ModelName, *, progress: Callable[[str, int, int], Any] | None = None,
         note: Callable[[str], Any] = lambda s: None) -> tuple[Path, list[str], int]:
    """Download what generation needs for ``name`` into the cache; returns (the path to load, the files
    fetched now, their bytes). ``progress(file, bytes_done_delta, file_total)`` is called as bytes arrive
    (first with delta 0, for each file not yet in the cache); ``note`` gets one line saying what the pull
    holds. Offline: succeeds only for a model already
    complete in the cache."""
    if offline():
        try:
            return resolve_local(name, verb="llmbuilder pull"), [], 0
        except NotDownloaded:
            raise DownloadError(f"cannot download {name}: offline mode is on (HF_HUB_OFFLINE) and it is not "
                                "fully in the cache", hint="unset HF_HUB_OFFLINE to download") from None
    with _errors(name):
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # its retry notes and warnings: the outcome is reported by the caller

        info = HfApi().model_info(name.repo, revision="main", files_metadata=True)
        commit = info.sha or "main"
        snap = cache_dir() / name.folder / "snapshots" / commit

        fetched: list[str] = []
        done: set[str] = set()
        total = 0

        def fetch(filename: str) -> Path:
            nonlocal total
            done.add(filename)
            before = (snap / filename).is_file()
            size = plan_sizes.get(filename, 0)
            if progress is not None and not before:
                progress(filename, 0, size)
            bar = _bar_class(lambda n: progress(filename, n, size) if progress is not None else None)
            path = Path(hf_hub_download(name.repo, filename, revision="main", tqdm_class=bar))
            if not before:
                bad = verify(path)
                if bad is not None:
                    _discard(path)
                    raise DownloadError(
                        f"{filename} of {name.repo} does not match the hub's checksum ({bad[0]} {bad[1][:12]}…, "
                        f"got {bad[2][:12]}…); it was removed",
                        hint=f"run the pull again ({pull_command(name)}); if it repeats, a proxy alters the file")
                fetched.append(filename)
                total += _file_size(path)
            return path

        plan_sizes = {s.rfilename: (s.lfs.size if s.lfs is not None else s.size) or 0 for s in info.siblings or []}
        plan = _plan(name, list(info.siblings or []), commit, fetch)
        note(f"{name}: {len(plan.files)} files, {size_text(sum(plan.sizes.get(f, 0) for f in plan.files))}")
        for f in plan.files:
            if f not in done:
                fetch(f)
    return resolve_local(name, verb="llmbuilder pull"), fetched, total


def size_text(n: int) -> str:
    """A size for people: ``1.5 GiB``, ``312.0 KiB``, ``12 bytes``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _bar_class(on_bytes: Callable[[int], Any]) -> type:
    """A tqdm-shaped class for huggingface_hub's ``tqdm_class``: it reports the bytes, draws nothing."""

    class _Bar:
        def __init__(self, *args: Any, initial: int = 0, **kwargs: Any) -> None:
            if initial:
                on_bytes(initial)

        def update(self, n: int = 1) -> None:
            if n:
                on_bytes(n)

        def close(self) -> None:
            pass

        def __enter__(self) -> "_Bar":
            return self

        def __exit__(self, *exc: Any) -> None:
            pass

    return _Bar
