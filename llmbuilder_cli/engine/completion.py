"""The interactive *complete* mode's session: each line typed is a prompt the model continues.

This is how llmbuilder's own interactive mode treats a line, and the right thing for a base model without a
chat template (llmbuilder's GPTs, the built-in demo). By default every line stands alone and is generated
exactly like one-shot generation (``generate text -p LINE``): the same encoding (BOS where the tokenizer
adds one), the same stop strings and EOS rule, the same seed semantics — so greedy output, or output with a
fixed seed, equals the one-shot output for that line.

With ``keep_context`` on, earlier lines and their continuations come first, each followed by a newline, and
the new line is continued after them; the whole text is encoded together. When that would not leave room for
``max_new_tokens``, the oldest lines leave the context (kept in `dropped`, as a chat does). The context is
encoded and run again for each line: no KV cache is kept across lines.

The object has the shape of `engine.conversation.Conversation` (start / accept / discard / undo / clear /
load_turns, ``turns``, ``dropped``, ``context_used``), so the same REPL drives both modes.
"""

from __future__ import annotations

from ..config import GenerationConfig
from ..errors import UsageError
from .conversation import Turn
from .generate import TextStream, with_bos
from .loaded import LoadedModel

__all__ = ["Completion", "SEPARATOR"]

SEPARATOR = "\n"  # after each earlier line + continuation, when the context is kept


class Completion:
    """Lines continued as prompts. ``start`` a line, iterate its stream, then ``accept`` it (or not)."""

    system = ""  # complete mode has no system text

    def __init__(self, loaded: LoadedModel, keep_context: bool = False) -> None:
        self.loaded = loaded
        self.keep_context = keep_context
        self.turns: list[Turn] = []  # (line, continuation) pairs, oldest first
        self.dropped: list[Turn] = []  # lines that left the context to make room, oldest first
        self._pending: tuple[str, TextStream] | None = None

    # -- context ---------------------------------------------------------------------------------
    def set_system(self, text: str) -> None:
        if text:
            raise UsageError("complete mode has no system text", hint="put the text in the line, or /mode chat")

    @property
    def block_size(self) -> int:
        return self.loaded.block_size

    @property
    def dropped_turns(self) -> int:
        return len(self.dropped)

    @property
    def history(self) -> list[Turn]:
        return self.dropped + self.turns

    def context_text(self) -> str:
        """The earlier lines and continuations a new line follows ("" when the context is not kept)."""
        if not self.keep_context:
            return ""
        return "".join(t.user + t.reply + SEPARATOR for t in self.turns)

    @property
    def context_ids(self) -> list[int]:
        text = self.context_text()
        return with_bos(self.loaded.tokenizer, self.loaded.tokenizer.encode(text)) if text else []

    @property
    def context_used(self) -> int:
        return min(len(self.context_ids), self.block_size)

    def echo_text(self, line: str) -> str:
        """How the line reads after the tokenizer's normalisation (llmbuilder's lowercases): what one-shot
        generation prints before the continuation."""
        tok = self.loaded.tokenizer
        return tok.decode(with_bos(tok, tok.encode(line)))

    def clear(self) -> None:
        self.turns.clear()
        self.dropped.clear()
        self._pending = None

    def undo(self) -> Turn | None:
        self._pending = None
        return self.turns.pop() if self.turns else None

    def load_turns(self, pairs: list[tuple[str, str]], dropped: int = 0) -> None:
        self._pending = None
        turns = [Turn(user=u, reply=r) for u, r in pairs]
        self.dropped, self.turns = turns[:dropped], turns[dropped:]

    # -- continuations ---------------------------------------------------------------------------
    def start(
        self, line: str, config: GenerationConfig, *, top_logprobs: int = 0, load_s: float = 0.0
    ) -> tuple[TextStream, int]:
        """Begin the continuation of ``line`` → (its stream, earlier lines dropped to make room)."""
        if not line.strip():
            raise UsageError("the line is empty", hint="type some text for the model to continue")
        dropped = 0
        if self.keep_context:
            tok = self.loaded.tokenizer
            while self.turns and len(with_bos(tok, tok.encode(self.context_text() + line))) \
                    + config.max_new_tokens > self.block_size:
                self.dropped.append(self.turns.pop(0))
                dropped += 1
        prompt = self.context_text() + line
        stream = TextStream(self.loaded, prompt, config, top_logprobs=top_logprobs, load_s=load_s)  # as one-shot
        self._pending = (line, stream)
        return stream, dropped

    def accept(self) -> Turn:
        if self._pending is None:
            raise UsageError("there is nothing to keep", hint="type a line first")
        line, stream = self._pending
        self._pending = None
        turn = Turn(user=line, reply=stream.text)
        self.turns.append(turn)
        return turn

    def discard(self) -> None:
        self._pending = None
