"""Constrained decoding: a logits stage that leaves only the tokens that keep the output valid.

`ConstraintMask` wraps one ``llguidance.LLMatcher`` for one generation. Called like the processors of
``sampling.py`` (``mask(logits, ctx) -> logits``), it asks the matcher which ids may come next (a bitmask,
computed on the CPU by llguidance's Rust core) and sets every other id to -inf; ``TokenGenerator`` runs it
first, before temperature, the repetition penalty, top-k and top-p, so those only ever see valid tokens and
greedy decoding takes the best valid one. After each pick `advance` feeds the token to the matcher. Once
the text is complete and may go on, the end-of-sequence ids are among the allowed ones; once nothing more
can follow, `done` is True at once (the end-of-sequence id would be the only choice, so no step is spent
on it) and generation ends, as it does after an end-of-sequence id the constraint took.

The matcher needs every token's bytes: `llg_tokenizer` builds them once per tokenizer (about a second for a
49k vocabulary, then cached): a Hugging Face ``tokenizer.json`` (GGUF vocabularies are rebuilt as one) is
handed over whole; a SentencePiece model is bridged piece by piece (``▁`` is a space, ``<0xNN>`` byte
pieces are that byte, control and unknown pieces are special tokens that never match text).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch

from ..constraint import Constraint, require_llguidance
from ..errors import GenerationError
from .sampling import NEG_INF, SamplingContext
from .tokenizers.tokenizer import Tokenizer

__all__ = ["ConstraintMask", "llg_tokenizer"]

# One llguidance tokenizer per (tokenizer object, mask width): building it walks the whole vocabulary.
_CACHE: "weakref.WeakKeyDictionary[Any, dict[int, Any]]" = weakref.WeakKeyDictionary()


class _SentencePieceVocab:
    """What ``llguidance.TokenizerWrapper`` reads from a tokenizer: each id's bytes, the special ids, EOS/BOS
    and an encode function."""

    def __init__(self, sp: Any, eos_id: int) -> None:
        tokens: list[bytes] = []
        special: list[int] = []
        for i in range(int(sp.get_piece_size())):
            piece = str(sp.id_to_piece(i))
            if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                tokens.append(piece.encode("utf-8"))
                special.append(i)
            elif sp.is_byte(i):  # "<0x0A>"
                tokens.append(bytes([int(piece[3:5], 16)]))
            else:
                tokens.append(piece.replace("\u2581", " ").encode("utf-8"))
        self.tokens = tokens
        self.special_token_ids = special
        self.eos_token_id = eos_id
        bos = int(sp.bos_id())
        self.bos_token_id = bos if bos >= 0 else None
        skip = set(special)
        self._ids = {b: i for i, b in reversed(list(enumerate(tokens))) if i not in skip and b}  # bytes -> lowest id
        self._longest = max(map(len, self._ids), default=1)

    def __call__(self, text: str) -> list[int]:
        """Ids whose bytes are exactly ``text``'s, longest piece first. (SentencePiece's own encode adds a
        leading space and normalises, so its ids would not spell these bytes.) Bytes no piece spells are
        left out: no token can produce them, so the constraint never allows them."""
        data, ids, i = text.encode("utf-8"), [], 0
        while i < len(data):
            for n in range(min(self._longest, len(data) - i), 0, -1):
                tid = self._ids.get(data[i : i + n])
                if tid is not None:
                    ids.append(tid)
                    i += n
                    break
            else:
                i += 1
        return ids


def llg_tokenizer(tokenizer: Tokenizer, n_vocab: int) -> Any:
    """llguidance's view of ``tokenizer`` with masks ``n_vocab`` wide (the model's vocabulary: ids past the
    tokenizer's are never allowed). Cached per tokenizer object."""
    llg = require_llguidance()
    per_tok = _CACHE.setdefault(tokenizer, {})
    if n_vocab in per_tok:
        return per_tok[n_vocab]
    eos = list(tokenizer.eos_ids)
    if not eos:
        raise GenerationError("constrained output needs a tokenizer with an end-of-sequence token, and this one has none",
                              hint="use the model's own tokenizer, or leave out the output constraint")
    sp = getattr(tokenizer, "processor", None)  # SentencePieceTokenizer's sentencepiece processor
    hf = getattr(tokenizer, "backend", None)  # HFTokenizer's tokenizers.Tokenizer
    try:
        if sp is not None:
            lt = llg.LLTokenizer(llg.TokenizerWrapper(_SentencePieceVocab(sp, eos[0])), n_vocab=n_vocab, eos_token=eos)
        elif hf is not None:
            lt = llg.LLTokenizer(hf.to_str(), n_vocab=n_vocab, eos_token=eos)
        else:
            raise GenerationError(f"constrained output does not support {tokenizer.kind} tokenizers",
                                  hint="use a tokenizer.json or a SentencePiece tokenizer.model")
    except (ValueError, RuntimeError, TypeError) as exc:
        raise GenerationError(f"the tokenizer cannot be used for constrained output: {str(exc).splitlines()[0]}",
                              hint="leave out the output constraint, or use the model's original tokenizer") from None
    per_tok[n_vocab] = lt
    return lt


class ConstraintMask:
    """The ``constraint`` stage: -inf for every id the constraint does not allow next."""

    name = "constraint"

    def __init__(self, constraint: Constraint, tokenizer: Tokenizer, n_vocab: int) -> None:
        llg = require_llguidance()
        self.constraint = constraint
        self.n_vocab = n_vocab
        self._matcher = llg.LLMatcher(llg_tokenizer(tokenizer, n_vocab), constraint.grammar, log_level=0)
        self._check()
        self._words = np.zeros((n_vocab + 31) // 32, dtype=np.uint32)  # (W,) bit j of word w: id 32w+j allowed

    def _check(self) -> None:
        if self._matcher.is_error():
            raise GenerationError(f"the output constraint failed: {self._matcher.get_error().splitlines()[0]}",
                                  hint="simplify the schema, regex or grammar")

    def _allowed(self) -> np.ndarray:
        """Which ids may come next: bool (n_vocab,), from llguidance's bitmask (bit j of word w: id 32w+j)."""
        words = self._words
        self._matcher.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
        self._check()
        little = words.astype("<u4", copy=False).view(np.uint8)  # bytes of each word, lowest bits first
        return np.unpackbits(little, bitorder="little")[: self.n_vocab].view(np.bool_)

    def __call__(self, logits: torch.Tensor, ctx: SamplingContext) -> torch.Tensor:
        allowed = self._allowed()  # (n_vocab,)
        n = min(logits.shape[-1], self.n_vocab)
        if logits.device.type == "cpu":
            # numpy, one thread: a few hundred microseconds for 49k ids, where torch's parallel kernels can
            # wait milliseconds for a busy CPU.
            out = logits.numpy().copy()  # (V,)
            out[n:] = NEG_INF
            out[:n][~allowed[:n]] = NEG_INF
            return torch.from_numpy(out)
        keep = torch.zeros(logits.shape[-1], dtype=torch.bool)  # (V,)
        keep[:n] = torch.from_numpy(allowed[:n])
        return logits.masked_fill(~keep.to(logits.device), NEG_INF)

    def advance(self, token: int) -> None:
        """Feed the chosen token to the matcher."""
        if not self._matcher.consume_token(int(token)):
            self._check()
            raise GenerationError(f"token {token} does not fit the output constraint",
                                  hint="a later stage changed the allowed tokens; report this")

    @property
    def done(self) -> bool:
        """Whether the constraint is complete and generation must end (an end-of-sequence id was taken, or
        nothing more can follow)."""
        return bool(self._matcher.is_stopped())
