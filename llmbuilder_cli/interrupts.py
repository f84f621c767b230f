"""Signals that must not break what is running: the first import of the engine, and the way out.

`deferred_interrupt` is Ctrl-C that waits for a block to finish, used around the first import of the
engine (torch).

A KeyboardInterrupt raised in the middle of importing a C extension can be swallowed by a library's own
catch-all and leave the extension half-loaded; the next import of it then fails with "cannot load module
more than once per process" instead of a clean exit 130. Inside `deferred_interrupt` a Ctrl-C is only
recorded, and raised as KeyboardInterrupt once the block is done.

`ExitPath` guards the last steps of the process. Once the program is on its way out (the command returned,
the first Ctrl-C reached the top, or a SIGTERM arrived), a further Ctrl-C or SIGTERM would otherwise raise
inside whatever cleanup is running then (unwinding, flushing, atexit hooks, torch's finalizers) and print a
traceback. On the exit path such a signal is only noted, and decides the exit code if the program was not
already ending because of a signal; a third one ends the process at once, in case cleanup is stuck. For
the interpreter's own teardown both signals are ignored (Python would otherwise restore their default
action there, and a late Ctrl-C would kill the process instead of letting it exit with its code).
Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any, Iterator

from .errors import EXIT_INTERRUPTED, EXIT_TERMINATED

__all__ = ["deferred_interrupt", "ExitPath", "signal_exit_code"]

#: Signals noted on the exit path before the process gives up on cleaning up and ends at once.
_PATIENCE = 2


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


def signal_exit_code(signum: int) -> int:
    """The exit code for a process that stops because of this signal (130 for SIGINT, 143 for SIGTERM)."""
    return EXIT_INTERRUPTED if signum == signal.SIGINT else 128 + int(signum)


class ExitPath:
    """From `begin` on, SIGINT and SIGTERM are noted instead of raised (main thread only).

    ``code(planned)`` is the exit code to use: ``planned`` when it already reports a signal (130, 143) or
    nothing arrived, else the code of the first signal noted. If signals keep coming (``_PATIENCE`` of
    them), the process ends at once with that code, without cleaning up further.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.planned: int | None = None

    def begin(self, planned: int | None = None) -> "ExitPath":
        """Note SIGINT and SIGTERM from now on; ``planned``: the exit code already decided, if any."""
        if planned is not None:
            self.planned = planned
        self._install(self._note)
        return self

    def finish(self, planned: int) -> int:
        """The exit code (see `code`); from now on, through Python's teardown, both signals are ignored."""
        code = self.code(planned)
        self._install(signal.SIG_IGN)
        return code

    @staticmethod
    def _install(handler: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
            if signum is None:
                continue
            try:
                signal.signal(signum, handler)
            except (ValueError, OSError):  # a platform without this signal's handler
                pass

    def _note(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        if len(self.received) >= _PATIENCE:
            os._exit(self.planned if self.planned is not None else signal_exit_code(self.received[0]))

    def code(self, planned: int) -> int:
        self.planned = planned
        if planned in (EXIT_INTERRUPTED, EXIT_TERMINATED) or not self.received:
            return planned
        return signal_exit_code(self.received[0])
