"""Rebuild a GGUF file's tokenizer (``tokenizer.ggml.*`` metadata) as a `tokenizers.Tokenizer`.

Two llama.cpp tokenizer models are supported: ``gpt2`` (byte-level BPE, with the pre-tokenizer split
named by ``tokenizer.ggml.pre``) and ``llama`` (SentencePiece, expressed as BPE with score-ranked
merges and byte fallback). Control tokens become special added tokens, user-defined ones plain added
tokens.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np

from ....errors import TokenizerError
from .header import _CORRUPT_HINT

# ------------------------------------------------------------------------------------------ tokenizer
# GPT-2's own split is built into tokenizers' ByteLevel(use_regex=True); these are the others.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> (how to split text before BPE, whether whole-vocabulary words skip the merges)
_PRE: dict[str, tuple[str, bool]] = {
    "default": ("gpt2", False),
    "gpt-2": ("gpt2", False),
    "smollm": ("digits+gpt2", False),
    "llama3": ("llama3", True),
    "llama-v3": ("llama3", True),
    "llama-bpe": ("llama3", True),
    "qwen2": ("qwen2", False),
    "deepseek-r1-qwen": ("qwen2", False),
}
_PRE_ADDS_BOS = {"llama3", "llama-v3", "llama-bpe"}  # llama.cpp adds BOS for these when the file is silent
_CONTROL, _USER_DEFINED, _BYTE = 3, 4, 6
#: Characters the SentencePiece merge search may examine (a 49k vocabulary takes ~1% of it).
_MAX_SPLIT_WORK = 200_000_000
_SPACE = "\u2581"  # SentencePiece's visible space


def _byte_alphabet() -> list[str]:
    """The 256 printable characters byte-level BPE spells bytes with: printable Latin-1 bytes stand for
    themselves, the others are shifted to U+0100 and up, in byte order."""
    keep = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    shifted = iter(range(0x100, 0x200))
    return [chr(b) if b in keep else chr(next(shifted)) for b in range(256)]


def _build_tokenizer(meta: dict, name: str) -> tuple[Any, bool]:
    """The `tokenizers.Tokenizer` a GGUF describes, and llama.cpp's default for adding BOS."""
    model = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise TokenizerError(
            f"{name} has no tokenizer vocabulary (tokenizer.ggml.tokens)", hint="use a GGUF that includes its tokenizer"
        )
    types = meta.get("tokenizer.ggml.token_type")
    types = [1] * len(tokens) if types is None else [int(t) for t in types]
    if len(types) < len(tokens):
        raise TokenizerError(f"{name}: fewer token types than tokens", hint=_CORRUPT_HINT)
    if model == "gpt2":
        tok, adds_bos = _byte_level_bpe(meta, tokens, types, name)
    elif model == "llama":
        tok, adds_bos = _sentencepiece_bpe(meta, tokens, types, name)
    else:
        raise TokenizerError(
            f"{name} uses a {model!r} tokenizer",
            hint="supported tokenizer models: gpt2 (byte-level BPE) and llama (SentencePiece)",
        )
    _add_special(tok, tokens, types)
    return tok, adds_bos


def _add_special(tok: Any, tokens: list[str], types: list[int]) -> None:
    """Control tokens become special added tokens (matched whole, skipped when decoding with
    skip_special_tokens); user-defined ones (like ``<think>``) are matched whole but still shown."""
    from tokenizers import AddedToken

    special = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == _CONTROL and t]
    user = [AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == _USER_DEFINED and t]
    if special:
        tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)


def _byte_level_bpe(meta: dict, tokens: list[str], types: list[int], name: str) -> tuple[Any, bool]:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    merges_text = meta.get("tokenizer.ggml.merges")
    if not isinstance(merges_text, list):
        raise TokenizerError(f"{name} has a BPE tokenizer without merges", hint=_CORRUPT_HINT)
    alphabet = _byte_alphabet()
    foreign = re.compile("[^" + re.escape("".join(alphabet)) + "]").search  # a character outside it
    vocab: dict[str, int] = {}
    for i, (t, kind) in enumerate(zip(tokens, types)):
        if kind not in (_CONTROL, _USER_DEFINED) and foreign(t):
            t = "".join(alphabet[b] for b in t.encode("utf-8"))  # a token stored as plain UTF-8
        vocab.setdefault(t, i)
    merges = [(m[:cut], m[cut + 1 :]) for m in merges_text if (cut := m.find(" ", 1)) > 0]
    pre = meta.get("tokenizer.ggml.pre") or "default"
    if pre not in _PRE:
        warnings.warn(
            f"{name}: unknown pre-tokenizer {pre!r}; splitting text like GPT-2 (tokens may differ from llama.cpp)",
            stacklevel=4,
        )
    split, ignore_merges = _PRE.get(pre, ("gpt2", False))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split in ("gpt2", "digits+gpt2"))
    if split == "gpt2":
        tok.pre_tokenizer = byte_level
    elif split == "digits+gpt2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        pattern = _LLAMA3_SPLIT if split == "llama3" else _QWEN2_SPLIT
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(pattern), behavior="isolated"), byte_level]
        )
    tok.decoder = decoders.ByteLevel()
    return tok, pre in _PRE_ADDS_BOS


def _sentencepiece_bpe(meta: dict, tokens: list[str], types: list[int], name: str) -> tuple[Any, bool]:
    """llama.cpp's SentencePiece tokenizer: start from characters, repeatedly merge the adjacent pair
    whose concatenation is the highest-scoring vocabulary piece, fall back to <0xNN> byte pieces.
    Expressed as BPE: every split of a normal piece into two pieces is a merge, ranked by its score."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = meta.get("tokenizer.ggml.scores")
    scores = np.zeros(len(tokens), dtype=np.float32) if scores is None else np.asarray(scores, dtype=np.float64)
    if len(scores) < len(tokens):
        raise TokenizerError(f"{name}: fewer token scores than tokens", hint=_CORRUPT_HINT)
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    # A split can only be into two vocabulary pieces, so only cuts at lengths some piece has are tried:
    # linear in a token's length for real vocabularies (a few dozen distinct lengths), where trying every
    # cut is quadratic (a 600,000-character token took minutes). What remains is bounded as well.
    lengths = sorted({len(t) for t in vocab})
    vocab_lengths = set(lengths)
    ranked, work = [], 0
    for i, (t, kind) in enumerate(zip(tokens, types)):
        if kind != 1 or len(t) < 2:
            continue
        n = len(t)
        cuts = [c for c in lengths if c < n and (n - c) in vocab_lengths] if n > 64 else range(1, n)
        work += len(cuts) * n
        if work > _MAX_SPLIT_WORK:
            raise TokenizerError(
                f"{name}: its vocabulary is too costly to rebuild (token {i} has {n} characters; the pieces "
                f"total {sum(map(len, tokens))} characters)", hint=_CORRUPT_HINT)
        for cut in cuts:
            left, right = t[:cut], t[cut:]
            if left in vocab and right in vocab:
                ranked.append((-float(scores[i]), i, cut, left, right))
    ranked.sort()
    merges = [(left, right) for _, _, _, left, right in ranked]
    unk_ids = [i for i, k in enumerate(types) if k == 2]
    unk = tokens[unk_ids[0]] if unk_ids else None
    has_bytes = any(k == _BYTE for k in types)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, byte_fallback=has_bytes, fuse_unk=True))
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    steps = [normalizers.Replace(" ", _SPACE)]
    tok.normalizer = normalizers.Sequence(([normalizers.Prepend(_SPACE)] if prefix else []) + steps)
    parts = [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(parts + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return tok, True
