"""Settings that persist: a TOML file of named profiles, and where every effective value comes from.

The file is ``settings.toml`` in the settings directory (`paths.home_dir`, ``LLMBUILDER_HOME`` overrides)::

    default_profile = "stories"        # used when no --profile / LLMBUILDER_PROFILE is given

    [profiles.stories]
    model = "/home/me/run/model.pt"
    temperature = 0.7
    stop = ["THE END"]

Precedence, per key: command-line flag > environment variable (``LLMBUILDER_<KEY>``, e.g.
``LLMBUILDER_TEMPERATURE``) > profile > the model's own defaults (``generation_config.json``) > the
built-in default. The tokenizer is taken from the same layer as the model or a higher one: a model given
on the command line never gets a tokenizer that a profile meant for another model.

Values are checked with the same rules as everywhere else (`GenerationConfig`, `parse_field_value`); a
bad value is reported with the file, the line and the profile. The file is read and written with
``tomlkit`` so comments and layout a person wrote survive ``config set``. Writes hold a lock, re-read the
file, and replace it atomically; a damaged file is reported and never overwritten. A symlinked
``settings.toml`` (dotfiles kept in a repository) stays a link: the write replaces the file it points to,
atomically, beside that file, keeping its permissions. Anything but a regular file (a FIFO, a device, a
directory) is refused before it is opened, so it can never hang a command. Torch-free.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .config import FIELD_HELP, KEY_ALIASES, GenerationConfig, field_key, parse_field_value
from .errors import ConfigError, UsageError
from .paths import home_dir, write_text_atomic

__all__ = [
    "SETTINGS_FILE",
    "PROFILE_ENV",
    "KEYS",
    "Settings",
    "Resolved",
    "settings_path",
    "canonical_key",
    "env_name",
    "parse_value",
    "resolve",
    "update",
    "valid_profile_name",
]

SETTINGS_FILE = "settings.toml"
PROFILE_ENV = "LLMBUILDER_PROFILE"
ENV_PREFIX = "LLMBUILDER_"

#: Keys that are not generation settings, with their one-line help.
RUN_KEYS: dict[str, str] = {
    "model": "Model file or directory ('demo' for the built-in demo model).",
    "tokenizer": "Tokenizer directory or file (default: the one beside the model).",
    "device": "auto, cpu, cuda, cuda:N or mps.",
    "dtype": "auto, float32, bfloat16 or float16.",
    "quantize": "none, int8 or int4 (weight-only quantization for Llama-family models).",
    "threads": "CPU threads: a whole number >= 1, or 'auto'.",
    "system": "System text that opens a chat's context.",
    "mode": "Interactive mode: auto (chat with a chat template, else complete), chat or complete.",
}
GENERATION_KEYS: tuple[str, ...] = GenerationConfig.field_names()
#: Every key a profile may hold → its one-line help.
KEYS: dict[str, str] = {**RUN_KEYS, **{k: FIELD_HELP[k] for k in GENERATION_KEYS}}
#: Friendly spellings accepted for keys (the CLI's flag names).
ALIASES = KEY_ALIASES

DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZE = ("none", "int8", "int4")
MODES = ("auto", "chat", "complete")  # --mode: the interactive modes (chat.MODES) and auto
MAX_THREADS = 1024  # a saved setting must fit any machine; each run checks its own machine's limit too
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def settings_path() -> Path:
    """Where the settings file lives (it may not exist yet)."""
    return home_dir() / SETTINGS_FILE


def env_name(key: str) -> str:
    """The environment variable for a key: ``temperature`` → ``LLMBUILDER_TEMPERATURE``."""
    return ENV_PREFIX + key.upper()


def valid_profile_name(name: str) -> str | None:
    """None when ``name`` can name a profile, else the reason it cannot."""
    if _PROFILE_NAME.match(name or ""):
        return None
    return "a profile name is 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"


def canonical_key(name: str) -> str:
    """The key a user meant: hyphens become underscores, flag names map to keys; unknown → ConfigError."""
    key = field_key(name)
    if key in KEYS:
        return key
    from difflib import get_close_matches

    close = get_close_matches(key, list(KEYS) + list(ALIASES), n=1)
    raise ConfigError(
        f"unknown setting {name!r}",
        hint=f"did you mean {ALIASES.get(close[0], close[0])!r}?" if close else "settings: " + ", ".join(KEYS),
        field=name,
    )


def parse_value(key: str, text: str) -> Any:
    """User text (``config set``, environment variables) → a typed, checked value for ``key``."""
    if key in GENERATION_KEYS:
        value = parse_field_value(key, text)
    elif key == "threads":
        low = text.strip().lower()
        if low == "auto":
            return "auto"
        try:
            value = int(low)
        except ValueError:
            raise ConfigError(f"threads must be a whole number >= 1 or 'auto' (got {text!r})",
                              hint=RUN_KEYS["threads"], field=key) from None
    elif key in ("model", "tokenizer"):
        value = text.strip()
    else:
        value = text
    return check_value(key, value)


def check_value(key: str, value: Any) -> Any:
    """A typed value (from TOML or `parse_value`) checked on its own; generation fields are checked
    together later by `GenerationConfig`. Returns the value in the form the program uses."""

    def bad(rule: str) -> ConfigError:
        return ConfigError(f"{key} must be {rule} (got {value!r})", hint=KEYS[key], field=key)

    for text in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError(f"{key} is not valid UTF-8 text", hint="pass UTF-8 text", field=key) from None

    if key in GENERATION_KEYS:
        if key == "stop":
            if isinstance(value, str):
                value = (value,)
            if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
                raise bad("a list of strings")
            value = tuple(value)
        try:
            GenerationConfig(**_consistent({key: value}))
        except ConfigError as exc:
            raise ConfigError(exc.message, hint=exc.hint, field=key) from None
        except TypeError:
            raise bad("a value of the right type") from None
        return value
    if key == "threads":
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_THREADS):
            return value
        raise bad(f"a whole number from 1 to {MAX_THREADS}, or 'auto'")
    if not isinstance(value, str):
        raise bad("text")
    if key in ("model", "tokenizer"):
        if not value.strip():
            raise bad("a path")
        return value.strip()
    if key == "quantize" and value.strip().lower() not in QUANTIZE:
        raise ConfigError(f"unknown quantization {value!r}", hint="use " + " or ".join(QUANTIZE), field=key)
    if key == "mode":
        if value.strip().lower() not in MODES:
            raise ConfigError(f"unknown mode {value!r}", hint="use " + ", ".join(MODES), field=key)
        return value.strip().lower()
    if key == "dtype" and value.strip().lower() not in DTYPES:
        raise ConfigError(f"unknown dtype {value!r}", hint="use " + ", ".join(DTYPES), field=key)
    if key == "device" and not _DEVICE.match(value.strip().lower()):
        raise ConfigError(f"unknown device {value!r}", hint="use auto, cpu, cuda, cuda:N or mps", field=key)
    return value


def _consistent(values: Mapping[str, Any]) -> dict[str, Any]:
    """Values for a GenerationConfig built to check one field: keep the pair min <= max satisfiable."""
    out = dict(values)
    if "min_new_tokens" in out and "max_new_tokens" not in out:
        m = out["min_new_tokens"]
        if isinstance(m, int) and not isinstance(m, bool) and m > GenerationConfig.max_new_tokens:
            out["max_new_tokens"] = m
    return out


# ------------------------------------------------------------------------------------------------ file
@dataclass
class Settings:
    """The settings file as read: its profiles, the default profile, and where each value sits."""

    path: Path
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path | None = None) -> "Settings":
        """Read and check the file; a missing file is empty settings. Damage → ConfigError with the line."""
        path = path or settings_path()
        try:
            mode = os.stat(path).st_mode  # through a link; never opens (a FIFO would block the open)
            if stat.S_ISDIR(mode):
                raise IsADirectoryError
            if not stat.S_ISREG(mode):
                raise ConfigError(f"{path} is not a regular file (a pipe, socket or device)",
                                  hint="remove it, or set LLMBUILDER_HOME to another directory")
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):  # nothing saved yet (or no home): empty settings
            return cls(path)
        except IsADirectoryError:
            raise ConfigError(f"{path} is a directory, not a settings file", hint="remove or rename it") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not UTF-8 text", hint=_FIX_HINT) from None
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}", hint="check its permissions") from None
        doc = _parse(text, path)
        settings = cls(path, text, doc.unwrap())
        settings._check()
        return settings

    @property
    def profiles(self) -> dict[str, dict[str, Any]]:
        return self.data.get("profiles", {})

    @property
    def default_profile(self) -> str | None:
        return self.data.get("default_profile")

    def line_of(self, profile: str | None, key: str) -> int | None:
        """The 1-based line where ``key`` is set (in ``[profiles.<profile>]``, or at the top level)."""
        section: str | None = None
        for n, line in enumerate(self.text.splitlines(), 1):
            s = line.strip()
            header = re.match(r"^\[\s*(.+?)\s*\]", s)
            if header:
                parts = [p.strip().strip('"').strip("'") for p in header.group(1).split(".")]
                section = parts[1] if len(parts) == 2 and parts[0] == "profiles" else "?"
                continue
            name = re.match(r"^[\"']?([A-Za-z0-9_-]+)[\"']?\s*=", s)
            if name and name.group(1) == key and section == profile:
                return n
        return None

    def where(self, profile: str | None, key: str) -> str:
        line = self.line_of(profile, key)
        return f"{self.path}" + (f", line {line}" if line else "")

    def _check(self) -> None:
        unknown_top = [k for k in self.data if k not in ("default_profile", "profiles")]
        if unknown_top:
            k = unknown_top[0]
            raise ConfigError(
                f"{self.where(None, k)}: unknown top-level key {k!r}",
                hint="the file holds 'default_profile' and [profiles.NAME] tables; " + _FIX_HINT,
            )
        default = self.data.get("default_profile")
        if default is not None and not isinstance(default, str):
            raise ConfigError(f"{self.where(None, 'default_profile')}: default_profile must be a profile name",
                              hint=_FIX_HINT)
        profiles = self.data.get("profiles", {})
        if not isinstance(profiles, dict):
            raise ConfigError(f"{self.path}: 'profiles' must be tables like [profiles.NAME]", hint=_FIX_HINT)
        for name, values in profiles.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{self.path}: profile {name!r} must be a table [profiles.{name}]", hint=_FIX_HINT)
            for key, value in values.items():
                where = f"{self.where(name, key)} (profile {name!r})"
                if key not in KEYS:
                    try:
                        canonical_key(key)
                        hint = f"use {canonical_key(key)!r}"
                    except ConfigError as exc:
                        hint = exc.hint
                    raise ConfigError(f"{where}: unknown setting {key!r}", hint=hint)
                try:
                    check_value(key, value)
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {exc.message}", hint=_FIX_HINT) from None
            try:
                GenerationConfig(**{k: _plain(v) for k, v in values.items() if k in GENERATION_KEYS})
            except ConfigError as exc:
                raise ConfigError(f"{self.where(name, exc.field or '')} (profile {name!r}): {exc.message}",
                                  hint=_FIX_HINT) from None
        if default is not None and default not in profiles:
            raise ConfigError(
                f"{self.where(None, 'default_profile')}: default_profile {default!r} names no profile",
                hint="profiles: " + (", ".join(profiles) or "none") + "; " + _FIX_HINT,
            )


_FIX_HINT = "fix the file by hand or with 'llmbuilder config set/unset' (llmbuilder never overwrites it)"


def _plain(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _parse(text: str, path: Path) -> Any:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:
        line = getattr(exc, "line", None)
        detail = str(exc).split(" at line ")[0].replace("'\\x00'", "end of file")
        where = f"{path}, line {line}" if line else str(path)
        raise ConfigError(
            f"{where}: the settings file is damaged ({detail})",
            hint="correct or remove that line by hand; llmbuilder never overwrites a damaged file",
        ) from None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock for a read-modify-write of ``path`` (a no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # Windows: atomic replace still protects the file itself
        yield
        return
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def update(change: Callable[[Any], None], path: Path | None = None) -> Settings:
    """Apply ``change(document)`` to the settings file under a lock, check the result, replace atomically.

    The file is re-read inside the lock, so concurrent writers never lose each other's changes. Nothing
    is written when the current file is damaged or when the change would make it invalid.
    """
    import tomlkit

    path = path or settings_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the settings directory {path.parent}: {exc.strerror or exc}",
                          hint="set LLMBUILDER_HOME to a writable directory") from None
    try:
        with _locked(path):
            current = Settings.read(path)  # raises on a damaged file: never overwrite it
            doc = _parse(current.text, path) if current.text else tomlkit.document()
            if not current.text:
                doc.add(tomlkit.comment("llmbuilder-cli settings: see 'llmbuilder config --help'"))
            change(doc)
            text = tomlkit.dumps(doc)
            new = Settings(path, text, _parse(text, path).unwrap())
            new._check()
            write_text_atomic(path, text)
            return new
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}",
                          hint="check free space and permissions, or set LLMBUILDER_HOME") from None


def set_in_table(table: Any, key: str, value: Any) -> None:
    """Set ``key`` in a tomlkit table as a person would edit it: an existing line keeps its place and
    comment; a new key goes right after the table's last key, not after the blank lines and comments
    that introduce the next table."""
    if key in table:
        table[key] = value
        return
    body = table.value.body
    last = max((i for i, (k, _) in enumerate(body) if k is not None), default=len(body) - 1)
    if last + 1 < len(body):
        table.value._insert_at(last + 1, key, value)  # tomlkit has no public insert
    else:
        table[key] = value


# ---------------------------------------------------------------------------------------------- resolve
@dataclass
class Resolved:
    """Effective values and, for each key, where it came from ("flag", "env LLMBUILDER_X", …)."""

    values: dict[str, Any]
    sources: dict[str, str]
    profile: str | None
    settings: Settings

    def generation_config(self) -> GenerationConfig:
        """The effective GenerationConfig; an invalid combination names the source of the value."""
        values = {k: _plain(self.values[k]) for k in GENERATION_KEYS if k in self.values}
        try:
            return GenerationConfig(**values)
        except ConfigError as exc:
            source = self.sources.get(exc.field or "", "")
            if source and source != "flag":
                raise ConfigError(f"{exc.message} (from {source})", hint=exc.hint, field=exc.field) from None
            raise


def active_profile(settings: Settings, requested: str | None, env: Mapping[str, str]) -> tuple[str | None, str]:
    """(profile name or None, why): --profile > LLMBUILDER_PROFILE > default_profile > a profile 'default'."""
    for name, why in ((requested, "flag"), (env.get(PROFILE_ENV) or None, f"env {PROFILE_ENV}")):
        if name:
            if name not in settings.profiles:
                known = ", ".join(settings.profiles) or "none yet"
                raise UsageError(
                    f"no profile named {name!r} in {settings.path} (profiles: {known})",
                    hint="create it with 'llmbuilder config set KEY VALUE --profile NAME' or the setup wizard",
                )
            return name, why
    if settings.default_profile:
        return settings.default_profile, "default_profile"
    if "default" in settings.profiles:
        return "default", "default"
    return None, ""


def resolve(
    flags: Mapping[str, Any],
    *,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    settings: Settings | None = None,
    model_defaults: Mapping[str, Any] | None = None,
) -> Resolved:
    """Every key's effective value: flag > environment > profile > model defaults > built-in default.

    ``flags`` holds only the options given on the command line (keys as in `KEYS`). ``model_defaults``
    are the model's own generation defaults (generation fields only).
    """
    env = os.environ if env is None else env
    settings = settings if settings is not None else Settings.read()
    name, _ = active_profile(settings, profile, env)
    prof = settings.profiles.get(name, {}) if name else {}
    defaults = GenerationConfig()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    rank: dict[str, int] = {}  # 4 flag, 3 env, 2 profile, 1 model, 0 default
    for key in KEYS:
        if key in flags and flags[key] is not None:
            values[key], sources[key], rank[key] = check_value(key, flags[key]), "flag", 4
            continue
        text = env.get(env_name(key))
        if text not in (None, ""):
            try:
                values[key] = parse_value(key, text)
            except ConfigError as exc:
                raise ConfigError(f"{env_name(key)}: {exc.message}", hint=exc.hint, field=key) from None
            sources[key], rank[key] = f"env {env_name(key)}", 3
            continue
        if key in prof:
            values[key] = check_value(key, prof[key])
            sources[key] = f"profile {name!r} ({settings.where(name, key)})"
            rank[key] = 2
            continue
        if model_defaults and key in model_defaults:
            values[key], sources[key], rank[key] = model_defaults[key], "model (generation_config.json)", 1
            continue
        if key in GENERATION_KEYS:
            values[key] = getattr(defaults, key)
        sources[key], rank[key] = "default", 0
    # A tokenizer from a lower layer than the model belonged to another model: use the model's own.
    if rank.get("tokenizer", 0) < rank.get("model", 0) and "tokenizer" in values:
        del values["tokenizer"]
        sources["tokenizer"] = "default"
    return Resolved(values=values, sources=sources, profile=name, settings=settings)


def to_toml_value(value: Any) -> Any:
    """A Python value in the form TOML stores (tuples become lists)."""
    if isinstance(value, tuple):
        return list(value)
    return value
