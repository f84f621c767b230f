"""Files and paths the user names: ``~`` expansion that never raises, bounded reads, and one-line
messages for the operating system's errors. Standard library only (used by the CLI, batch.py,
settings.py and the engine's path resolution alike).

* `user_path` expands ``~`` and ``~user`` like a shell; an unknown user (or no home at all) is a
  `UsageError` that says so, instead of ``pathlib``'s RuntimeError (or a directory named ``~nouser``).
* `read_bounded` reads at most ``limit`` bytes: ``/dev/zero``, ``/dev/urandom`` or a runaway pipe given
  as an input file ends in an error, not in a process that fills the memory.
* `os_error_text` turns an OSError into the words for an error line (``No space left on device``).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .errors import UsageError

__all__ = ["MAX_INPUT_BYTES", "OUTPUT_ERRNOS", "user_path", "read_bounded", "read_stream_bounded", "os_error_text",
           "size_text"]

#: The largest text file read as input (a prompts file, a prompt on stdin, a chat template).
MAX_INPUT_BYTES = 64 << 20


def user_path(path: str | os.PathLike[str]) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded; a user that does not exist (or a ``~`` with
    no home directory) → `UsageError`."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    expanded = os.path.expanduser(text)
    if text.startswith("~") and expanded == text:
        head = text.split(os.sep, 1)[0]
        raise UsageError(f"cannot expand {head[:100]!r} in the path {text[:200]!r}: "
                         + ("no home directory is known" if head == "~" else f"there is no user {head[1:100]!r}"),
                         hint="write the path in full")
    return Path(expanded)


def os_error_text(exc: OSError) -> str:
    """Words for an OSError: its strerror (``Read-only file system``), else its name."""
    if exc.strerror:
        return exc.strerror
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def size_text(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def read_bounded(path: str | os.PathLike[str], what: str, hint: str, *, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of the file ``path`` (any readable file: regular, pipe, ``/dev/fd/N``), at most ``limit``.

    Every failure is a `UsageError` ``cannot read <what> <path>: <reason>`` (exit 2) with ``hint``.
    """
    p = user_path(path)
    shown = str(p)[:200]
    try:
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise UsageError(f"{what} not found: {shown}", hint=hint) from None
    except IsADirectoryError:
        raise UsageError(f"{what} {shown} is a directory", hint=hint) from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {shown}: {os_error_text(exc)}", hint=hint) from None
    except ValueError as exc:  # an embedded NUL byte in the name
        raise UsageError(f"cannot read {what} {shown!r}: {exc}", hint=hint) from None
    if len(data) > limit:
        raise UsageError(f"{what} {shown} is larger than {size_text(limit)}", hint=hint) from None
    return data


def read_stream_bounded(stream, what: str, hint: str, *, limit: int = MAX_INPUT_BYTES) -> bytes:
    """At most ``limit`` bytes from a binary stream (standard input), same errors as `read_bounded`."""
    try:
        data = stream.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {what}: {os_error_text(exc)}", hint=hint) from None
    if len(data) > limit:
        raise UsageError(f"{what} is larger than {size_text(limit)}", hint=hint) from None
    return data


#: errno values that mean "the output cannot be written here" (not a bug of this program).
OUTPUT_ERRNOS = frozenset(
    e for e in (getattr(errno, n, None) for n in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EIO", "EACCES", "EPERM"))
    if e is not None
)
