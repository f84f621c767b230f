"""A multi-turn conversation over one model: the running token context, with the KV cache kept across turns.

The context is token segments: the system text (if any), then per turn the user segment (user line +
assistant prefix) and the accepted reply segment (reply text + end marker). A new turn only runs the
tokens the cache does not already hold, so a long history is not re-encoded each time.

Overflow policy (explicit, never silent): before a reply, while system + history + new user segment +
``max_new_tokens`` would exceed the model's context, the oldest turn is dropped (the system text stays).
`start` reports how many turns were dropped. If even the newest turn alone does not fit, generation still
runs and llmbuilder's sliding window applies, exactly as for one-shot generation.

A reply is not part of the context until `accept` is called, so a cancelled or regenerated reply leaves
no trace unless the caller wants it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import GenerationConfig
from ..errors import UsageError
from ..turns import TurnFormat
from .generate import TextStream
from .loading import LoadedModel

__all__ = ["Turn", "Conversation"]


@dataclass
class Turn:
    user: str  # what the user typed
    reply: str  # the accepted reply text
    user_ids: list[int] = field(default_factory=list)  # user segment (ends with the assistant prefix)
    reply_ids: list[int] = field(default_factory=list)  # reply segment (ends with the end marker)

    @property
    def ids(self) -> list[int]:
        return self.user_ids + self.reply_ids


class Conversation:
    """The running context of a chat. ``start`` a reply, iterate its stream, then ``accept`` it (or not)."""

    def __init__(self, loaded: LoadedModel, turn_format: TurnFormat | None = None, system: str = "") -> None:
        self.loaded = loaded
        self.format = turn_format or TurnFormat()
        self.turns: list[Turn] = []
        self._cache = loaded.model.new_cache(loaded.block_size)  # (L, 1, H, P, D), reused across turns
        self._cache_ids: list[int] = []  # the tokens whose keys/values the cache holds, from position 0
        self._pending: tuple[str, list[int], TextStream] | None = None
        self.dropped_turns = 0  # turns removed by the overflow policy so far
        self.set_system(system)

    # -- context ---------------------------------------------------------------------------------
    def set_system(self, text: str) -> None:
        self.system = text
        self._system_ids = self.loaded.tokenizer.encode(self.format.system_text(text)) if text else []

    @property
    def context_ids(self) -> list[int]:
        ids = list(self._system_ids)
        for t in self.turns:
            ids += t.ids
        return ids

    @property
    def block_size(self) -> int:
        return self.loaded.block_size

    def clear(self) -> None:
        """Forget every turn (the system text stays)."""
        self.turns.clear()
        self._pending = None

    def undo(self) -> Turn | None:
        """Remove and return the last accepted turn."""
        self._pending = None
        return self.turns.pop() if self.turns else None

    def load_turns(self, pairs: list[tuple[str, str]]) -> None:
        """Replace the history with (user, reply) pairs, e.g. from a saved transcript."""
        enc = self.loaded.tokenizer.encode
        self._pending = None
        self.turns = [
            Turn(user=u, reply=r, user_ids=enc(self.format.user_text(u)),
                 reply_ids=enc(r.rstrip() + self.format.end) if r.strip() else [])
            for u, r in pairs
        ]  # fmt: skip

    # -- replies ---------------------------------------------------------------------------------
    def _fit(self, user_ids: list[int], max_new_tokens: int) -> int:
        """Drop oldest turns until the next reply fits the context; how many were dropped."""
        dropped = 0
        while self.turns and len(self.context_ids) + len(user_ids) + max_new_tokens > self.block_size:
            self.turns.pop(0)
            dropped += 1
        self.dropped_turns += dropped
        return dropped

    def start(self, user_text: str, config: GenerationConfig, *, top_logprobs: int = 0) -> tuple[TextStream, int]:
        """Begin the reply to ``user_text`` → (its stream, turns dropped to make room)."""
        if not user_text.strip():
            raise UsageError("the message is empty", hint="type something for the model to answer")
        user_ids = self.loaded.tokenizer.encode(self.format.user_text(user_text))
        dropped = self._fit(user_ids, config.max_new_tokens)
        prompt_ids = self.context_ids + user_ids
        reuse = 0
        for a, b in zip(self._cache_ids, prompt_ids[: len(prompt_ids) - 1]):  # keep at least one token to run
            if a != b:
                break
            reuse += 1
        stops = tuple(dict.fromkeys((*config.stop, *self.format.stops)))
        stream = TextStream(
            self.loaded, user_text, config.replace(stop=stops), top_logprobs=top_logprobs,
            prompt_ids=prompt_ids, cache=self._cache, cached=reuse,
        )  # fmt: skip
        self._cache_ids = prompt_ids[:reuse]  # what stays valid while the stream overwrites the rest
        self._pending = (user_text, user_ids, stream)
        return stream, dropped

    def _remember_cache(self, stream: TextStream) -> None:
        tokens = stream.tokens
        self._cache_ids = list(tokens.seq[: tokens.cached])

    def accept(self) -> Turn:
        """Add the last started reply (as far as it got) to the context."""
        if self._pending is None:
            raise UsageError("there is no reply to keep", hint="send a message first")
        user_text, user_ids, stream = self._pending
        self._pending = None
        self._remember_cache(stream)
        reply = stream.text
        reply_ids = self.loaded.tokenizer.encode(reply.rstrip() + self.format.end) if reply.strip() else []
        turn = Turn(user=user_text, reply=reply, user_ids=user_ids, reply_ids=reply_ids)
        self.turns.append(turn)
        return turn

    def discard(self) -> None:
        """Drop the last started reply (the cache keeps what is still valid)."""
        if self._pending is not None:
            self._remember_cache(self._pending[2])
        self._pending = None

    @property
    def context_used(self) -> int:
        return len(self.context_ids)
