"""The terminal display of one-shot generation: streamed text above a small live parameter panel.

Used only when stdout and stderr are both terminals and nothing asked for plain output (``--plain``,
``--quiet``, ``NO_COLOR``, ``TERM=dumb``); otherwise the command writes bare text (see generate.py).

The live region is kept small, as rich's own guidance advises: it holds only the line being written
(at most one terminal row of it) and the panel. Every finished row is printed *above* the region, so the
answer scrolls like normal output however long it gets, and nothing is cut off or drawn twice. The region
is transient: when generation ends it disappears, leaving the text, and the footer goes to stderr.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.spinner import Spinner
from rich.text import Text

from ..config import GenerationConfig

__all__ = ["PanelInfo", "LiveView"]

_LABELS = {
    "temperature": "temperature",
    "repetition_penalty": "repetition penalty",
    "vocab_limit": "vocab limit",
    "min_new_tokens": "min-tokens EOS block",
    "top_k": "top-k",
    "top_p": "top-p",
}


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
        parts.append(f"repetition {c.repetition_penalty:g}")
        parts.append(f"tokens {c.min_new_tokens}–{c.max_new_tokens}")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        return " · ".join(parts)

    def processors_line(self) -> str:
        chain = " → ".join(_LABELS.get(p, p) for p in self.processors) or "none"
        return f"{chain} → {'argmax' if self.config.greedy else 'sample'}"


class LiveView:
    """Context manager: ``feed`` text pieces as they stream, ``tick`` the counters, then leave."""

    def __init__(self, console: Console, info: PanelInfo, *, refresh_per_second: float = 10) -> None:
        self.console = console
        self.info = info
        self.partial = Text()  # the unfinished last row of output
        self.tokens = 0
        self.context_used = 0
        self._t_first: float | None = None
        self._spinner = Spinner("dots", text=Text(" waiting for the first token", style="dim"))
        self._live = Live(
            console=console, transient=True, auto_refresh=True, refresh_per_second=refresh_per_second,
            get_renderable=self._render, redirect_stdout=False, redirect_stderr=False,
        )  # fmt: skip
        self._lock = getattr(self._live, "_lock", None) or threading.RLock()  # rich's refresh lock

    # -- rendering ------------------------------------------------------------------------------
    def _counters(self) -> RenderableType:
        if self._t_first is None:
            return self._spinner
        elapsed = time.perf_counter() - self._t_first
        rate = (self.tokens - 1) / elapsed if self.tokens > 1 and elapsed > 0 else 0.0
        return Text(
            f"{self.tokens} tokens · {rate:.1f} tok/s · context {self.context_used}/{self.info.block_size}",
            style="cyan",
        )

    def _render(self) -> RenderableType:
        body = Group(
            Text(self.info.settings_line(), style="bold"),
            Text(self.info.processors_line(), style="dim"),
            self._counters(),
        )
        panel = Panel(body, title="llmbuilder", title_align="left", border_style="blue", expand=False)
        return Group(self.partial, panel) if self.partial.plain else panel

    # -- updates --------------------------------------------------------------------------------
    def __enter__(self) -> "LiveView":
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tick(self, tokens: int, context_used: int) -> None:
        if self._t_first is None and tokens > 0:
            self._t_first = time.perf_counter()
        self.tokens, self.context_used = tokens, context_used

    def feed(self, text: str, style: str = "") -> None:
        """Add streamed text; finished rows (newlines, or wrapped past the width) go above the region."""
        if not text:
            return
        with self._lock:  # the refresh thread must never see a row both printed and still pending
            self._feed(text, style)

    def _feed(self, text: str, style: str) -> None:
        lines = text.split("\n")
        for i, piece in enumerate(lines):
            if piece:
                self.partial.append(piece, style=style)
            if i < len(lines) - 1:  # a newline ends the row
                self._emit(self.partial)
                self.partial = Text()
        self._spill_wrapped()

    def _spill_wrapped(self) -> None:
        width = max(self.console.width, 10)
        if self.partial.cell_len <= width:
            return
        rows = self.partial.wrap(self.console, width, overflow="fold")
        if len(rows) <= 1:
            return
        for row in rows[:-1]:
            self._emit(row)
        self.partial = rows[-1]

    def _emit(self, row: Text) -> None:
        self.console.print(row, soft_wrap=False, overflow="fold", end="\n")

    def close(self) -> None:
        """Stop the live region and print the unfinished row for good (without a newline)."""
        if self._live.is_started:
            self._live.stop()
        if self.partial.plain:
            self.console.print(self.partial, end="", soft_wrap=True)
            self.partial = Text()
        self.console.file.flush()
