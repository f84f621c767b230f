"""Batched generation: several `TextStream`s decoded together, one forward pass per step for all of them.

`run_streams` keeps up to ``max_active`` streams running. A stream joins alone: its first ``next()`` runs
its prompt through the model (prefill, the one-at-a-time path) and makes its first token. From then on,
each step gathers the streams whose next token is a plain cached decode step
(`TokenGenerator.wants_step`) and runs them as one call of the model's ``decode_step``: the linear
layers see all rows at once, attention reads each row's own key/value cache at its own position. The
logits are handed to each stream (`TokenGenerator.feed`), whose ``next()`` then does everything it does
alone: its own processors, its own ``torch.Generator`` (so a line's sampled tokens depend only on its
own seed), its own max tokens, stop strings and EOS. A stream that finishes leaves and the next prompt
joins in its place (continuous batching), so results come out in the order they finish.

What runs one at a time: a lone stream (a batch of one is the old path exactly), a step past the block
size (llmbuilder's sliding window is a full forward), and a model without ``decode_step`` or whose
``batched_decode`` is false (GPT-2 layouts, dynamic RoPE). A failing batched step (out of memory, say)
falls back to one-at-a-time for that step, so an error belongs to the line that causes it.

``memory_budget`` bounds the key/value caches of the running streams together: a stream joins only if
its cache fits next to the others' (one always runs, whatever its size: its own allocation checks
still apply).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..errors import LLMBuilderError
from ..types import GenerationResult
from .generate import TextStream

__all__ = ["Finished", "cache_bytes_per_position", "run_streams", "supports_batched_decode"]


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
) -> Iterator[Finished]:
    """Generate prompts ``0..count-1`` (``make_stream(i)`` builds the stream of prompt i, or raises an
    `LLMBuilderError` for it) with up to ``max_active`` at once; yield each as it finishes.

    On KeyboardInterrupt the running streams are cancelled and yielded (``cancelled=True``), then the
    interrupt is raised again."""
    if max_active < 1:
        raise ValueError("max_active must be at least 1")
    pending = deque(range(count))
    running: list[_Running] = []
    waiting: tuple[int, TextStream] | None = None  # built, waiting for cache room
    per_position = 0
    try:
        while pending or waiting or running:
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
                if running and memory_budget is not None and sum(r.cache_bytes for r in running) + need > memory_budget:
                    break  # joins when a running stream has finished
                waiting = None
                chunks = iter(stream)
                entry = _Running(index, stream, chunks, need)
                running.append(entry)
                try:
                    chunk = next(chunks)  # prefill and the first token, alone
                except LLMBuilderError as exc:
                    running.remove(entry)
                    yield Finished(index, None, exc)
                    continue
                if chunk.finish_reason is not None:
                    running.remove(entry)
                    yield Finished(index, stream.result())
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
