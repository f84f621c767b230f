"""Tokenizers: one small protocol, two backends, and a streaming decoder.

* `SentencePieceTokenizer`: llmbuilder's ``tokenizer.model`` through the ``sentencepiece`` package, the
  reference implementation (normalisation comes from the model's own precompiled charsmap).
* `HFTokenizer`: a Hugging Face ``tokenizer.json`` through ``tokenizers``.

Both follow llmbuilder's convention: encode adds no BOS/EOS, decode renders special/control ids as
nothing (SentencePiece's ``<unk>`` decodes to " ⁇ ", as in llmbuilder).

`StreamDecoder` turns a growing id list into text pieces without re-decoding everything: it decodes a
short window of ids twice (with and without the newest ids) and emits the difference, holding text back
while it ends in U+FFFD (half a UTF-8 character). Starting the window inside the prompt keeps the first
word's leading space. The pieces join to the continuation part of ``decode(prompt_ids + new_ids)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, Sequence

from ..errors import TokenizerError

__all__ = [
    "Tokenizer",
    "SentencePieceTokenizer",
    "HFTokenizer",
    "StreamDecoder",
    "resolve_tokenizer_file",
    "load_tokenizer",
]

# Names tried, in order, when a tokenizer.json has no tokenizer_config.json that names its EOS token.
_EOS_CANDIDATES = ("</s>", "<|endoftext|>", "<eos>", "<|end_of_text|>", "<|eot_id|>", "<|im_end|>")


class Tokenizer(Protocol):
    kind: str  # "sentencepiece" or "huggingface"
    path: Path  # the file that was read
    vocab_size: int  # number of ids the tokenizer can produce and decode
    eos_ids: tuple[int, ...]  # ids that end a sequence (empty when the tokenizer has none)

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def id_to_token(self, token_id: int) -> str: ...  # the raw piece/token string, for display


class SentencePieceTokenizer:
    kind = "sentencepiece"

    def __init__(self, path: Path) -> None:
        import sentencepiece as spm

        self.path = path
        try:
            self._sp = spm.SentencePieceProcessor(model_file=str(path))
        except Exception as exc:  # sentencepiece raises OSError/RuntimeError with C++ text
            raise TokenizerError(
                f"cannot read SentencePiece model {path}: {_first_line(exc)}",
                hint="pass the directory that contains llmbuilder's tokenizer.model (or a tokenizer.json)",
            ) from None
        self.vocab_size = int(self._sp.get_piece_size())
        eos = int(self._sp.eos_id())
        self.eos_ids = (eos,) if 0 <= eos < self.vocab_size else ()

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode(list(ids))

    def id_to_token(self, token_id: int) -> str:
        return str(self._sp.id_to_piece(int(token_id)))


class HFTokenizer:
    kind = "huggingface"

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as _HFTok

        self.path = path
        try:
            self._tok = _HFTok.from_file(str(path))
        except Exception as exc:
            raise TokenizerError(
                f"cannot read tokenizer file {path}: {_first_line(exc)}",
                hint="pass a valid Hugging Face tokenizer.json or llmbuilder's tokenizer directory",
            ) from None
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
        self.eos_ids = self._find_eos(path)

    def _find_eos(self, path: Path) -> tuple[int, ...]:
        names: list[str] = []
        cfg = path.parent / "tokenizer_config.json"
        if cfg.is_file():
            try:
                eos = json.loads(cfg.read_text(encoding="utf-8")).get("eos_token")
            except (OSError, ValueError, AttributeError):
                eos = None
            if isinstance(eos, dict):
                eos = eos.get("content")
            if isinstance(eos, str):
                names.append(eos)
        names.extend(_EOS_CANDIDATES)
        for name in names:
            tid = self._tok.token_to_id(name)
            if tid is not None:
                return (int(tid),)
        return ()

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def id_to_token(self, token_id: int) -> str:
        return self._tok.id_to_token(int(token_id)) or ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def resolve_tokenizer_file(path: str | Path) -> Path:
    """The tokenizer file for ``path``, in llmbuilder-compatible order:
    directory with tokenizer.model → directory with tokenizer.json → a .model file → a .json file."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in ("tokenizer.model", "tokenizer.json"):
            if (p / name).is_file():
                return p / name
        raise TokenizerError(
            f"no tokenizer.model or tokenizer.json in {p}",
            hint="pass the tokenizer directory written by llmbuilder (it holds tokenizer.model)",
        )
    if p.is_file():
        if p.suffix in (".model", ".json"):
            return p
        raise TokenizerError(
            f"{p} is not a tokenizer file (expected tokenizer.model or tokenizer.json)",
            hint="pass the tokenizer directory or its tokenizer.model / tokenizer.json",
        )
    raise TokenizerError(f"tokenizer not found: {p}", hint="check the --tokenizer path")


def load_tokenizer(path: str | Path) -> Tokenizer:
    file = resolve_tokenizer_file(path)
    if file.suffix == ".model":
        return SentencePieceTokenizer(file)
    return HFTokenizer(file)


class StreamDecoder:
    """Incremental, UTF-8-safe detokenizer (offset-window method).

    ``prefix`` and ``read`` index the id list: text up to ``read`` was emitted; decoding starts at
    ``prefix`` so that the decoder sees a little context (leading spaces, multi-byte characters).
    """

    _CONTEXT = 4  # prompt ids kept as left context for the first window

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int] = ()) -> None:
        self._tok = tokenizer
        self.ids: list[int] = list(prompt_ids)
        self._read = len(self.ids)
        self._prefix = max(0, self._read - self._CONTEXT)
        self._anchor()

    def _anchor(self) -> None:
        """Decode the emitted window, widening it to the left while its text is only whitespace.

        Decoders strip leading spaces at the start of a decode (SentencePiece strips *all* of them), so
        a window that starts on a bare "▁" piece would also eat the next word's space.
        """
        self._old = self._tok.decode(self.ids[self._prefix : self._read])
        while self._prefix > 0 and not self._old.strip():
            self._prefix -= 1
            self._old = self._tok.decode(self.ids[self._prefix : self._read])

    def step(self, token_id: int) -> str:
        """Add one id; return the newly complete text (may be "")."""
        self.ids.append(token_id)
        new = self._tok.decode(self.ids[self._prefix :])
        if len(new) > len(self._old) and not new.endswith("\ufffd"):
            chunk = new[len(self._old) :]
            self._prefix, self._read = self._read, len(self.ids)
            self._anchor()
            return chunk
        return ""

    def flush(self) -> str:
        """Whatever is still held back (e.g. an incomplete character at the very end)."""
        if self._read == len(self.ids):
            return ""
        new = self._tok.decode(self.ids[self._prefix :])
        chunk = new[len(self._old) :]
        self._prefix = self._read = len(self.ids)
        self._old = ""
        return chunk
