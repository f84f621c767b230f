"""Text bound for a terminal: control characters made visible, long lines wrapped on word boundaries.

A model's tokens (or a hostile file's tensor names, paths, template output) can carry escape sequences:
OSC 52 writes the clipboard, ``ESC[2J`` clears the screen, others retitle the window or hide text. When the
text goes to a *terminal*, `visible` shows every C0/C1 control character (and DEL) in caret or ``\\x..``
notation instead of letting the terminal act on it; newline and tab stay. When stdout is a pipe or a file
the text must stay byte-exact (that is the contract of this tool), so callers apply `visible` only where
the stream is a terminal (`for_stream`).

`wrap_for` wraps notes, footers and help lines to the terminal's width at spaces, never mid-word, when
the stream is a terminal; elsewhere the text is returned as it is. Standard library only.
"""

from __future__ import annotations

import os
import re
import textwrap
from typing import TextIO

__all__ = ["visible", "has_controls", "is_terminal", "for_stream", "terminal_width", "wrap_for"]

# C0 controls except \t and \n, DEL, and the C1 range (which some terminals obey as 8-bit escapes).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")


def _show(match: re.Match) -> str:
    ch = match.group()
    code = ord(ch)
    if code < 0x20:
        return "^" + chr(code + 0x40)  # ESC -> ^[, BEL -> ^G, CR -> ^M
    if code == 0x7F:
        return "^?"
    return f"\\x{code:02x}"  # C1 controls


def has_controls(text: str) -> bool:
    """Whether `text` holds a character that `visible` would rewrite."""
    return _CONTROL.search(text) is not None


def visible(text: str) -> str:
    """`text` with control characters shown instead of obeyed: ``\\x1b]52;...`` -> ``^[]52;...``.

    Newlines and tabs are kept; a CR directly before a newline is dropped (a Windows line end), any other
    CR is shown as ``^M`` (it would move the cursor back over text already written).
    """
    if not has_controls(text):
        return text
    return _CONTROL.sub(_show, text.replace("\r\n", "\n"))


def is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, AttributeError, OSError):
        return False


def for_stream(text: str, stream: TextIO | None) -> str:
    """`visible(text)` when `stream` is a terminal, else `text` unchanged (pipes and files stay exact)."""
    return visible(text) if is_terminal(stream) else text


def terminal_width(stream: TextIO | None, fallback: int = 80) -> int:
    """Columns of the terminal behind `stream` (COLUMNS wins when set, as rich and shutil do)."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return os.get_terminal_size(stream.fileno()).columns or fallback  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return fallback


def wrap_for(text: str, stream: TextIO | None, *, width: int | None = None) -> str:
    """Wrap each line of `text` at spaces to the terminal width of `stream`, keeping each line's
    indentation for its continuation rows. Returns `text` unchanged when `stream` is not a terminal
    (and no `width` is given). A word longer than the width is broken, as a terminal would anyway."""
    if width is None:
        if not is_terminal(stream):
            return text
        width = terminal_width(stream)
    width = max(width, 10)
    out: list[str] = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip(" "))]
        out.extend(
            textwrap.wrap(
                line, width=width, subsequent_indent=indent if len(indent) < width // 2 else "",
                break_on_hyphens=False, drop_whitespace=True,
            )  # fmt: skip
            or [line]
        )
    return "\n".join(out)
