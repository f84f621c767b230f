"""Batched generation: several `TextStream`s decoded together, one forward pass per step for all of them.

`run_streams` keeps up to ``max_active`` streams running. Prompts that join together are prefilled
together: one call of the model's ``prefill`` runs their tokens packed into one sequence (each token at
its own position, attention per prompt on its own cache), so the linear layers read their weights once
for all of them (`_prefill`). From then on, each step gathers the streams whose next token is a plain
cached decode step (`TokenGenerator.wants_step`) and runs them as one call of the model's
``decode_step``: the linear layers see all rows at once, attention reads each row's own key/value cache
at its own position. The logits are handed to each stream (`TokenGenerator.feed`), whose ``next()`` then
does everything it does alone: its own processors, its own ``torch.Generator`` (so a line's sampled
tokens depend only on its own seed), its own max tokens, stop strings and EOS. A stream that finishes
leaves and the next prompt joins in its place (continuous batching), so results come out in the order
they finish.

Shared prefixes: a joining prompt whose first ``share_prefix`` tokens or more (a system prompt, a few-shot
header) are already in the cache of a running stream copies their keys and values from it and prefills
only the rest; prompts that join together and share such a prefix are prefilled in two rounds, the
first prompt of the group first, the others from its cache. Sources are the running streams' caches
and a small store of the prefixes reuse has copied (`_Prefixes`, the `PREFIXES_KEPT` most recent, each
only its own positions): with continuous batching a shared header usually stays alive in a running
stream, but prompts of equal lengths finish together and the next ones then join with none running, so
the store keeps the header computed once for the whole run. Reuse changes the arithmetic (the
rest runs against cached keys instead of in one causal pass), so its results equal one-at-a-time ones
up to float rounding; without a shared prefix, packing is exact (``engine/prefill.py``: a prompt whose
row count the machine's products would round differently when packed prefills alone instead).

What runs one at a time: a lone stream (a batch of one is the old path exactly), a step past the block
size (llmbuilder's sliding window is a full forward), and a model without ``decode_step``/``prefill``
or whose ``batched_decode`` is false (GPT-2 layouts, dynamic RoPE). A failing batched step or prefill
(out of memory, say) falls back to one-at-a-time for that step, so an error belongs to the line that
causes it.

``memory_budget`` bounds the key/value caches of the running streams together, with the kept shared
prefixes: a stream joins only if its cache fits next to the others' (kept prefixes are dropped, oldest
first, to make room; one stream always runs, whatever its size: its own allocation checks still apply).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..errors import LLMBuilderError
from ..types import GenerationResult
from .generate import TextStream, TokenGenerator
from .prefill import packs_exactly

__all__ = ["Finished", "SHARE_PREFIX", "cache_bytes_per_position", "run_streams", "supports_batched_decode"]

#: Least number of leading tokens a joining prompt must share with a cached sequence to reuse its keys
#: and values: below it, the saved work is smaller than the extra prefill round (about one decode step).
SHARE_PREFIX = 16
PREFIXES_KEPT = 4  # shared prefixes kept after the streams that held them finish (a few MB each)


@dataclass
class Finished:
    """One prompt's outcome: its result, or the error that ended it (then ``result`` is None)."""

    index: int  # position of the prompt in the input
    result: GenerationResult | None
    error: LLMBuilderError | None = None
    cancelled: bool = False


def supports_batched_decode(model: object) -> bool:
    return bool(getattr(model, "batched_decode", False)) and hasattr(model, "decode_step")


def cache_bytes_per_position(model: object) -> int:
    """Bytes one position of one sequence takes in the model's key/value cache (keys and values)."""
    probe = model.new_cache(1)  # type: ignore[attr-defined]
    return 2 * probe.k.numel() * probe.k.element_size()


@dataclass
class _Running:
    index: int
    stream: TextStream
    chunks: Iterator
    cache_bytes: int


def _cache_bytes(stream: TextStream, per_position: int) -> int:
    tokens = stream.tokens
    positions = min(len(stream.prompt_ids) + stream.config.max_new_tokens - 1, tokens.model.config.block_size)
    return positions * per_position


def supports_batched_prefill(model: object) -> bool:
    return supports_batched_decode(model) and hasattr(model, "prefill")


def _shared(a: list[int], b: list[int], limit: int) -> int:
    """Length of the common prefix of ``a`` and ``b``, at most ``limit``."""
    n = 0
    for x, y in zip(a[:limit], b[:limit]):
        if x != y:
            break
        n += 1
    return n


def _best_source(g: TokenGenerator, sources: list[TokenGenerator]) -> tuple[TokenGenerator | None, int]:
    """The cached sequence sharing the longest prefix with ``g``'s prompt (at least one token left to run)."""
    best, length = None, 0
    for s in sources:
        n = _shared(g.seq, s.seq, min(s.cached, len(g.seq) - 1))
        if n > length:
            best, length = s, n
    return best, length


class _Prefix:
    """A shared prefix's tokens and its keys and values, copied out of a cache: ``cache.k``/``cache.v``
    (L, 1, heads, n, D). Looks like a source `TokenGenerator` to `TokenGenerator.reuse_prefix`."""

    def __init__(self, source: TokenGenerator, n: int) -> None:
        self.seq = source.seq[:n]
        self.cached = n
        c = source.cache
        self.cache = self
        self.k = c.k[..., :n, :].clone()  # (L, 1, heads, n, D)
        self.v = c.v[..., :n, :].clone()  # (L, 1, heads, n, D)
        self.nbytes = 2 * self.k.numel() * self.k.element_size()


class _Prefixes:
    """The `PREFIXES_KEPT` prefixes most recently reused, newest last."""

    def __init__(self) -> None:
        self.items: list[_Prefix] = []

    def add(self, source: TokenGenerator, n: int) -> None:
        for p in self.items:
            if p.cached >= n and p.seq[:n] == source.seq[:n]:  # already kept (or a longer one)
                self.items.remove(p)
                self.items.append(p)
                return
        self.items = [p for p in self.items if not (p.cached < n and source.seq[: p.cached] == p.seq)]
        self.items = (self.items + [_Prefix(source, n)])[-PREFIXES_KEPT:]

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.items)


@torch.inference_mode()
def _prefill(model: object, joining: list[TokenGenerator], cached: list, share_prefix: int,
             kept: _Prefixes) -> None:
    """Run the prompts of ``joining`` (streams that have not started) into their caches, packed, and feed
    each its first logits; ``cached`` are sequences whose caches may hold a shared prefix.

    A prompt that packs inexactly (`prefill.packs_exactly`), or whose input cannot be prepared (its cache
    does not fit), is left alone: its own ``next()`` runs it (or raises its error) as it would alone. A
    failing packed call feeds nobody, so each prompt then runs alone and an error stays with its line."""
    sources = [g for g in cached if g.cached > 0] + kept.items
    todo = [g for g in joining if g.wants_prefill()]
    while todo:
        pack: list[TokenGenerator] = []
        fresh: list[TokenGenerator] = []  # packed from their first token: sources for the next round
        later: list[TokenGenerator] = []
        for g in todo:
            source, n = _best_source(g, sources)
            if n < share_prefix and any(_shared(g.seq, f.seq, len(g.seq) - 1) >= share_prefix for f in fresh):
                later.append(g)  # shares a prefix with a prompt of this round: copies it next round
                continue
            try:
                if n >= share_prefix:
                    g.reuse_prefix(source, n)
                    kept.add(source, n)
                ids, start, _ = g.prefill_input()
            except LLMBuilderError:
                continue  # runs alone, where the error is raised for its line
            if start > 0 or packs_exactly(model, len(ids)):
                pack.append(g)
                if start == 0:
                    fresh.append(g)
        if len(pack) > 1 or later or any(g.cached > 0 for g in pack):  # else: alone is the same
            inputs = [g.prefill_input() for g in pack]
            try:
                logits = model.prefill(  # type: ignore[attr-defined]
                    [torch.tensor(ids, dtype=torch.long, device=model.device) for ids, _, _ in inputs],  # (T_s,)
                    [start for _, start, _ in inputs], [cache for _, _, cache in inputs])  # (S, V)
            except (RuntimeError, LLMBuilderError):
                return  # out of memory, say: each prompt runs alone
            for g, row in zip(pack, logits.float()):
                g.feed(row)  # (V,)
            sources += pack
        todo = later


@torch.inference_mode()
def _batched_step(model: object, running: list[_Running]) -> None:
    """One forward for every stream that wants a cached decode step; each gets its logits row."""
    gens = [r.stream.tokens for r in running]
    ids = torch.tensor([g.seq[-1] for g in gens], dtype=torch.long, device=model.device)  # (B,)
    positions = [len(g.seq) - 1 for g in gens]
    logits = model.decode_step(ids, positions, [g.cache for g in gens])  # (B, V)
    for g, row in zip(gens, logits.float()):
        g.feed(row)  # (V,)


def run_streams(
    make_stream: Callable[[int], TextStream],
    count: int,
    *,
    max_active: int,
    memory_budget: int | None = None,
    share_prefix: int | None = None,
) -> Iterator[Finished]:
    """Generate prompts ``0..count-1`` (``make_stream(i)`` builds the stream of prompt i, or raises an
    `LLMBuilderError` for it) with up to ``max_active`` at once; yield each as it finishes.
    ``share_prefix``: least shared leading tokens whose keys and values a joining prompt copies from a
    running one (None, the default: never; `SHARE_PREFIX` is what ``--share-prefix`` uses). Off by
    default because a copied prefix was computed inside another prompt, whose length changes the
    rounding of attention: a line would then depend, in its last bits, on its neighbours.

    On KeyboardInterrupt the running streams are cancelled and yielded (``cancelled=True``), then the
    interrupt is raised again."""
    if max_active < 1:
        raise ValueError("max_active must be at least 1")
    pending = deque(range(count))
    running: list[_Running] = []
    waiting: tuple[int, TextStream] | None = None  # built, waiting for cache room
    per_position = 0
    kept = _Prefixes()
    try:
        while pending or waiting or running:
            joining: list[_Running] = []
            while (pending or waiting) and len(running) < max_active:
                if waiting is None:
                    index = pending.popleft()
                    try:
                        waiting = (index, make_stream(index))
                    except LLMBuilderError as exc:
                        yield Finished(index, None, exc)
                        continue
                index, stream = waiting
                per_position = per_position or cache_bytes_per_position(stream.tokens.model)
                need = _cache_bytes(stream, per_position)
                if running and memory_budget is not None:
                    used = sum(r.cache_bytes for r in running)
                    while kept.items and used + kept.nbytes + need > memory_budget:
                        kept.items.pop(0)  # kept prefixes count against the budget: the oldest goes first
                    if used + need > memory_budget:
                        break  # joins when a running stream has finished
                waiting = None
                entry = _Running(index, stream, iter(stream), need)
                running.append(entry)
                joining.append(entry)
            if joining:
                model = joining[0].stream.tokens.model
                if (len(running) > 1 or kept.items) and supports_batched_prefill(model):
                    for r in joining:
                        r.stream.start_clock()
                    _prefill(model, [r.stream.tokens for r in joining],
                             [r.stream.tokens for r in running if r not in joining],
                             share_prefix if share_prefix is not None else 1 << 62, kept)
                for entry in joining:
                    try:
                        chunk = next(entry.chunks)  # the first token (the prompt is run alone unless it was fed)
                    except LLMBuilderError as exc:
                        running.remove(entry)
                        yield Finished(entry.index, None, exc)
                        continue
                    if chunk.finish_reason is not None:
                        running.remove(entry)
                        yield Finished(entry.index, entry.stream.result())
            if not running:
                continue
            model = running[0].stream.tokens.model
            ready = [r for r in running if r.stream.tokens.wants_step()]
            if len(ready) > 1 and supports_batched_decode(model):
                try:
                    _batched_step(model, ready)
                except RuntimeError:  # e.g. out of memory: no stream was fed, each takes this step alone
                    pass
            for r in list(running):
                try:
                    chunk = next(r.chunks)
                except LLMBuilderError as exc:
                    running.remove(r)
                    yield Finished(r.index, None, exc)
                    continue
                except StopIteration:  # pragma: no cover - a stream always ends with a finish chunk
                    chunk = None
                if chunk is None or chunk.finish_reason is not None:
                    running.remove(r)
                    yield Finished(r.index, r.stream.result())
    except KeyboardInterrupt:
        cancelled, running = running, []
        for r in cancelled:
            r.stream.cancel()
            yield Finished(r.index, r.stream.result(), cancelled=True)
        raise
