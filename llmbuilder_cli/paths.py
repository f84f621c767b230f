"""Where llmbuilder-cli keeps its own files (settings, small state markers). Standard library only.

``LLMBUILDER_HOME`` overrides everything; otherwise the platform's application directory, as Typer's
``get_app_dir`` names it: ``$XDG_CONFIG_HOME/llmbuilder`` or ``~/.config/llmbuilder`` on Linux,
``~/Library/Application Support/llmbuilder`` on macOS, ``%APPDATA%\\llmbuilder`` on Windows. Nothing is
created until something needs to be written, and a home that cannot be written never stops a command.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .files import user_path

__all__ = ["HOME_ENV", "home_dir", "state_marker", "set_state_marker"]

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
