"""The ``llmbuilder`` console script: the CLI, plus the signals that can arrive before, during and after it.

Ctrl-C while Python is still importing the CLI (typer, rich) would otherwise print a traceback, so the
import happens inside the guard. SIGTERM (``kill``, a CI job's timeout) unwinds like Ctrl-C: the live
display restores the terminal, text already printed stays, and the process says ``Terminated.`` and
exits with 143 (128 + 15), the code shells use for it.

Once the process is on its way out (the command returned, the first Ctrl-C reached the top, or a SIGTERM
arrived), the way out is guarded (`interrupts.ExitPath`): a second Ctrl-C or SIGTERM arriving while the
process unwinds, flushes its output and Python and torch clean up is noted, never raised, so it cannot
print a traceback from the middle of that cleanup. After an interrupt the exit code is 130 or 143 (a
SIGTERM that lands while a Ctrl-C is still unwinding ends it as a SIGTERM: ``Terminated.``, 143); a run
that was ending normally reports the late signal's code instead.
"""

from __future__ import annotations

import signal
import sys

from .errors import EXIT_INTERRUPTED, EXIT_TERMINATED
from .interrupts import ExitPath

__all__ = ["run", "EXIT_TERMINATED"]


class Terminated(BaseException):
    """Raised by the SIGTERM handler (a BaseException, so no ``except Exception`` swallows it)."""


def _say(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _flush_stdout() -> None:
    """Write out what stdout still buffers now, while a closed pipe can still be met quietly (Python's
    own flush at exit would print "Exception ignored … BrokenPipeError" and exit 120)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        from .cli.app import reader_went_away

        reader_went_away()
    except (OSError, ValueError, AttributeError):
        pass


def run() -> None:
    way_out = ExitPath()

    def on_sigterm(signum: int, frame: object) -> None:
        way_out.begin(EXIT_TERMINATED)  # SIGTERM always ends the process: what follows is the way out
        raise Terminated()

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except (ValueError, OSError):  # not the main thread, or a platform without SIGTERM handlers
        pass
    code = EXIT_INTERRUPTED
    try:
        try:
            from .cli.app import main

            code = main()
        finally:
            way_out.begin()  # from here on a further Ctrl-C or SIGTERM is noted, not raised
    except KeyboardInterrupt:
        _say("\nInterrupted.\n")
        code = EXIT_INTERRUPTED
    except Terminated:
        _say("\nTerminated.\n")
        code = EXIT_TERMINATED
    _flush_stdout()
    sys.exit(way_out.finish(code))
