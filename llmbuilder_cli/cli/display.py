"""The terminal display of one-shot generation and chat replies: the streamed text with a small live panel under it.

Used only when stdout and stderr are both terminals and nothing asked for plain output (``--plain``,
``--quiet``, ``NO_COLOR``, ``TERM=dumb``); otherwise the command writes bare text (see generate.py).

How it draws, and why nothing can be left behind or shown twice:

- The text is written once, as it comes, in rows of at most width-1 cells broken at spaces (a word longer
  than a row is folded). A word that outgrows its row is erased there and written at the start of the
  next one, in the same write. The row is never filled to the last column, so the terminal never wraps
  on its own and the cursor is never in the pending-wrap state (which DECRC below would lose).
- The panel lives *under the cursor*. After the text, room is made with IND (which scrolls at the bottom
  of the screen, unlike a cursor move), the cursor is saved (DECSC), the panel drawn, and the cursor
  restored (DECRC) to the end of the text.
- Text that starts a new row first erases everything below the cursor (ED 0): whatever rows the panel
  took, at whatever width it was drawn, they go; no row count can be stale. The erase, the text and the
  new panel go out in one write, so no frame shows a row twice.
- After a resize the panel is erased and drawn again for the new width; if the row being written no
  longer fits, the terminal has rewrapped or cut it and the text goes on from a fresh row.
- While the view is up, echo is off on the terminal, so a typed key or Ctrl-C's ``^C`` cannot land in the
  text, and Ctrl-C does not flush output the terminal has not shown yet (NOFLSH); Ctrl-C waits for the
  frame being made (interrupts.deferred_interrupt), so it never cuts one in half or loses its text.
- The panel is rendered for the terminal's current size, one column narrower than the screen (the settings
  line is shortened with an ellipsis, never wrapped); in a short terminal it shrinks to one status line,
  or disappears.
- Control characters in the text are shown, not obeyed (terminal_text.visible): a model's tokens cannot
  write the clipboard, clear the screen or colour the terminal.

On a console that is not a terminal (tests, a file) there is no live region: finished lines are printed
through the console, which wraps them to its width.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from dataclasses import dataclass
from rich.cells import cell_len
from rich.color import ColorSystem
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.spinner import Spinner
from rich.style import Style
from rich.text import Text

from ..config import GenerationConfig
from ..interrupts import deferred_interrupt
from ..terminal_text import visible

__all__ = ["PanelInfo", "LiveView"]

_LABELS = {
    "temperature": "temperature",
    "repetition_penalty": "repetition penalty",
    "vocab_limit": "vocab limit",
    "min_new_tokens": "min-tokens EOS block",
    "top_k": "top-k",
    "top_p": "top-p",
}

# Terminal controls used to keep the panel under the text (VT100; every terminal emulator in use has them).
_ERASE_BELOW = "\x1b[J"  # ED 0: from the cursor to the end of the screen
_ERASE_LINE_END = "\x1b[K"  # EL 0: from the cursor to the end of the row
_SAVE, _RESTORE = "\x1b7", "\x1b8"  # DECSC / DECRC
_INDEX = "\x1bD"  # IND: down one row, scrolling at the bottom; the column is kept
_COLOR_SYSTEMS = {
    "standard": ColorSystem.STANDARD, "256": ColorSystem.EIGHT_BIT, "truecolor": ColorSystem.TRUECOLOR,
    "windows": ColorSystem.WINDOWS,
}  # fmt: skip
_PANEL_ROWS = 5  # borders + settings + processors + counters


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass(frozen=True)
class PanelInfo:
    """What the panel shows that does not change during a generation."""

    model: str  # e.g. "demo" or the model file name
    config: GenerationConfig
    seed: int | None  # the seed in use (None when greedy)
    processors: tuple[str, ...]  # active processors, in order
    block_size: int

    def settings_line(self) -> str:
        c = self.config
        parts = [self.model, "greedy" if c.greedy else "sample"]
        if not c.greedy:
            parts += [
                f"temperature {c.temperature:g}",
                f"top-k {c.top_k if c.top_k else 'off'}",
                f"top-p {c.top_p:g}" if c.top_p is not None and c.top_p < 1.0 else "top-p off",
            ]
        rp = c.repetition_penalty
        parts.append(f"repetition penalty {rp:g}" if rp != 1.0 else "repetition penalty off")
        parts.append(f"tokens {c.min_new_tokens}–{c.max_new_tokens}")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        return " · ".join(parts)

    def processors_line(self) -> str:
        chain = " → ".join(_LABELS.get(p, p) for p in self.processors) or "none"
        return f"{chain} → {'argmax' if self.config.greedy else 'sample'}"


class _EchoOff:
    """While the view is up (restored on leaving; only for a foreground job): no echo, so neither typed keys
    nor Ctrl-C's ``^C`` land in the text, and NOFLSH, so Ctrl-C does not make the terminal driver throw
    away text written just before it."""

    def __init__(self, streams: tuple[object, ...]) -> None:
        self._fd: int | None = None
        self._saved: list | None = None
        for stream in streams:
            try:
                if stream is not None and stream.isatty():  # type: ignore[attr-defined]
                    self._fd = stream.fileno()  # type: ignore[attr-defined]
                    break
            except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
                continue

    def __enter__(self) -> None:
        if self._fd is None:
            return
        try:
            import termios

            if os.tcgetpgrp(self._fd) != os.getpgrp():  # a background job must not touch the terminal
                return
            saved = termios.tcgetattr(self._fd)
            quiet = list(saved)
            quiet[3] = (quiet[3] & ~termios.ECHO) | termios.NOFLSH  # Ctrl-C: no ^C, and no text thrown away
            termios.tcsetattr(self._fd, termios.TCSANOW, quiet)
            self._saved = saved
        except ImportError:  # no termios (Windows)
            pass
        except (OSError, AttributeError, termios.error):
            pass

    def __exit__(self, *exc: object) -> None:
        if self._saved is None or self._fd is None:
            return
        try:
            import termios

            termios.tcsetattr(self._fd, termios.TCSANOW, self._saved)
        except Exception:  # no termios, or the terminal is gone (termios.error)
            pass
        self._saved = None


class LiveView:
    """Context manager: ``feed`` text pieces as they stream, ``tick`` the counters, then leave."""

    def __init__(self, console: Console, info: PanelInfo, *, refresh_per_second: float = 10) -> None:
        self.console = console
        self.info = info
        self.tokens = 0
        self.context_used = 0
        self._t_first: float | None = None
        self._spinner = Spinner("dots", text=Text("waiting for the first token", style="dim"))
        self._interval = 1.0 / refresh_per_second
        self._lock = threading.RLock()  # one frame at a time (the refresh thread draws the panel too)
        self._live = console.is_terminal and not console.is_dumb_terminal and not console.legacy_windows
        self._out = console.file
        self._started = False
        # The terminal path: the width rows are laid out for, the cursor's column, the unfinished word.
        self._width = 0
        self._col = 0
        self._word: list[tuple[str, str]] = []  # (character, style) of the word the row ends with
        self._colors = _COLOR_SYSTEMS.get(console.color_system or "")
        self._renderer: Console | None = None
        self._echo = _EchoOff((sys.stdin, self._out))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # The non-terminal path: the unfinished line.
        self.partial = Text()

    # -- panel --------------------------------------------------------------------------------
    def _counters(self) -> Text:
        if self._t_first is None:
            text = self._spinner.render(time.monotonic())
            assert isinstance(text, Text)
            return text
        elapsed = time.perf_counter() - self._t_first
        rate = (self.tokens - 1) / elapsed if self.tokens > 1 and elapsed > 0 else 0.0
        return Text(
            f"{_plural(self.tokens, 'token')} · {rate:.1f} tok/s · context {self.context_used}/{self.info.block_size}",
            style="cyan",
        )

    def _panel(self, width: int, height: int) -> RenderableType | None:
        """The panel for a terminal of this size: full when it leaves at least half the screen (and three
        rows) to the text, else one status line, else nothing."""
        counters = self._counters()
        if width >= 24 and height - _PANEL_ROWS >= max(3, height // 2):
            body = Group(
                Text(self.info.settings_line(), style="bold"),
                Text(self.info.processors_line(), style="dim"),
                counters,
            )
            return Panel(body, title="llmbuilder", title_align="left", border_style="blue", expand=False)
        if width >= 12 and height >= 3:
            return Text.assemble(("llmbuilder ", "blue"), counters)
        return None

    def _panel_lines(self, width: int, height: int) -> list[str]:
        renderable = self._panel(width, height)
        if renderable is None:
            return []
        if self._renderer is None:
            self._renderer = Console(
                file=io.StringIO(), force_terminal=True, color_system=self.console.color_system or None,
                legacy_windows=False, highlight=False, no_color=self.console.no_color,
            )  # fmt: skip
        self._renderer.width = width - 1  # never the last column: no row of the panel can wrap
        with self._renderer.capture() as capture:
            self._renderer.print(renderable, no_wrap=True, overflow="ellipsis")
        return capture.get().rstrip("\n").split("\n")

    def _panel_frame(self) -> str:
        """Draw the panel under the cursor and come back: room first (IND scrolls at the bottom), then
        save the cursor, the rows (each finished with erase-to-end), erase what is below, restore."""
        width, height = self._size()
        lines = self._panel_lines(width, height)
        if not lines:
            return _ERASE_BELOW
        k = len(lines)
        rows = "".join("\r\n" + line + _ERASE_LINE_END for line in lines)
        return _INDEX * k + f"\x1b[{k}A" + _SAVE + rows + _ERASE_BELOW + _RESTORE

    # -- terminal -------------------------------------------------------------------------------
    def _size(self) -> tuple[int, int]:
        try:
            size = os.get_terminal_size(self._out.fileno())
            return max(size.columns, 2), max(size.lines, 1)
        except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
            return max(self.console.width, 2), max(self.console.height, 1)

    def _styled(self, pieces: list[tuple[str, str]]) -> str:
        out: list[str] = []
        run, run_style = "", ""
        for text, style in pieces + [("", "\0")]:  # the sentinel flushes the last run
            if style == run_style:
                run += text
                continue
            if run:
                if run_style and self._colors is not None and not self.console.no_color:
                    out.append(Style.parse(run_style).render(run, color_system=self._colors))
                else:
                    out.append(run)
            run, run_style = text, style
        return "".join(out)

    def _write(self, data: str) -> None:
        if not data:
            return
        self._out.write(data)
        self._out.flush()

    def _width_check(self) -> str:
        """After a change of width: erase the panel (it is drawn again for the new width). A row of text
        wider than the new width was rewrapped or cut by the terminal, leaving the cursor where only the
        terminal knows; the text then goes on from a fresh row."""
        width, _ = self._size()
        if width == self._width:
            return ""
        self._width = width
        if self._col > width - 1:
            self._col, self._word = 0, []
            return "\r\n" + _ERASE_BELOW
        return _ERASE_BELOW

    def _layout(self, pieces: list[tuple[str, str]]) -> tuple[str, bool]:
        """Lay text out in rows of at most width-1 cells, breaking at spaces (a word longer than a row is
        folded) → (the bytes, whether a new row was started). The unfinished word is written as it comes;
        when it outgrows its row it is erased there and written again at the start of the next one."""
        limit = self._width - 1  # never the last column: no pending wrap, no row the terminal wraps itself
        out: list[tuple[str, str]] = []
        broke = False
        for text, style in pieces:
            for ch in text:
                if ch == "\n":
                    out.append(("\r\n", ""))
                    self._col, self._word, broke = 0, [], True
                elif ch in " \t":
                    n = 1 if ch == " " else 8 - self._col % 8
                    if self._col + n <= limit:
                        out.append((" " * n, style))
                        self._col += n
                    else:  # a space at the end of a row becomes the row break
                        out.append(("\r\n", ""))
                        self._col, broke = 0, True
                    self._word = []
                else:
                    w = cell_len(ch)
                    if self._col + w <= limit:
                        out.append((ch, style))
                        self._col += w
                        self._word.append((ch, style))
                        continue
                    cells = sum(cell_len(c) for c, _ in self._word)
                    if self._word and cells < self._col and cells + w <= limit:  # move the word down
                        out.append((f"\x1b[{cells}D" + _ERASE_LINE_END + "\r\n", ""))
                        out.extend(self._word)
                        self._col = cells
                    else:  # fold (a word as long as a row) or start the row with this character
                        out.append(("\r\n", ""))
                        self._col, self._word = 0, []
                    out.append((ch, style))
                    self._col += w
                    self._word.append((ch, style))
                    broke = True
        return self._styled(out), broke

    def _text_frame(self, new: list[tuple[str, str]], *, final: bool = False) -> str:
        """The bytes that put `new` after the text already shown: alone when it stays on the text's row
        (the panel under it is untouched), else erase below + text + the panel again, in one piece."""
        resized = self._width_check()
        body, broke = self._layout(new)
        if final:
            return resized + _ERASE_BELOW + body
        if not broke and not resized:
            return body
        return resized + _ERASE_BELOW + body + self._panel_frame()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                if self._started:
                    self._write(self._width_check() + self._panel_frame())

    # -- updates --------------------------------------------------------------------------------
    def __enter__(self) -> "LiveView":
        if self._live:
            try:
                self._echo.__enter__()
                with deferred_interrupt(), self._lock:
                    self._started = True
                    self._width = self._size()[0]  # the text starts at column 0 of a fresh line
                    self._write(self._panel_frame())
                self._thread = threading.Thread(target=self._refresh_loop, name="llmbuilder-live", daemon=True)
                self._thread.start()
            except BaseException:  # Ctrl-C this early must not leave the terminal without echo
                self.close()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tick(self, tokens: int, context_used: int) -> None:
        if self._t_first is None and tokens > 0:
            self._t_first = time.perf_counter()
        self.tokens, self.context_used = tokens, context_used

    def feed(self, text: str, style: str = "") -> None:
        """Add streamed text (made visible: control characters are shown, not obeyed)."""
        if not text:
            return
        if not self._live:
            self._feed_lines(text, style)
            return
        with deferred_interrupt(), self._lock:  # Ctrl-C waits for the frame: no text lost, none half-drawn
            self._write(self._text_frame([(visible(text), style)]))

    def close(self) -> None:
        """Take the panel away, leaving the text (without a final newline) and the cursor after it."""
        try:
            if self._thread is not None:
                self._stop.set()
                self._thread.join()
                self._thread = None
            with deferred_interrupt(), self._lock:
                if self._started:
                    self._started = False
                    self._write(self._text_frame([], final=True))
        finally:
            self._echo.__exit__()
        if self.partial.plain:
            self.console.print(self.partial, end="", overflow="fold")
            self.partial = Text()
        self.console.file.flush()

    # -- not a terminal -------------------------------------------------------------------------
    def _feed_lines(self, text: str, style: str) -> None:
        for i, piece in enumerate(text.split("\n")):
            if i:  # a newline ended the line before
                self.console.print(self.partial, overflow="fold")
                self.partial = Text()
            if piece:
                self.partial.append(piece, style=style)

