"""Whether the terminal display (live panel, spinner, colour) is used, or bare text. No rich import here,
so deciding costs nothing on the fast paths."""

from __future__ import annotations

import os
import sys
from typing import IO

__all__ = ["use_live_display"]


def use_live_display(*, plain: bool, quiet: bool, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> bool:
    """Whether to draw the live panel: both streams are terminals and nothing asked for plain output."""
    if plain or quiet or os.environ.get("NO_COLOR", "") != "" or os.environ.get("TERM", "") == "dumb":
        return False
    for stream in (stdout or sys.stdout, stderr or sys.stderr):
        try:
            if not stream.isatty():
                return False
        except (AttributeError, ValueError):
            return False
    return True
