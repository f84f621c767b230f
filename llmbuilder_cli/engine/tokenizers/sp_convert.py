"""SentencePiece ``tokenizer.model`` → an equivalent Hugging Face ``tokenizers`` tokenizer (``tokenizer.json``).

Serving engines read ``tokenizer.json``, not SentencePiece models. `convert_sentencepiece` rebuilds the
SentencePiece pipeline with ``tokenizers`` parts so that ``encode(text).ids`` equals
``SentencePieceProcessor.encode(text)`` (no BOS/EOS, llmbuilder's convention) and ``decode(ids)`` equals
its ``decode(ids)``:

* normaliser: the model's own ``precompiled_charsmap`` (``Precompiled``), then SentencePiece's
  whitespace rule (``remove_extra_whitespaces``: runs of spaces become one, leading/trailing spaces go);
* pre-tokeniser: ``Metaspace`` (spaces → ``▁``, a dummy ``▁`` in front when ``add_dummy_prefix``), with
  the whole text as one unit, as SentencePiece segments it;
* model: ``bpe`` → ``BPE`` with merges derived from the pieces (a split ``piece = left + right`` ranks by
  the piece's score, as SentencePiece merges the highest-scoring pair first); ``unigram`` → ``Unigram``
  with the piece scores; ``char`` → ``BPE`` without merges (``word`` models are refused). Consecutive unknown
  characters fuse into one unknown id; ``byte_fallback`` maps to ``byte_fallback``;
* decoder: ``▁`` → space, byte pieces → UTF-8, the dummy prefix removed, the unknown piece rendered as
  SentencePiece's surface (" ⁇ ").

Control pieces (``<s>``, ``</s>``, ``<pad>``) become special added tokens, as in every Hugging Face
SentencePiece tokenizer: they decode to nothing, and so the *literal text* ``</s>`` in an input becomes
the control id, where SentencePiece spells it out with ordinary pieces. That, and the few other input
classes listed in `KNOWN_DIFFERENCES`, are the only places the two disagree.

The ``.model`` file is a serialized protobuf ``ModelProto``. Only a handful of its fields are needed, so
this module reads the protobuf wire format itself (no ``protobuf`` dependency).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ...errors import TokenizerError

__all__ = [
    "SPACE",
    "KNOWN_DIFFERENCES",
    "SentencePieceModel",
    "parse_model_proto",
    "read_sentencepiece_model",
    "convert_sentencepiece",
]

SPACE = "\u2581"  # "▁": SentencePiece's visible space

# SentencePiece piece types (ModelProto.SentencePiece.Type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}

#: Input classes where the converted tokenizer disagrees with SentencePiece (found by testing; see the
#: tests). Everything else (ASCII, digits, any whitespace, accents composed or decomposed, CJK, emoji,
#: characters missing from the vocabulary, byte fallback) encodes and decodes identically.
KNOWN_DIFFERENCES = (
    (
        "encode: the literal text of a control piece ('</s>', '<s>', '<pad>') becomes that control id; "
        "SentencePiece spells it with ordinary pieces"
    ),
    (
        "encode: a grapheme cluster under 6 UTF-8 bytes whose first character the charsmap changes and that "
        "goes on with marks which do not compose with it (e.g. 'Z' + U+0308 or 'A' + U+200D under case folding, "
        "'ﬂ' + U+0301, NBSP + U+0301) keeps only the mapped first character (tokenizers' Precompiled)"
    ),
    (
        "encode: a decomposed letter with several combining marks (e.g. Vietnamese in NFD, 'e' + U+0302 + "
        "U+0323): NFC composes it fully ('ệ'), the charsmap only partly ('ê' + U+0323); the ids differ only "
        "where the vocabulary holds one of the two forms"
    ),
    "encode, unigram models: the literal text of the unknown piece ('<unk>') or of a byte piece ('<0x41>')",
    "encode: a text that starts with a user-defined piece gets no dummy ▁ before it (llmbuilder defines none)",
    "encode: pieces of type UNUSED take part in segmentation (SentencePiece skips them)",
    (
        "decode: a run of byte pieces that is not valid UTF-8 becomes U+FFFD for every byte; SentencePiece "
        "replaces only the invalid bytes"
    ),
    (
        "decode: whitespace spelled by byte pieces (e.g. '<0x20>') at the very start is stripped like the "
        "dummy prefix (encode never produces it: spaces are ▁)"
    ),
)

# Stands for the unknown piece inside the decoder until the dummy prefix has been stripped; two
# Unicode noncharacters, so no real text is mistaken for it.
_UNK_SENTINEL = "\ufdd0\ufdef"


# ------------------------------------------------------------------------------------ protobuf reading
class _ProtoError(ValueError):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _ProtoError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _ProtoError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) for each field of one message; value is an int (varint) or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _ProtoError("field number 0")
        if wire == 0:  # varint
            value, pos = _varint(buf, pos)
        elif wire == 1:  # fixed 64-bit
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:  # length-delimited: string, bytes, sub-message
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:  # fixed 32-bit
            value, pos = buf[pos : pos + 4], pos + 4
        else:  # 3/4: deprecated groups; 6/7 do not exist
            raise _ProtoError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise _ProtoError("truncated field")
        yield number, wire, value


def _int32(value: int) -> int:
    """A varint read as a signed int32/int64 (negative numbers are 10-byte two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(value: bytes) -> str:
    return bytes(value).decode("utf-8")


def _float(value: bytes) -> float:
    return struct.unpack("<f", value)[0]


# ------------------------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class SentencePieceModel:
    """The parts of a SentencePiece ``ModelProto`` that define encoding and decoding."""

    pieces: tuple[tuple[str, float, int], ...]  # (piece, score, type) per id
    model_type: str = "unigram"  # "unigram" | "bpe" | "word" | "char" (proto default: unigram)
    # trainer_spec
    byte_fallback: bool = False
    treat_whitespace_as_suffix: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    unk_surface: str = " \u2047 "
    # normalizer_spec
    normalizer_name: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True
    # denormalizer_spec (applied by SentencePiece after decoding; rare)
    denormalizer_charsmap: bytes = b""

    def piece(self, token_id: int) -> str | None:
        """The piece string of a valid id whose type is control or unknown (else None)."""
        if 0 <= token_id < len(self.pieces) and self.pieces[token_id][2] in (CONTROL, UNKNOWN):
            return self.pieces[token_id][0]
        return None

    def special_tokens(self) -> dict[str, str | None]:
        """``bos_token``/``eos_token``/``unk_token``/``pad_token`` → piece, as tokenizer_config.json names them."""
        return {
            "bos_token": self.piece(self.bos_id),
            "eos_token": self.piece(self.eos_id),
            "unk_token": self.piece(self.unk_id),
            "pad_token": self.piece(self.pad_id),
        }


def _normalizer_spec(buf: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 2:
            out["normalizer_name"] = _text(value)
        elif number == 2 and wire == 2:
            out["precompiled_charsmap"] = bytes(value)
        elif number == 3 and wire == 0:
            out["add_dummy_prefix"] = bool(value)
        elif number == 4 and wire == 0:
            out["remove_extra_whitespaces"] = bool(value)
        elif number == 5 and wire == 0:
            out["escape_whitespaces"] = bool(value)
    return out


def _trainer_spec(buf: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ints = {40: "unk_id", 41: "bos_id", 42: "eos_id", 43: "pad_id"}
    for number, wire, value in _fields(buf):
        if number == 3 and wire == 0:
            if value not in _MODEL_TYPES:
                raise _ProtoError(f"unknown model_type {value}")
            out["model_type"] = _MODEL_TYPES[value]
        elif number == 35 and wire == 0:
            out["byte_fallback"] = bool(value)
        elif number == 24 and wire == 0:
            out["treat_whitespace_as_suffix"] = bool(value)
        elif number in ints and wire == 0:
            out[ints[number]] = _int32(value)
        elif number == 44 and wire == 2:
            out["unk_surface"] = _text(value)
    return out


def _piece(buf: bytes) -> tuple[str, float, int]:
    piece, score, kind = "", 0.0, NORMAL
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 2:
            piece = _text(value)
        elif number == 2 and wire == 5:
            score = _float(value)
        elif number == 3 and wire == 0:
            kind = int(value)
    return piece, score, kind


def parse_model_proto(data: bytes) -> SentencePieceModel:
    """Read a serialized ``ModelProto``. Raises ``ValueError`` on malformed data."""
    pieces: list[tuple[str, float, int]] = []
    spec: dict[str, Any] = {}
    try:
        for number, wire, value in _fields(data):
            if wire != 2:
                continue
            if number == 1:
                pieces.append(_piece(value))
            elif number == 2:
                spec.update(_trainer_spec(value))
            elif number == 3:
                spec.update(_normalizer_spec(value))
            elif number == 5:
                spec["denormalizer_charsmap"] = _normalizer_spec(value).get("precompiled_charsmap", b"")
    except UnicodeDecodeError as exc:
        raise _ProtoError(f"a string field is not UTF-8 ({exc.reason})") from None
    if not pieces:
        raise _ProtoError("no pieces")
    return SentencePieceModel(pieces=tuple(pieces), **spec)


def read_sentencepiece_model(path: str | Path) -> SentencePieceModel:
    """Read ``tokenizer.model``; a `TokenizerError` explains a missing or malformed file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenizerError(f"cannot read {path}: {exc.strerror or exc}", hint="check the --tokenizer path") from None
    try:
        return parse_model_proto(data)
    except _ProtoError as exc:
        raise TokenizerError(
            f"{path} is not a SentencePiece model ({exc})",
            hint="pass the tokenizer.model written by llmbuilder (or a tokenizer.json)",
        ) from None


# ------------------------------------------------------------------------------------------ conversion
def _unsupported(what: str) -> TokenizerError:
    return TokenizerError(
        f"this SentencePiece model uses {what}, which the tokenizer.json conversion does not support",
        hint="export with a tokenizer.json tokenizer instead (or keep serving with SentencePiece)",
    )


def _bpe_merges(pieces: tuple[tuple[str, float, int], ...], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Every ``piece = left + right`` of two mergeable pieces, in SentencePiece's merge priority.

    SentencePiece merges the adjacent pair whose concatenation has the highest score (ties: leftmost);
    Hugging Face's BPE merges the pair of lowest rank. Ranking by (−score, id) reproduces the first;
    splits of the same piece follow each other, ordered by the ids of their parts.
    """
    mergeable = {p for p, _, t in pieces if t == NORMAL}
    ranked: list[tuple[float, int, int, int, str, str]] = []
    for piece, score, kind in pieces:
        if kind != NORMAL or len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in mergeable and right in mergeable:
                ranked.append((-score, vocab[piece], vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def convert_sentencepiece(model: SentencePieceModel) -> Any:
    """A ``tokenizers.Tokenizer`` that encodes and decodes as SentencePiece does with ``model``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    if model.treat_whitespace_as_suffix:
        raise _unsupported("treat_whitespace_as_suffix")
    if not model.escape_whitespaces:
        raise _unsupported("escape_whitespaces=false")
    if model.denormalizer_charsmap:
        raise _unsupported("a denormalizer")
    n = len(model.pieces)
    if not 0 <= model.unk_id < n or model.pieces[model.unk_id][2] != UNKNOWN:
        raise TokenizerError(
            f"the SentencePiece model's unknown id {model.unk_id} is not an unknown piece",
            hint="the tokenizer.model is damaged; retrain or re-export it",
        )

    vocab: dict[str, int] = {}
    for i, (piece, _, _) in enumerate(model.pieces):
        vocab.setdefault(piece, i)
    if len(vocab) != n:
        raise TokenizerError("the SentencePiece model has duplicate pieces", hint="the tokenizer.model is damaged")
    unk = model.pieces[model.unk_id][0]

    if model.model_type == "bpe":
        core = models.BPE(
            vocab=vocab,
            merges=_bpe_merges(model.pieces, vocab),
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=model.byte_fallback,
        )
    elif model.model_type == "char":  # one piece per character: BPE without merges
        core = models.BPE(vocab=vocab, merges=[], unk_token=unk, fuse_unk=True, byte_fallback=model.byte_fallback)
    elif model.model_type == "unigram":
        core = models.Unigram(
            [(p, float(s)) for p, s, _ in model.pieces], unk_id=model.unk_id, byte_fallback=model.byte_fallback
        )
    else:  # "word": SentencePiece fuses runs of unknown words, which WordLevel cannot express
        raise _unsupported(f"the {model.model_type!r} model type")
    tok = Tokenizer(core)

    # Normaliser: the charsmap first (NFKC, case folding, ...), then SentencePiece's whitespace rule,
    # which only ever looks at ASCII spaces (what the charsmap turned tabs and newlines into).
    steps = []
    if model.precompiled_charsmap:
        if "nfkc" in model.normalizer_name:
            # Compose first: ``Precompiled`` maps a short grapheme cluster by its shortest matching prefix
            # and drops the rest, so decomposed text ("E" + U+0301) would lose its accents. The NFKC-based
            # charsmaps compose such pairs themselves; NFC leaves composed text as it is and differs from
            # the charsmap only for a letter with several marks (see KNOWN_DIFFERENCES).
            steps.append(normalizers.NFC())
        steps.append(normalizers.Precompiled(model.precompiled_charsmap))
    # The dummy prefix: Metaspace's "first" scheme puts a ▁ before the text unless it already starts with
    # one, so a single leading space (all that remove_extra_whitespaces leaves) serves as the prefix, and
    # a user-defined piece does not get one after it. Keeping extra whitespace, a leading space must
    # still get its own dummy ▁: Prepend it in the normaliser instead.
    prepend = "first" if model.add_dummy_prefix and model.remove_extra_whitespaces else "never"
    if model.remove_extra_whitespaces:
        steps.append(normalizers.Replace(Regex(" {2,}"), " "))
        # \A and \z: ^ and $ would also match at newlines
        steps.append(normalizers.Replace(Regex(r" \z" if model.add_dummy_prefix else r"\A | \z"), ""))
    elif model.add_dummy_prefix:
        steps.append(normalizers.Prepend(SPACE))  # skips empty text, as SentencePiece does
    if steps:
        tok.normalizer = normalizers.Sequence(steps)

    # Spaces → ▁; SentencePiece segments the whole text at once, so no split at spaces.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme=prepend, split=False)

    # Decoder. SentencePiece drops the ▁ of the leading pieces while nothing has been output yet (all of
    # them when extra whitespace is removed, else one) and renders the unknown piece as its surface,
    # whose own leading space must survive that: a sentinel stands for it until the strip is done.
    steps = [decoders.Replace(unk, _UNK_SENTINEL), decoders.Replace(SPACE, " ")]
    if model.byte_fallback:
        steps.append(decoders.ByteFallback())
    steps.append(decoders.Fuse())
    if model.remove_extra_whitespaces:  # no piece then holds two ▁: strip every leading space
        steps.append(decoders.Strip(" ", 1 << 30, 0))
    elif model.add_dummy_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    steps.append(decoders.Replace(_UNK_SENTINEL, model.unk_surface))
    tok.decoder = decoders.Sequence(steps)

    # Control pieces are special tokens (skipped by decode). User-defined pieces are matched whole, in the
    # normalised text so that the whitespace around them is handled with the rest of the text.
    control = [AddedToken(p, special=True, normalized=False) for p, _, t in model.pieces if t == CONTROL]
    user = [AddedToken(p, special=False, normalized=True) for p, _, t in model.pieces if t == USER_DEFINED]
    if control:
        tok.add_special_tokens(control)
    if user:
        tok.add_tokens(user)
    if tok.get_vocab_size(with_added_tokens=True) != n:
        raise TokenizerError(
            f"converted tokenizer has {tok.get_vocab_size(with_added_tokens=True)} ids, the model {n}",
            hint="this SentencePiece model cannot be converted exactly",
        )
    return tok
