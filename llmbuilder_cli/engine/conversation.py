"""A multi-turn conversation over one model: the running token context, with the KV cache kept across turns.

The context is token segments: the system text (if any), then per turn the user segment (user line +
assistant prefix) and the accepted reply segment (reply text + end marker). A new turn only runs the
tokens the cache does not already hold, so a long history is not re-encoded each time.

Overflow policy (explicit, never silent): before a reply, while system + history + new user segment +
``max_new_tokens`` would exceed the model's context, the oldest turn is dropped (the system text stays).
`start` reports how many turns were dropped. Dropped turns leave the context but not the chat: they are
kept, oldest first, in `dropped` (a transcript saves them, marked), until `clear`. If even the newest turn
alone does not fit, generation still runs and llmbuilder's sliding window applies, exactly as for one-shot
generation; `context_used` never reports more than the model's context.

A reply is not part of the context until `accept` is called, so a cancelled or regenerated reply leaves
no trace unless the caller wants it.

Two layouts: a `TurnFormat` (plain ``User:``/``Assistant:`` text, for models without a chat template, such
as llmbuilder's) or the model's own chat template (`ChatTemplate`, used by default when the tokenizer
carries one). With a template the whole conversation is rendered again for each reply, and the cache is
reused for the longest prefix the new rendering shares with the tokens it already holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import GenerationConfig
from ..errors import UsageError
from ..turns import TurnFormat
from .generate import TextStream, with_bos
from .loaded import LoadedModel
from .tokenizers.chat_template import ChatTemplate

__all__ = ["Turn", "Conversation", "template_for"]

AUTO = "auto"
INITIAL_CACHE = 1024  # positions preallocated for a new chat


def template_for(tokenizer: object) -> ChatTemplate | None:
    """The chat template a tokenizer carries (tokenizer_config.json or GGUF metadata), if any."""
    source = getattr(tokenizer, "chat_template", None)
    if not source:
        return None
    return ChatTemplate(source, getattr(tokenizer, "special_tokens", None) or {})


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

    def __init__(
        self,
        loaded: LoadedModel,
        turn_format: TurnFormat | None = None,
        system: str = "",
        template: ChatTemplate | None | str = AUTO,
    ) -> None:
        """``template``: "auto" uses the tokenizer's chat template unless a ``turn_format`` is given;
        a `ChatTemplate` forces one; None forces the turn format."""
        self.loaded = loaded
        self.format = turn_format or TurnFormat()
        if template == AUTO:
            template = None if turn_format is not None else template_for(loaded.tokenizer)
        self.template: ChatTemplate | None = template  # type: ignore[assignment]
        self.turns: list[Turn] = []
        # Reused across turns; sized for what the chat needs so far (a long-context model's full cache
        # would cost hundreds of MB up front) and grown by doubling, up to the model's context.
        self._cache = loaded.model.new_cache(min(loaded.block_size, INITIAL_CACHE))
        self._cache_ids: list[int] = []  # the tokens whose keys/values the cache holds, from position 0
        self._pending: tuple[str, list[int], TextStream] | None = None
        self.dropped: list[Turn] = []  # turns the overflow policy removed from the context, oldest first
        self.set_system(system)

    # -- context ---------------------------------------------------------------------------------
    def set_system(self, text: str) -> None:
        self.system = text
        self._system_ids = self.loaded.tokenizer.encode(self.format.system_text(text)) if text else []

    def messages(self, user_text: str | None = None) -> list[dict[str, str]]:
        """The conversation as chat messages (system, then user/assistant turns, then ``user_text``)."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        for t in self.turns:
            out += [{"role": "user", "content": t.user}, {"role": "assistant", "content": t.reply.strip()}]
        if user_text is not None:
            out.append({"role": "user", "content": user_text})
        return out

    def _render_ids(self, user_text: str | None) -> list[int]:
        assert self.template is not None
        messages = self.messages(user_text)
        if not messages:
            return []
        text = self.template.render(messages, add_generation_prompt=user_text is not None)
        return self.loaded.tokenizer.encode(text)  # the template writes BOS itself where the model wants it

    @property
    def context_ids(self) -> list[int]:
        if self.template is not None:
            return self._render_ids(None)
        ids = self.context_ids_raw()
        return with_bos(self.loaded.tokenizer, ids) if ids else ids

    @property
    def block_size(self) -> int:
        return self.loaded.block_size

    @property
    def dropped_turns(self) -> int:
        """How many turns were removed to make room since the chat began (or was cleared / loaded)."""
        return len(self.dropped)

    @property
    def history(self) -> list[Turn]:
        """Every exchange of the chat, oldest first: the dropped ones, then those in the context."""
        return self.dropped + self.turns

    def clear(self) -> None:
        """Forget every turn, dropped ones included (the system text stays)."""
        self.turns.clear()
        self.dropped.clear()
        self._pending = None

    def undo(self) -> Turn | None:
        """Remove and return the last accepted turn."""
        self._pending = None
        return self.turns.pop() if self.turns else None

    def load_turns(self, pairs: list[tuple[str, str]], dropped: int = 0) -> None:
        """Replace the history with (user, reply) pairs, e.g. from a saved transcript; the first
        ``dropped`` of them had been dropped to make room and stay out of the context."""
        enc = self.loaded.tokenizer.encode
        self._pending = None
        turns = [
            Turn(user=u, reply=r, user_ids=enc(self.format.user_text(u)),
                 reply_ids=enc(r.rstrip() + self.format.end) if r.strip() else [])
            for u, r in pairs
        ]  # fmt: skip
        self.dropped, self.turns = turns[:dropped], turns[dropped:]

    # -- replies ---------------------------------------------------------------------------------
    def _prompt_ids(self, user_text: str, user_ids: list[int]) -> list[int]:
        """The tokens the reply continues: the context and the new user turn."""
        if self.template is not None:
            return self._render_ids(user_text)
        return with_bos(self.loaded.tokenizer, self.context_ids_raw() + user_ids)

    def context_ids_raw(self) -> list[int]:
        """Turn-format layout: the system segment and every turn's segments, without BOS."""
        ids = list(self._system_ids)
        for t in self.turns:
            ids += t.ids
        return ids

    def _fit(self, user_text: str, user_ids: list[int], max_new_tokens: int) -> tuple[list[int], int]:
        """Drop oldest turns until the next reply fits the context → (prompt ids, turns dropped)."""
        dropped = 0
        prompt_ids = self._prompt_ids(user_text, user_ids)
        while self.turns and len(prompt_ids) + max_new_tokens > self.block_size:
            self.dropped.append(self.turns.pop(0))
            dropped += 1
            prompt_ids = self._prompt_ids(user_text, user_ids)
        return prompt_ids, dropped

    def start(
        self, user_text: str, config: GenerationConfig, *, top_logprobs: int = 0, load_s: float = 0.0
    ) -> tuple[TextStream, int]:
        """Begin the reply to ``user_text`` → (its stream, turns dropped to make room)."""
        if not user_text.strip():
            raise UsageError("the message is empty", hint="type something for the model to answer")
        user_ids = [] if self.template is not None else self.loaded.tokenizer.encode(self.format.user_text(user_text))
        prompt_ids, dropped = self._fit(user_text, user_ids, config.max_new_tokens)
        needed = min(len(prompt_ids) + config.max_new_tokens - 1, self.block_size)
        if self._cache.max_len < needed:  # grow: a new cache, and the prefix is run again once
            size = min(self.block_size, max(needed, 2 * self._cache.max_len))
            self._cache = self.loaded.model.new_cache(size)
            self._cache_ids = []
        reuse = 0
        for a, b in zip(self._cache_ids, prompt_ids[: len(prompt_ids) - 1]):  # keep at least one token to run
            if a != b:
                break
            reuse += 1
        stops = config.stop if self.template is not None else tuple(dict.fromkeys((*config.stop, *self.format.stops)))
        stream = TextStream(
            self.loaded, user_text, config.replace(stop=stops), top_logprobs=top_logprobs,
            prompt_ids=prompt_ids, cache=self._cache, cached=reuse, load_s=load_s,
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
        reply_ids = []
        if self.template is None and reply.strip():
            reply_ids = self.loaded.tokenizer.encode(reply.rstrip() + self.format.end)
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
        """Tokens of the context the model sees: at most its context size (beyond it, the oldest tokens
        slide out of the window)."""
        return min(len(self.context_ids), self.block_size)
