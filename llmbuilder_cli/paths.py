"""Where llmbuilder-cli keeps its own files (settings, small state markers). Standard library only.

``LLMBUILDER_HOME`` overrides everything; otherwise the platform's application directory, as Typer's
``get_app_dir`` names it: ``$XDG_CONFIG_HOME/llmbuilder`` or ``~/.config/llmbuilder`` on Linux,
``~/Library/Application Support/llmbuilder`` on macOS, ``%APPDATA%\\llmbuilder`` on Windows. Nothing is
created until something needs to be written, and a home that cannot be written never stops a command.

`write_text_atomic` is the one way files the user keeps (settings, chat transcripts) are written: a
temporary file beside the target, flushed to disk, then renamed over it, so a full disk or a crash leaves
the old file whole, never a fragment.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from pathlib import Path

from .files import user_path

__all__ = ["HOME_ENV", "home_dir", "state_marker", "set_state_marker", "write_text_atomic"]

HOME_ENV = "LLMBUILDER_HOME"


def home_dir() -> Path:
    """The directory for llmbuilder-cli's settings and state (it may not exist yet)."""
    explicit = os.environ.get(HOME_ENV, "").strip()
    if explicit:
        return user_path(explicit)
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "llmbuilder"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "llmbuilder"
    xdg = os.environ.get("XDG_CONFIG_HOME", "").strip()
    base = user_path(xdg) if xdg else Path.home() / ".config"
    return base / "llmbuilder"


def _marker(name: str) -> Path:
    return home_dir() / "state" / name


def state_marker(name: str) -> bool:
    """Whether the one-time event ``name`` (e.g. a notice shown) has been recorded."""
    try:
        return _marker(name).is_file()
    except OSError:
        return False


def set_state_marker(name: str) -> bool:
    """Record the one-time event ``name``; False (and no error) when the home cannot be written."""
    path = _marker(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        return True
    except OSError:
        return False


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) all at once: write a temporary file in the same directory,
    fsync it, rename it over ``path``. On any failure the temporary file is removed and ``path`` is left
    as it was; the OSError propagates. A new file is readable by its owner only (0600: settings and
    transcripts hold paths and prompts); a file being replaced keeps its permissions. A symlink is written
    through: the file it points to is replaced and the link stays a link (settings kept in dotfiles)."""
    target = Path(os.path.realpath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + target.name + "-", suffix=".tmp", dir=target.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            with contextlib.suppress(FileNotFoundError, AttributeError):  # new file; no fchmod on Windows
                os.fchmod(f.fileno(), stat.S_IMODE(os.stat(target).st_mode))
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
