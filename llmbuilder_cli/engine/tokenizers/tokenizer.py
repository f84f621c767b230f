"""Tokenizers: one small protocol, two backends, and a streaming decoder.

* `SentencePieceTokenizer`: llmbuilder's ``tokenizer.model`` through the ``sentencepiece`` package, the
  reference implementation (normalisation comes from the model's own precompiled charsmap).
* `HFTokenizer`: a Hugging Face ``tokenizer.json`` through ``tokenizers``.

Both follow llmbuilder's convention: encode adds no BOS/EOS, decode renders special/control ids as
nothing (SentencePiece's ``<unk>`` decodes to " ⁇ ", as in llmbuilder). Whether a fresh sequence starts
with BOS is a separate fact, ``add_bos`` with ``bos_id``, applied by whoever builds the prompt ids
(``engine/generate.py``): llmbuilder models never get one; Hugging Face tokenizers follow what transformers
does for them (an explicit ``add_bos_token`` in ``tokenizer_config.json``, else the ``tokenizer.json``
post-processor); GGUF files say it themselves. ``chat_template`` and ``special_tokens`` (``bos_token`` /
``eos_token`` strings) are kept for rendering chat templates.

Whatever the tokenizer libraries raise while reading or running a tokenizer, a Rust panic from
``tokenizers`` included (a ``BaseException``: a hostile regex can cause one), becomes a `TokenizerError`.

`StreamDecoder` turns a growing id list into text pieces without re-decoding everything: it decodes a
short window of ids twice (with and without the newest ids) and emits the difference, holding text back
while it ends in U+FFFD (half a UTF-8 character). Starting the window inside the prompt keeps the first
word's leading space. The pieces join to the continuation part of ``decode(prompt_ids + new_ids)``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, Sequence

from ...errors import TokenizerError, UsageError
from ...files import user_path

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
    bos_id: int | None  # the beginning-of-sequence id, if the tokenizer has one
    add_bos: bool  # whether a fresh sequence starts with bos_id (encode never adds it)
    chat_template: str | None  # Jinja chat template shipped with the tokenizer
    special_tokens: dict[str, str]  # "bos_token" / "eos_token" strings, for template rendering

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def id_to_token(self, token_id: int) -> str: ...  # the raw piece/token string, for display


_HOSTILE_HINT = "the tokenizer file is damaged or hostile; use the model's original tokenizer"


def is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust panic surfaced by ``tokenizers`` (pyo3's PanicException derives from
    BaseException, so ``except Exception`` misses it)."""
    return type(exc).__name__ == "PanicException"


@contextmanager
def tokenizer_errors(path: Any, doing: str) -> Iterator[None]:
    """Turn what a tokenizer library raises while ``doing`` something (a Rust panic included: a hostile
    ``tokenizer.json`` regex can trigger one) into a one-line `TokenizerError`."""
    try:
        yield
    except (TokenizerError, UsageError):
        raise
    except Exception as exc:
        raise TokenizerError(f"the tokenizer {path} failed while {doing}: {_first_line(exc)}",
                             hint=_HOSTILE_HINT) from None
    except BaseException as exc:
        if not is_panic(exc):
            raise
        raise TokenizerError(f"the tokenizer {path} crashed while {doing} (the tokenizer library panicked: "
                             f"{_first_line(exc)[:200]})", hint=_HOSTILE_HINT) from None


@contextmanager
def native_stderr_held() -> Iterator[None]:
    """Hold what native code writes to stderr (file descriptor 2) while the block runs: a Rust panic prints
    its own report there before Python sees the exception. Released as written when the block ends
    normally or with an ordinary exception; dropped after a panic (whose one-line error says it all)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable descriptor 2: nothing to hold
        yield
        return
    panicked = False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException as exc:
            panicked = is_panic(exc)
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not panicked and held.tell():
                held.seek(0)
                os.write(2, held.read())


def checked_text(text: str) -> str:
    """``text`` if it can be encoded as UTF-8; lone surrogates (bytes that were not UTF-8, carried in by
    the command line or a pipe) raise a `UsageError` instead of a tokenizer crash."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(
            "the text is not valid UTF-8 (it carries bytes that are not UTF-8)",
            hint="pass UTF-8 text (check the terminal's or file's encoding)",
        ) from None
    return text


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
        # llmbuilder's convention: no BOS, no chat template.
        self.bos_id: int | None = None
        self.add_bos = False
        self.chat_template: str | None = None
        self.special_tokens: dict[str, str] = {}

    @property
    def processor(self) -> Any:
        """The sentencepiece processor itself (for libraries that read the vocabulary, e.g. llguidance)."""
        return self._sp

    def encode(self, text: str) -> list[int]:
        text = checked_text(text)
        with tokenizer_errors(self.path, "encoding"):
            return list(self._sp.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        with tokenizer_errors(self.path, "decoding"):
            return self._sp.decode(list(ids))

    def id_to_token(self, token_id: int) -> str:
        with tokenizer_errors(self.path, "looking up a token"):
            return str(self._sp.id_to_piece(int(token_id)))


class HFTokenizer:
    kind = "huggingface"

    def __init__(self, path: Path, *, extra_eos_ids: Sequence[int] = (), add_bos: bool | None = None) -> None:
        """Read ``path`` (a tokenizer.json) and the ``tokenizer_config.json`` / ``chat_template.jinja`` beside it.

        ``extra_eos_ids``: more ids that end a sequence (a model's ``generation_config.json``). ``add_bos``:
        force whether prompts start with BOS (False for llmbuilder models); None decides as transformers does.
        """
        from tokenizers import Tokenizer as _HFTok

        try:
            tok = _HFTok.from_file(str(path))
        except BaseException as exc:
            if not isinstance(exc, Exception) and not is_panic(exc):
                raise
            raise TokenizerError(
                f"cannot read tokenizer file {path}: {_first_line(exc)}",
                hint="pass a valid Hugging Face tokenizer.json or llmbuilder's tokenizer directory",
            ) from None
        with tokenizer_errors(path, "reading it"):
            self._configure(tok, path, extra_eos_ids, add_bos)

    def _configure(self, tok: Any, path: Path, extra_eos_ids: Sequence[int], add_bos: bool | None) -> None:
        cfg = _read_tokenizer_config(path.parent / "tokenizer_config.json")
        special = {k: v for k in ("bos_token", "eos_token") if (v := _token_text(cfg.get(k))) is not None}
        self._setup(tok, path)
        self.special_tokens = special
        eos = [] if "eos_token" not in special else [self._tok.token_to_id(special["eos_token"])]
        ids = _unique([i for i in eos if i is not None] + [int(i) for i in extra_eos_ids])
        self.eos_ids = ids or self._fallback_eos()
        self.bos_id = None if "bos_token" not in special else self._tok.token_to_id(special["bos_token"])
        self.add_bos = self._adds_bos(cfg) if add_bos is None else bool(add_bos)
        if self.add_bos and self.bos_id is None:
            self.add_bos = False
        self.chat_template = _chat_template(path.parent, cfg)

    @property
    def backend(self) -> Any:
        """The ``tokenizers.Tokenizer`` itself (for libraries that take its JSON, e.g. llguidance)."""
        return self._tok

    def _setup(self, tok: Any, path: Path) -> None:
        self._tok = tok
        self.path = path
        self.vocab_size = int(tok.get_vocab_size(with_added_tokens=True))

    @classmethod
    def from_tokenizer(
        cls,
        tok: Any,
        *,
        path: Path,
        eos_ids: Sequence[int],
        bos_id: int | None,
        add_bos: bool,
        chat_template: str | None,
        special_tokens: dict[str, str],
    ) -> "HFTokenizer":
        """Wrap a ``tokenizers.Tokenizer`` built elsewhere (e.g. from a GGUF file's vocabulary)."""
        self = cls.__new__(cls)
        self._setup(tok, path)
        self.eos_ids = _unique(int(i) for i in eos_ids)
        self.bos_id = None if bos_id is None else int(bos_id)
        self.add_bos = bool(add_bos) and self.bos_id is not None
        self.chat_template = chat_template
        self.special_tokens = dict(special_tokens)
        return self

    def _fallback_eos(self) -> tuple[int, ...]:
        for name in _EOS_CANDIDATES:
            tid = self._tok.token_to_id(name)
            if tid is not None:
                return (int(tid),)
        return ()

    def _adds_bos(self, cfg: dict[str, Any]) -> bool:
        """What transformers does: an explicit add_bos_token (or add_eos_token) in tokenizer_config.json
        rebuilds the post-processor from those flags; otherwise the tokenizer.json post-processor decides."""
        if "add_bos_token" in cfg or "add_eos_token" in cfg:
            return bool(cfg.get("add_bos_token"))
        if self._tok.post_processor is None:
            return False
        plain = self._tok.encode("a", add_special_tokens=False).ids
        full = self._tok.encode("a", add_special_tokens=True).ids
        if len(full) > len(plain) and full[1 : 1 + len(plain)] == plain:
            self.bos_id = int(full[0])  # the id the post-processor puts first
            return True
        return False

    def encode(self, text: str) -> list[int]:
        text = checked_text(text)
        with tokenizer_errors(self.path, "encoding"), native_stderr_held():  # regexes run here: panics too
            return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        with tokenizer_errors(self.path, "decoding"):
            return self._tok.decode(list(ids), skip_special_tokens=True)

    def id_to_token(self, token_id: int) -> str:
        with tokenizer_errors(self.path, "looking up a token"):
            return self._tok.id_to_token(int(token_id)) or ""


def _unique(ids: Iterable[int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(ids))


def _read_tokenizer_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json spells it: a string or an object with "content"."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(folder: Path, cfg: dict[str, Any]) -> str | None:
    """``chat_template.jinja`` beside the tokenizer, else tokenizer_config.json's ``chat_template`` (a string,
    or a list of named templates of which "default" is used)."""
    file = folder / "chat_template.jinja"
    if file.is_file():
        try:
            return file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            pass
    tpl = cfg.get("chat_template")
    if isinstance(tpl, list):
        named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
        tpl = named.get("default", next(iter(named.values()), None))
    return tpl if isinstance(tpl, str) and tpl.strip() else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def resolve_tokenizer_file(path: str | Path) -> Path:
    """The tokenizer file for ``path``, in llmbuilder-compatible order:
    directory with tokenizer.model → directory with tokenizer.json → a .model file → a .json file."""
    p = user_path(path)
    try:
        p.stat()
    except FileNotFoundError:
        pass  # reported below with the usual message
    except OSError as exc:  # a name too long, a loop of links, a path through a file, no permission
        raise TokenizerError(f"cannot use the tokenizer path {str(p)[:120]!r}: {exc.strerror or exc}",
                             hint="check the --tokenizer path") from None
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


def load_tokenizer(path: str | Path, *, extra_eos_ids: Sequence[int] = (), add_bos: bool | None = None) -> Tokenizer:
    """The tokenizer at ``path``; ``extra_eos_ids`` and ``add_bos`` apply to Hugging Face tokenizers
    (see `HFTokenizer`); a SentencePiece model keeps llmbuilder's conventions."""
    file = resolve_tokenizer_file(path)
    if file.suffix == ".model":
        return SentencePieceTokenizer(file)
    return HFTokenizer(file, extra_eos_ids=extra_eos_ids, add_bos=add_bos)


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
