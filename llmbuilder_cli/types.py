"""Plain result types shared by the engine, the API and the CLI: stream chunks, stats, finish reasons.

Standard library only, so the CLI can type-check and render them without importing torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

__all__ = ["FinishReason", "GenerationStats", "TokenProbs", "StreamChunk", "GenerationResult", "footer_text"]


class FinishReason(str, Enum):
    """Why generation ended."""

    EOS = "eos"  # the model produced its end-of-sequence token (or an output constraint was complete)
    STOP = "stop"  # a stop string appeared; the text is cut before it
    LENGTH = "length"  # max_new_tokens were generated
    CANCELLED = "cancelled"  # the caller stopped it (Ctrl-C)

    def __str__(self) -> str:  # "eos", not "FinishReason.EOS"
        return self.value


@dataclass
class GenerationStats:
    """Numbers about one generation. Times are seconds; rates are tokens per second."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    load_s: float = 0.0  # model + tokenizer load (0 when an already loaded model was reused)
    prefill_s: float = 0.0  # time to run the prompt through the model
    time_to_first_token_s: float = 0.0  # from the start of generation to the first new token
    decode_s: float = 0.0  # time for the tokens after the first
    total_s: float = 0.0  # whole generation (prefill + decode + sampling + detokenization)
    seed: int | None = None  # the seed actually used when sampling (None for greedy)
    window_slides: int = 0  # steps that ran on a cropped window because the sequence exceeded the context
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1

    @property
    def tokens_per_s(self) -> float:
        """Decode speed: tokens after the first one, per second of decoding (0 when not measurable)."""
        if self.new_tokens <= 1 or self.decode_s <= 0:
            return 0.0
        return (self.new_tokens - 1) / self.decode_s

    @property
    def prompt_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tokens_per_s"] = round(self.tokens_per_s, 3)
        d["prompt_tokens_per_s"] = round(self.prompt_tokens_per_s, 3)
        return d


@dataclass
class TokenProbs:
    """How one token was chosen (``--top-logprobs``): its probability in the final distribution and
    the most likely tokens after each stage (``raw`` logits, then each active processor in order)."""

    token_id: int
    token: str  # the token decoded on its own (may be part of a character or word)
    prob: float  # probability of the chosen token after all processors
    stages: list[tuple[str, list[tuple[int, str, float]]]]  # (stage, [(id, text, prob), ...])

    @property
    def logprob(self) -> float:
        import math

        return math.log(self.prob) if self.prob > 0 else float("-inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "token": self.token,
            "prob": self.prob,
            "logprob": self.logprob if self.prob > 0 else None,
            "stages": [
                {"stage": name, "top": [{"token_id": i, "token": t, "prob": p} for i, t, p in top]}
                for name, top in self.stages
            ],
        }


@dataclass
class StreamChunk:
    """A piece of generated text.

    ``text`` may be empty (a token that completes no character yet, or text held back while it could be
    the start of a stop string). The last chunk of a stream has ``finish_reason`` and ``stats`` set.
    """

    text: str
    token_id: int | None
    index: int  # 0-based index of the new token this chunk belongs to (-1 for a final flush)
    finish_reason: FinishReason | None = None
    stats: GenerationStats | None = None
    probs: TokenProbs | None = None  # only with top_logprobs > 0


@dataclass
class GenerationResult:
    """Everything about one finished generation."""

    prompt: str  # the prompt as given
    prompt_text: str  # the prompt as the tokenizer decodes it (llmbuilder's normalised form)
    text: str  # the continuation only (cut before a stop string)
    prompt_ids: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)  # new ids (including a final EOS id)
    finish_reason: FinishReason = FinishReason.LENGTH
    stats: GenerationStats = field(default_factory=GenerationStats)
    token_probs: list[TokenProbs] = field(default_factory=list)  # one per new token, with top_logprobs > 0

    @property
    def full_text(self) -> str:
        """What llmbuilder's generator returns: the decoded prompt followed by the continuation."""
        return self.prompt_text + self.text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the generation part of ``--json`` output)."""
        return {
            "prompt": self.prompt,
            "prompt_text": self.prompt_text,
            "text": self.text,
            "full_text": self.full_text,
            "prompt_token_ids": list(self.prompt_ids),
            "token_ids": list(self.token_ids),
            "finish_reason": self.finish_reason.value,
            "stats": self.stats.to_dict(),
            **({"token_probs": [t.to_dict() for t in self.token_probs]} if self.token_probs else {}),
        }


def footer_text(chunk: StreamChunk, block_size: int | None = None) -> str:
    """The one-line summary printed on stderr after a generation (from its last chunk)."""
    st = chunk.stats
    if st is None:
        return f"[finish: {chunk.finish_reason}]"
    parts = [
        f"{st.new_tokens} token{'' if st.new_tokens == 1 else 's'}",
        f"finish: {chunk.finish_reason}",
        f"first token {st.time_to_first_token_s * 1000:.0f} ms",
    ]
    if st.tokens_per_s:
        parts.append(f"{st.tokens_per_s:.1f} tok/s")
    if st.seed is not None:
        parts.append(f"seed {st.seed}")
    if st.window_slides:
        window = f"sliding window of {block_size}" if block_size else "sliding window"
        parts.append(f"{window} for {st.window_slides} step{'' if st.window_slides == 1 else 's'}")
    return "[" + " · ".join(parts) + "]"
