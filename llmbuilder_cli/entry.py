"""The ``llmbuilder`` console script: the CLI, plus the signals that can arrive before or during it.

Ctrl-C while Python is still importing the CLI (typer, rich) would otherwise print a traceback, so the
import happens inside the guard. SIGTERM (``kill``, a CI job's timeout) unwinds like Ctrl-C: the live
display restores the terminal, text already printed stays, and the process says ``Terminated.`` and
exits with 143 (128 + 15), the code shells use for it.
"""

from __future__ import annotations

import signal
import sys

__all__ = ["run", "EXIT_TERMINATED"]

EXIT_TERMINATED = 128 + 15


class Terminated(BaseException):
    """Raised by the SIGTERM handler (a BaseException, so no ``except Exception`` swallows it)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def _say(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def run() -> None:
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main thread, or a platform without SIGTERM handlers
        pass
    try:
        from .cli.app import main

        code = main()
    except KeyboardInterrupt:
        _say("\nInterrupted.\n")
        code = 130
    except Terminated:
        _say("\nTerminated.\n")
        code = EXIT_TERMINATED
    sys.exit(code)
