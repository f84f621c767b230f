"""Ctrl-C that waits for a block to finish: used around the first import of the engine (torch).

A KeyboardInterrupt raised in the middle of importing a C extension can be swallowed by a library's own
catch-all and leave the extension half-loaded; the next import of it then fails with "cannot load module
more than once per process" instead of a clean exit 130. Inside `deferred_interrupt` a Ctrl-C is only
recorded, and raised as KeyboardInterrupt once the block is done. Standard library only.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

__all__ = ["deferred_interrupt"]


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Run the block to its end even if Ctrl-C arrives; then raise KeyboardInterrupt if it did."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:  # someone else handles Ctrl-C: leave it to them
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
