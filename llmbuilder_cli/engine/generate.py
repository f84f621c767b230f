"""The generation loop, in two thin layers.

`generate_tokens` yields token ids: it runs the prompt through the model (prefill), then decodes one token
per step with the KV cache, applies the processors and picks each token. It follows llmbuilder's context
policy exactly: while the running sequence fits the block size P the cache makes each step cost one
token; once it is longer, each step feeds the **last P tokens at positions 0..P-1** (llmbuilder's sliding
window), which changes every position, so those steps are full forwards of the window.

`TextStream` wraps it for one prompt: encoding (a fresh prompt starts with the tokenizer's BOS when its
``add_bos`` says so), seeding, incremental detokenization, stop strings (cut before the match, partial
matches held back), the finish reason and the stats. Iterating it yields
`StreamChunk`s; the last one carries ``finish_reason`` and ``stats``. `cancel()` ends it early (Ctrl-C).
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterator, Sequence

import torch

from ..config import GenerationConfig
from ..errors import ConfigError, GenerationError, UsageError
from ..types import FinishReason, GenerationResult, GenerationStats, StreamChunk, TokenProbs
from .constrain import ConstraintMask
from .loaded import LoadedModel
from .sampling import SamplingContext, apply_processors, build_processors, probabilities, select
from .tokenizers.tokenizer import StreamDecoder, Tokenizer

# Any model of engine/models (same forward/new_cache interface) and the KV cache it makes.
Model = Any
KVCache = Any

__all__ = ["TokenGenerator", "StopMatcher", "TextStream", "new_seed", "with_bos"]

_MAX_SEED = 2**63 - 1


def new_seed() -> int:
    """A fresh random seed (reported in the stats so a run can be repeated)."""
    return int.from_bytes(os.urandom(8), "little") & _MAX_SEED


class TokenGenerator:
    """Iterator of new token ids for one sequence (no text, no stop strings, no timing)."""

    def __init__(
        self,
        model: Model,
        prompt_ids: Sequence[int],
        config: GenerationConfig,
        *,
        eos_ids: Sequence[int] = (),
        vocab_limit: int | None = None,
        generator: torch.Generator | None = None,
        trace_top: int = 0,
        cache: KVCache | None = None,
        cached: int = 0,
        constraint: ConstraintMask | None = None,
    ) -> None:
        if not prompt_ids:
            raise UsageError("the prompt is empty", hint="give some text to continue")
        self.model = model
        self.seq: list[int] = list(prompt_ids)  # prompt + generated so far
        self.config = config
        if config.eos_token_id is not None and config.eos_token_id >= model.config.vocab_size:
            raise ConfigError(
                f"eos_token_id {config.eos_token_id} is not a token of this model (its ids are 0 to "
                f"{model.config.vocab_size - 1})",
                hint="pass an id from the model's tokenizer, or None for the tokenizer's own",
                field="eos_token_id",
            )
        eos_ids = config.eos_ids_for(eos_ids)  # the tokenizer's, eos_token_id instead, or none at all
        self.eos_ids = frozenset(eos_ids)
        self.generator = generator
        self.processors = build_processors(config, eos_ids=eos_ids, vocab_limit=vocab_limit)
        self.constraint = constraint  # runs first (after the vocabulary limit): later stages see valid ids only
        if constraint is not None:
            self.processors.insert(int(vocab_limit is not None), constraint)
        self.window_slides = 0  # steps that ran on the cropped P-token window
        self.trace_top = trace_top  # > 0: record the top tokens after each stage (see last_trace)
        self.last_trace: tuple[float, list[tuple[str, list[tuple[int, float]]]]] | None = None
        # A cache may be handed in (a chat keeps one across turns): it must hold the keys and values of
        # prompt_ids[:cached] at positions 0..cached-1 and have room for the whole block.
        if cache is not None and cache.max_len < min(len(self.seq) + config.max_new_tokens - 1, model.config.block_size):
            raise ValueError("the given cache is too small for this generation")
        if not 0 <= cached <= (len(self.seq) - 1 if cache is not None else 0):
            raise ValueError(f"cached={cached} must leave at least one prompt token to run")
        self._cache = cache
        self._cached = cached  # how many leading tokens of self.seq are in the cache
        self._prompt_len = len(self.seq)
        self._ready: torch.Tensor | None = None  # logits (V,) a batched step computed for the next token
        with torch.inference_mode():
            self._ctx = SamplingContext(model.config.vocab_size, model.device, self.seq)

    @torch.inference_mode()
    def _next_logits(self) -> torch.Tensor:
        """Logits (V,) for the token after ``self.seq``."""
        if self._ready is not None:  # a batched step (engine/batching.py) already ran this sequence
            logits, self._ready = self._ready, None
            return logits
        P = self.model.config.block_size
        dev = self.model.device
        if len(self.seq) <= P:
            self._new_cache()
            new = torch.tensor([self.seq[self._cached :]], dtype=torch.long, device=dev)  # (1, T)
            logits = self.model.forward(new, start=self._cached, cache=self._cache)  # (1, V)
            self._cached = len(self.seq)
        else:
            # llmbuilder's sliding window: the last P tokens, positions restart at 0; no cache is valid.
            self.window_slides += 1
            window = torch.tensor([self.seq[-P:]], dtype=torch.long, device=dev)  # (1, P)
            logits = self.model.forward(window)  # (1, V)
        return logits[0].float()  # sampling runs in float32 whatever the model's dtype

    def _new_cache(self) -> KVCache:
        if self._cache is None:
            self._cache = self.model.new_cache(len(self.seq) + self.config.max_new_tokens - 1)
        return self._cache

    @torch.inference_mode()
    def _pick(self, logits: torch.Tensor) -> int:
        if not self.trace_top:
            logits = apply_processors(logits, self.processors, self._ctx)
            token = select(logits, self.config.greedy, self.generator)
        else:
            stages: list[tuple[str, list[tuple[int, float]]]] = []
            n = min(self.trace_top, logits.shape[-1])

            def observe(stage: str, z: torch.Tensor) -> None:
                top = torch.topk(probabilities(z), n)  # values, indices: (n,)
                kept = [(int(i), float(v)) for v, i in zip(top.values, top.indices) if float(v) > 0.0]
                stages.append((stage, kept))  # tokens a filter removed (probability 0) are not listed

            logits = apply_processors(logits, self.processors, self._ctx, observe)
            token = select(logits, self.config.greedy, self.generator)
            self.last_trace = (float(probabilities(logits)[token]), stages)
        if self.constraint is not None:
            self.constraint.advance(token)
        self._ctx.add(token)
        return token

    @property
    def cache(self) -> KVCache | None:
        return self._cache

    @property
    def cached(self) -> int:
        """Leading tokens of ``seq`` whose keys and values are in ``cache`` (valid for reuse)."""
        return self._cached

    def wants_step(self) -> bool:
        """Whether the next token is one cached decode step: the prompt is in the cache, every token but
        the last is too, the sequence fits the block and has tokens left to make. Such steps of several
        sequences can run as one batched forward (`feed`)."""
        seq = self.seq
        return (
            self._cache is not None
            and self._cached == len(seq) - 1
            and len(seq) <= self.model.config.block_size  # its position len(seq)-1 is inside the block
            and len(seq) - self._prompt_len < self.config.max_new_tokens
            and (len(seq) == self._prompt_len or seq[-1] not in self.eos_ids)
            and self._ready is None
        )

    def wants_prefill(self) -> bool:
        """Whether the next token is the prompt's run into the cache (nothing generated yet, the prompt fits
        the block): such runs of several sequences can go as one packed prefill (`prefill_input`, `feed`)."""
        return (self._ready is None and len(self.seq) == self._prompt_len
                and len(self.seq) <= self.model.config.block_size)

    def prefill_input(self) -> tuple[list[int], int, KVCache]:
        """What the prompt's run takes: the tokens not in the cache yet, the position of the first, and the
        cache (allocated here if needed; its allocation errors are the ones this sequence alone would raise)."""
        return self.seq[self._cached :], self._cached, self._new_cache()

    @torch.inference_mode()
    def reuse_prefix(self, source: "TokenGenerator", n: int) -> None:
        """Copy the keys and values of the first ``n`` tokens from ``source``, whose sequence starts with the
        same ``n`` tokens and holds them in its cache; the prompt's run then starts at position ``n``.
        (Caches of engine/models lay out keys and values as (L, B, heads, positions, D).)"""
        if not (self.wants_prefill() and 0 < n < len(self.seq) and n <= source.cached
                and source.seq[:n] == self.seq[:n]):
            raise ValueError("the source does not hold that prefix of this prompt")
        cache, src = self._new_cache(), source.cache
        cache.k[..., :n, :].copy_(src.k[..., :n, :])
        cache.v[..., :n, :].copy_(src.v[..., :n, :])
        self._cached = n

    def feed(self, logits: torch.Tensor) -> None:
        """Hand in the logits (V,) of the next token, computed by a batched step (or a packed prefill) that
        also wrote the keys and values of ``seq[self.cached:]`` into this sequence's cache; the next
        iteration uses them."""
        self._ready = logits
        self._cached = len(self.seq)

    def __iter__(self) -> Iterator[int]:
        for _ in range(self.config.max_new_tokens):
            token = self._pick(self._next_logits())
            self.seq.append(token)
            yield token
            if token in self.eos_ids or self.finished_constraint:
                return

    @property
    def finished_constraint(self) -> bool:
        """Whether the output constraint is complete (it took its end-of-sequence token, or nothing more can
        follow the text): generation ends."""
        return self.constraint is not None and self.constraint.done


def with_bos(tokenizer: Tokenizer, ids: Sequence[int]) -> list[int]:
    """``ids`` of a fresh sequence, with the tokenizer's BOS in front when it adds one and it is not there."""
    ids = list(ids)
    bos = tokenizer.bos_id
    if tokenizer.add_bos and bos is not None and (not ids or ids[0] != bos):
        ids.insert(0, bos)
    return ids


class StopMatcher:
    """Cuts streamed text before the first stop string; holds back text that may start one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add text → (text safe to emit now, whether a stop string was found)."""
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        hold = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(s[:n]):
                    hold = n
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class TextStream:
    """One generation as a stream of text chunks. Iterate it once."""

    def __init__(
        self,
        loaded: LoadedModel,
        prompt: str,
        config: GenerationConfig,
        *,
        load_s: float = 0.0,
        top_logprobs: int = 0,
        prompt_ids: Sequence[int] | None = None,
        cache: KVCache | None = None,
        cached: int = 0,
    ) -> None:
        """``prompt_ids`` replaces encoding ``prompt`` (a chat builds its context from token segments);
        ``cache``/``cached`` reuse keys and values already computed for ``prompt_ids[:cached]``."""
        if not isinstance(prompt, str):
            raise UsageError(f"the prompt must be text, not {type(prompt).__name__}", hint="pass a string")
        tok = loaded.tokenizer
        self.loaded = loaded
        self.prompt = prompt
        self.config = config
        self.prompt_ids: list[int] = list(prompt_ids) if prompt_ids is not None else tok.encode(prompt)
        if not self.prompt_ids:
            raise UsageError(
                "the prompt is empty" + (" after tokenization" if prompt.strip() else ""),
                hint="give some text for the model to continue",
            )
        if prompt_ids is None:
            self.prompt_ids = with_bos(tok, self.prompt_ids)
        self.prompt_text = tok.decode(self.prompt_ids)
        self.token_ids: list[int] = []
        self.text_parts: list[str] = []
        self.finish_reason: FinishReason | None = None
        model = loaded.model
        seed = None if config.greedy else (config.seed if config.seed is not None else new_seed())
        generator = None
        if seed is not None:
            generator = torch.Generator(device=model.device)
            generator.manual_seed(seed)
        vocab_limit = tok.vocab_size if tok.vocab_size < model.config.vocab_size else None
        if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) or not 0 <= top_logprobs <= 100:
            raise UsageError(f"top_logprobs must be a whole number from 0 to 100 (got {top_logprobs!r})",
                             hint="use 5 for a readable view, 0 to turn it off")
        self.token_probs: list[TokenProbs] = []
        constraint = None if config.constraint is None else ConstraintMask(config.constraint, tok, model.config.vocab_size)
        self._tokens = TokenGenerator(
            model, self.prompt_ids, config, eos_ids=tok.eos_ids, vocab_limit=vocab_limit, generator=generator,
            trace_top=top_logprobs, cache=cache, cached=cached, constraint=constraint,
        )
        self._decoder = StreamDecoder(tok, self.prompt_ids)
        self._stop = StopMatcher(config.stop) if config.stop else None
        self.stats = GenerationStats(
            prompt_tokens=len(self.prompt_ids),
            load_s=load_s,
            seed=seed,
            device=str(loaded.device),
            dtype=str(model.dtype).replace("torch.", ""),
            threads=torch.get_num_threads(),
        )
        self._t0 = 0.0
        self._t_first = 0.0
        self._started = False

    @property
    def tokens(self) -> TokenGenerator:
        """The underlying token generator (its ``seq``, ``cache`` and ``cached`` let a chat reuse work)."""
        return self._tokens

    @property
    def processors(self) -> list[str]:
        return [p.name for p in self._tokens.processors]

    @property
    def context_used(self) -> int:
        return min(len(self._tokens.seq), self.loaded.block_size)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def start_clock(self) -> None:
        """Start timing now (before iterating): a batched prefill runs the prompt before the first
        ``next()``, and its time belongs to this stream's time to first token."""
        self._t0 = self._t0 or time.perf_counter()

    def _emit(self, text: str) -> str:
        if text:
            self.text_parts.append(text)
        return text

    def __iter__(self) -> Iterator[StreamChunk]:
        if self._started:
            raise RuntimeError("a TextStream can be iterated only once")
        self._started = True
        self._t0 = self._t0 or time.perf_counter()
        eos_ids = self._tokens.eos_ids
        tok_eos = self.loaded.tokenizer.eos_ids  # what ends a constrained output (with ignore_eos too)
        try:
            for index, token in enumerate(self._tokens):
                if index == 0:
                    self._t_first = time.perf_counter()
                    self.stats.time_to_first_token_s = self.stats.prefill_s = self._t_first - self._t0
                self.token_ids.append(token)
                probs = self._token_probs(token)
                if token in eos_ids or (token in tok_eos and self._tokens.finished_constraint):
                    self.finish_reason = FinishReason.EOS
                    break
                piece = self._decoder.step(token)
                if self._stop is not None:
                    piece, stopped = self._stop.feed(piece)
                    if stopped:
                        self.finish_reason = FinishReason.STOP
                        yield self._finish(self._emit(piece), token, index, probs)
                        return
                yield StreamChunk(self._emit(piece), token, index, probs=probs)
        except RuntimeError as exc:  # device errors, out of memory
            raise GenerationError(f"generation failed: {str(exc).splitlines()[0] if str(exc) else exc!r}",
                                  hint="try --device cpu or a shorter --max-tokens") from exc
        last_probs = self.token_probs[-1] if self.token_probs and self.finish_reason is FinishReason.EOS else None
        if self.finish_reason is None:
            # A complete constrained output whose grammar allows nothing more ends as at EOS (the only token
            # left), without spending a step on it.
            self.finish_reason = FinishReason.EOS if self._tokens.finished_constraint else FinishReason.LENGTH
        last = self.token_ids[-1] if self.token_ids else None
        yield self._finish(self._emit(self._tail()), last, len(self.token_ids) - 1, last_probs)

    def _tail(self) -> str:
        tail = self._decoder.flush()
        if self._stop is None:
            return tail
        piece, stopped = self._stop.feed(tail)
        if stopped:
            self.finish_reason = FinishReason.STOP
            return piece
        return piece + self._stop.flush()

    def _token_probs(self, token: int) -> TokenProbs | None:
        trace = self._tokens.last_trace
        if trace is None:
            return None
        decode = self.loaded.tokenizer.decode
        prob, stages = trace
        tp = TokenProbs(
            token_id=token,
            token=decode([token]),
            prob=prob,
            stages=[(name, [(i, decode([i]), p) for i, p in top]) for name, top in stages],
        )
        self.token_probs.append(tp)
        return tp

    def _finish(self, text: str, token: int | None, index: int, probs: TokenProbs | None = None) -> StreamChunk:
        now = time.perf_counter()
        st = self.stats
        st.new_tokens = len(self.token_ids)
        st.total_s = now - self._t0 if self._t0 else 0.0
        st.decode_s = now - self._t_first if self._t_first else 0.0
        st.window_slides = self._tokens.window_slides
        return StreamChunk(text, token, index, finish_reason=self.finish_reason, stats=st, probs=probs)

    def cancel(self) -> StreamChunk:
        """End an interrupted stream: flush what was held back and report ``cancelled``."""
        self._started = True  # one cancelled before its first token never runs
        tail = self._emit(self._tail())
        self.finish_reason = FinishReason.CANCELLED
        return self._finish(tail, None, len(self.token_ids) - 1)

    def result(self) -> GenerationResult:
        """Run to the end (if not done) and return everything about the generation."""
        if not self._started:
            for _ in self:
                pass
        return GenerationResult(
            prompt=self.prompt,
            prompt_text=self.prompt_text,
            text=self.text,
            prompt_ids=list(self.prompt_ids),
            token_ids=list(self.token_ids),
            finish_reason=self.finish_reason or FinishReason.CANCELLED,
            stats=self.stats,
            token_probs=list(self.token_probs),
        )
