"""The note that decoding on the CPU is held up by other programs, and what to do about it.

`watched(stream)` passes a generation's chunks through unchanged while a `cpu_load.DecodeWatch` times
them; `report()` prints the watch's one-line note on stderr, once, after the text and its footer (never
in the middle of the live display).
"""

from __future__ import annotations

import sys
from typing import Any, Iterator

from ..cpu_load import DecodeWatch

__all__ = ["WatchedStream"]


class WatchedStream:
    """A `TextStream` whose iteration is watched; every other attribute is the stream's own."""

    def __init__(self, stream: Any, threads: int) -> None:
        self._stream = stream
        self.watch = DecodeWatch(threads)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __iter__(self) -> Iterator[Any]:
        for chunk in self._stream:
            self.watch.tick()
            yield chunk

    def report(self, quiet: bool = False) -> None:
        """Print the note if decoding was held up (not with ``--quiet``)."""
        note = self.watch.note()
        if note and not quiet:
            sys.stderr.write(note + "\n")
            sys.stderr.flush()
