"""Logits processors and token selection, as a ladder of small pure functions.

A processor is a frozen dataclass called as ``processor(logits, ctx) -> logits`` on the next-token
logits of one sequence, a float tensor (V,). `build_processors` returns only the stages the config
switches on, always in the fixed order of ``config.PROCESSOR_ORDER`` (llmbuilder's order: temperature
first, then the repetition penalty, then EOS suppression for ``min_new_tokens``, then top-k and top-p,
which run only when sampling). `select` picks the token: argmax (first index on ties) when greedy, else
``softmax`` then ``torch.multinomial`` with an explicit ``torch.Generator`` (never the global RNG).

Per token, little costs more than a pass over the vocabulary (49,152 to 128,256 ids for real models):
top-p sorts only the tokens still in play (after top-k, about k), a whole vocabulary through integer
keys; sampling on the CPU reproduces ``torch.multinomial`` without its V exponential draws. Both give
the plain formulations' results bit for bit (tests compare them on every path).

Formulas follow llmbuilder 2.0.0 exactly (see the format reference, §4.3):
  * temperature: z / T (also in greedy mode, as llmbuilder does; T = 0 means greedy and skips it)
  * repetition penalty θ, once per distinct id seen in the whole sequence: z·θ if z < 0 else z/θ
  * top-k: logits strictly below the k-th largest become -inf (ties at the threshold survive)
  * top-p: in descending order, a token is kept iff the probability mass strictly before it is <= p
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

from ..config import GenerationConfig
from ..errors import GenerationError

__all__ = [
    "SamplingContext",
    "Processor",
    "Temperature",
    "RepetitionPenalty",
    "SuppressTokens",
    "MinNewTokens",
    "TopK",
    "TopP",
    "build_processors",
    "apply_processors",
    "probabilities",
    "select",
]

NEG_INF = float("-inf")
INF = float("inf")


class SamplingContext:
    """Per-sequence state the processors read: which ids were seen and how many tokens are new."""

    def __init__(self, vocab_size: int, device: torch.device | str, ids: Sequence[int] = ()) -> None:
        self.seen = torch.zeros(vocab_size, dtype=torch.bool, device=device)  # (V,) ids in the sequence
        self.new_tokens = 0
        if len(ids):
            self.seen[torch.tensor(list(ids), dtype=torch.long, device=device)] = True

    def add(self, token_id: int) -> None:
        self.seen[token_id] = True
        self.new_tokens += 1


class Processor(Protocol):
    name: str

    def __call__(self, logits: torch.Tensor, ctx: SamplingContext) -> torch.Tensor: ...


@dataclass(frozen=True)
class Temperature:
    value: float  # > 0
    name: str = "temperature"

    def __call__(self, logits: torch.Tensor, ctx: SamplingContext) -> torch.Tensor:
        return logits / self.value


@dataclass(frozen=True)
class RepetitionPenalty:
    penalty: float  # > 0; 1.0 is a no-op and is never built
    name: str = "repetition_penalty"

    def __call__(self, logits: torch.Tensor, ctx: SamplingContext) -> torch.Tensor:
        penalised = torch.where(logits < 0, logits * self.penalty, logits / self.penalty)
        return torch.where(ctx.seen, penalised, logits)


@dataclass(frozen=True)
class SuppressTokens:
    """Ids that can never be produced (e.g. model rows beyond the tokenizer's vocabulary)."""

    start: int  # ids >= start are banned
    name: str = "vocab_limit"

    def __call__(self, logits: torch.Tensor, ctx: SamplingContext) -> torch.Tensor:
        out = logits.clone()
        out[self.start :] = NEG_INF
        return out


@dataclass(frozen=True)
class MinNewTokens:
    """Block the EOS ids while fewer than ``min_new_tokens`` new tokens exist. (If EOS is the only token
    left, the step has no token to give and `select` raises a clear `GenerationError`.)"""

    min_new_tokens: int
    eos_ids: tuple[int, ...]
    name: str = "min_new_tokens"

    def __call__(self, logits: torch.Tensor, ctx: SamplingContext) -> torch.Tensor:
        if ctx.new_tokens >= self.min_new_tokens or not self.eos_ids:
            return logits
        out = logits.clone()
        out[list(self.eos_ids)] = NEG_INF
        return out


@dataclass(frozen=True)
class TopK:
    k: int  # > 0
    name: str = "top_k"

    def __call__(self, logits: torch.Tensor, ctx: SamplingContext) -> torch.Tensor:
        k = min(self.k, logits.shape[-1])
        kth = torch.topk(logits, k).values[-1]  # the k-th largest value
        return logits.masked_fill(logits < kth, NEG_INF)  # strictly below: ties survive


@dataclass(frozen=True)
class TopP:
    p: float  # 0 < p < 1
    name: str = "top_p"

    def __call__(self, logits: torch.Tensor, ctx: SamplingContext) -> torch.Tensor:
        top = float(logits.max())  # NaN if any logit is NaN
        if not NEG_INF < top < INF:  # NaN, +inf or nothing finite: softmax is NaN, nothing goes
            return logits
        in_play = logits if float(logits.min()) > NEG_INF else logits[logits > NEG_INF]  # (n,)
        z = _descending(in_play)  # (n,) the tokens still in play, most likely first
        n = z.shape[0]
        # The full sort (`_top_p_sorted`) takes the softmax of all V sorted logits, whose -inf tail adds
        # exact zeros: padded with -inf to a multiple of 64 (or to V), the vectorised sums add the same
        # numbers in the same lanes, so the cumulative mass is the same bit for bit.
        width = min(logits.shape[-1], n + (-n) % 64)
        padded = torch.nn.functional.pad(z, (0, width - n), value=NEG_INF)  # (width,)
        cumulative = torch.cumsum(torch.softmax(padded, dim=-1)[:n], dim=-1)  # (n,) non-decreasing
        kept = 1 + int((cumulative[:-1] <= self.p).sum())  # token i stays iff the mass before it <= p
        if kept < n and bool(z[kept] == z[kept - 1]):
            # The cut falls inside a run of equal logits: which of them stay is the full sort's choice.
            return _top_p_sorted(logits, self.p)
        return logits.masked_fill(logits < z[kept - 1], NEG_INF)


def _top_p_sorted(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Top-p by a full sort of the vocabulary (V,): the plain formulation, used on ties at the cut."""
    sorted_logits, order = torch.sort(logits, descending=True)  # (V,), (V,)
    cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)  # (V,)
    remove = cumulative > p
    remove[1:] = remove[:-1].clone()  # shift right: a token goes when the mass *before* it > p
    remove[0] = False  # the most likely token always stays
    out = logits.clone()
    out[order[remove]] = NEG_INF
    return out


def _descending(values: torch.Tensor) -> torch.Tensor:
    """The same values (n,) (no NaN), largest first; the order among equal values is unspecified.

    float32 is sorted through its bits as int32 keys that order like the floats: torch sorts those
    ascending by radix, about 6x faster than it sorts 49,152 float32 values (torch 2.13)."""
    if values.dtype != torch.float32:
        return torch.sort(values, descending=True).values
    bits = values.view(torch.int32)  # (n,)
    keys = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # negative floats: magnitude order reversed
    keys = torch.sort(keys).values.flip(0)  # (n,) descending
    return torch.where(keys < 0, keys ^ 0x7FFFFFFF, keys).view(torch.float32)


def build_processors(
    config: GenerationConfig, *, eos_ids: Sequence[int] = (), vocab_limit: int | None = None
) -> list[Processor]:
    """The active processors for ``config``, in the fixed documented order.

    ``vocab_limit``: ids at or above it are banned first (a model whose embedding has more rows than
    its tokenizer has pieces must never emit an id the tokenizer cannot decode).
    """
    procs: list[Processor] = []
    if vocab_limit is not None:
        procs.append(SuppressTokens(vocab_limit))
    if config.temperature != 0.0 and config.temperature != 1.0:
        procs.append(Temperature(config.temperature))
    if config.repetition_penalty != 1.0:
        procs.append(RepetitionPenalty(config.repetition_penalty))
    if config.min_new_tokens > 0 and eos_ids and config.stops_at_eos:
        procs.append(MinNewTokens(config.min_new_tokens, tuple(eos_ids)))
    if not config.greedy:
        if config.top_k is not None:
            procs.append(TopK(config.top_k))
        if config.top_p is not None and config.top_p < 1.0:
            procs.append(TopP(config.top_p))
    return procs


def apply_processors(
    logits: torch.Tensor,
    procs: Sequence[Processor],
    ctx: SamplingContext,
    observe: Callable[[str, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Run the processors in order. ``observe(stage, logits)``, if given, sees the raw logits (stage
    ``"raw"``) and the result of every processor (stage = its name): the ``--top-logprobs`` view."""
    if observe is not None:
        observe("raw", logits)
    for proc in procs:
        logits = proc(logits, ctx)
        if observe is not None:
            observe(proc.name, logits)
    return logits


def _no_token(logits: torch.Tensor) -> GenerationError:
    if bool(torch.isnan(logits).any()):
        return GenerationError(
            "the model produced NaN scores for the next token",
            hint="run it in float32 (--dtype float32); if that fails too, the weights are damaged",
        )
    return GenerationError(
        "every token was ruled out for the next step (all scores are -inf)",
        hint="loosen the settings (min tokens, top-k, top-p), or check the model's weights",
    )


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """softmax over the processed logits; removed tokens (-inf) get probability 0.

    Edge cases always give a valid distribution or a clear error: tokens at +inf (a temperature so
    small that z / T overflowed) share all the mass equally; NaN scores, or every token at -inf, raise
    `GenerationError`.
    """
    probs = torch.softmax(logits, dim=-1)
    if math.isfinite(float(probs.sum())):  # entries are in [0, 1] or NaN: a finite sum means no NaN
        return probs
    top = logits == float("inf")
    if bool(top.any()) and not bool(torch.isnan(logits).any()):
        return top.to(probs.dtype) / top.sum()  # a point mass (shared by ties) on the +inf tokens
    raise _no_token(logits)


def select(logits: torch.Tensor, greedy: bool, generator: torch.Generator | None) -> int:
    """The next token id from processed logits (V,); `GenerationError` when no token can be chosen."""
    if greedy:
        value, token = torch.max(logits, dim=-1)  # the first of equal maxima (NaN would win: checked)
        if not float(value) > NEG_INF:  # NaN or -inf
            raise _no_token(logits)
        return int(token)
    return _multinomial(probabilities(logits), generator)


def _multinomial(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """``torch.multinomial(probs, 1, generator=generator)`` for probabilities (V,): the same token and
    the same generator state afterwards, at a fraction of the cost on the CPU.

    torch draws q_i ~ Exp(1) for every id, each as -log1p(-u_i) from one 64-bit word w_i with
    u_i = (w_i mod 2^53) / 2^53, and picks argmax(p_i / q_i) (the first on ties). Here the V words are
    drawn the same way (the generator moves exactly as before) but q_i is computed only for the ids
    with p_i > 0: the others cannot win. (One difference, once in 2^53 draws per id: where torch's u_i
    is 0 for an id with p_i = 0, its 0/0 = NaN wins the argmax and torch returns that impossible id.)"""
    if probs.device.type != "cpu" or probs.dtype != torch.float32:
        return int(torch.multinomial(probs, 1, generator=generator))
    words = torch.empty(probs.shape, dtype=torch.int64, device=probs.device)  # (V,)
    words.random_(generator=generator)  # one 64-bit word per id, as torch draws them
    ids = probs.nonzero().squeeze(-1)  # (n,) ascending
    u = (words[ids] & (2**53 - 1)).double() * 2.0**-53  # (n,) uniform in [0, 1), as torch's
    q = torch.log1p(-u).neg().float()  # (n,) Exp(1), as torch's
    return int(ids[torch.argmax(probs[ids] / q)])
