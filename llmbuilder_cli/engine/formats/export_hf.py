"""Export an llmbuilder model as a standard Hugging Face GPT-2 directory, for serving engines.

llmbuilder's GPT is GPT-2's architecture with three details pinned down (format reference §1): exact
(erf) GELU, LayerNorm eps 1e-5, and a fused q|k|v projection *without* a bias. So the export is a
renaming plus a transpose:

| llmbuilder                          | GPT2LMHeadModel (``model.safetensors``)          |
|-------------------------------------|--------------------------------------------------|
| token_embedding / position_embedding | transformer.wte / transformer.wpe                |
| blocks.i.ln1, ln2                   | transformer.h.i.ln_1, ln_2                        |
| blocks.i.attn.qkv_proj (3C, C)      | transformer.h.i.attn.c_attn (C, 3C) + zero bias   |
| blocks.i.attn.out_proj (C, C)       | transformer.h.i.attn.c_proj (C, C)                |
| blocks.i.mlp.fc1 / fc2              | transformer.h.i.mlp.c_fc / c_proj                 |
| ln_f / lm_head                      | transformer.ln_f / lm_head (left out when tied)   |

GPT-2 stores its linear layers as ``Conv1D`` with weights (in, out), the transpose of ``nn.Linear``. The
q|k|v order and head-major channel layout are the same, and GPT-2's 1/sqrt(D) attention scale equals
llmbuilder's, so a float32 export computes the same function up to float rounding.

Written files: ``config.json``, ``generation_config.json`` (llmbuilder's sampling defaults, from
``config.py``), ``model.safetensors``, ``tokenizer.json`` (a ``tokenizer.json`` is copied; llmbuilder's
SentencePiece ``tokenizer.model`` is converted by ``sp_convert.py``), ``tokenizer_config.json`` and
``special_tokens_map.json``. Prompts get no BOS/EOS (llmbuilder's convention), so the tokenizer carries
no post-processor that adds them and says ``add_bos_token: false``.

Everything is written to a temporary directory beside ``out_dir`` and renamed into place at the end, so
a failure never leaves a half-written export behind. Every export also holds ``llmbuilder_export.json``
(`MARKER`: the tool, its version, the source model), written first: it is how ``overwrite`` (``--force``)
recognises a previous export, the only kind of directory it replaces. A directory holding anything else
(the source model, a tokenizer, checkpoints, unrelated files) is refused. Temporary directories left by a
killed export (``.NAME.tmp-PID-XXXXXXXX`` beside ``out_dir``, holding the marker, PID no longer running)
are removed by the next export into the same parent directory. Files get the permissions of any file the
user writes (``0666`` less the umask), and failures to write (read-only or full disk, no permission) are
`UsageError`s naming ``out_dir``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..._version import __version__
from ...config import GenerationConfig
from ...errors import ModelLoadError, TokenizerError, UsageError
from ...files import os_error_text, user_path
from ..models.llmbuilder_gpt import LAYER_NORM_EPS, GPTConfig
from ..tokenizers.sp_convert import convert_sentencepiece, read_sentencepiece_model
from ..tokenizers.tokenizer import resolve_tokenizer_file
from .llmbuilder import head_is_tied, read_checkpoint
from .locate import model_format, resolve_model_file, tokenizer_path_for

__all__ = ["EXPORT_DTYPES", "EXPORT_FILES", "MARKER", "ExportReport", "export_hf", "gpt2_state_dict", "gpt2_config"]

#: The file every export holds, written first; ``--force`` replaces only directories that hold it.
MARKER = "llmbuilder_export.json"
#: Every file an export may hold, in the order the report lists them.
EXPORT_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", MARKER)
#: --dtype values of the export (the weights are stored in this dtype; llmbuilder computes in float32).
EXPORT_DTYPES = ("float32", "float16", "bfloat16")

# Strings whose SentencePiece ids the converted tokenizer must reproduce at export time (a self-check;
# the thorough comparison is in the tests).
_CHECK_TEXTS = (
    "Once upon a time",
    "The little fox ran to the  river.\n\tIt was 3:45 PM!",
    "  Leading and trailing spaces  ",
    "Café, naïve, ÉCOLE — “quotes”, ½ ﬁ ①",
    "日本語のテキスト 中文 한국어 😀👍🏽",
    "",
)
# Post-processors that add special tokens around a prompt; llmbuilder models never saw them.
_ADDING_POST_PROCESSORS = {"TemplateProcessing", "BertProcessing", "RobertaProcessing"}


@dataclass
class ExportReport:
    """What `export_hf` wrote."""

    out_dir: Path
    files: dict[str, int]  # file name -> size in bytes, in writing order
    config: dict[str, Any]  # summary: architecture, sizes, tied head, dtype, parameters, special ids
    tokenizer: str  # how the tokenizer was produced
    notes: list[str] = field(default_factory=list)  # things the user should know (e.g. self-check results)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "files": dict(self.files),
            "config": dict(self.config),
            "tokenizer": self.tokenizer,
            "notes": list(self.notes),
            "seconds": self.seconds,
        }


# --------------------------------------------------------------------------------------------- weights
def gpt2_state_dict(
    config: GPTConfig, state: Mapping[str, torch.Tensor], *, tied: bool, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """llmbuilder's state dict → GPT2LMHeadModel's, contiguous tensors in ``dtype`` (tied head stored once)."""

    def conv1d(w: torch.Tensor) -> torch.Tensor:  # nn.Linear (out, in) → Conv1D (in, out)
        return w.t()

    C = config.n_embd
    out: dict[str, torch.Tensor] = {
        "transformer.wte.weight": state["token_embedding.weight"],  # (V, C)
        "transformer.wpe.weight": state["position_embedding.weight"],  # (P, C)
    }
    for i in range(config.n_layer):
        src, dst = f"blocks.{i}.", f"transformer.h.{i}."
        qkv = state[src + "attn.qkv_proj.weight"]  # (3C, C), rows q | k | v
        out[dst + "ln_1.weight"] = state[src + "ln1.weight"]
        out[dst + "ln_1.bias"] = state[src + "ln1.bias"]
        out[dst + "attn.c_attn.weight"] = conv1d(qkv)  # (C, 3C)
        out[dst + "attn.c_attn.bias"] = torch.zeros(3 * C, dtype=qkv.dtype)  # llmbuilder's qkv has no bias
        out[dst + "attn.c_proj.weight"] = conv1d(state[src + "attn.out_proj.weight"])  # (C, C)
        out[dst + "attn.c_proj.bias"] = state[src + "attn.out_proj.bias"]
        out[dst + "ln_2.weight"] = state[src + "ln2.weight"]
        out[dst + "ln_2.bias"] = state[src + "ln2.bias"]
        out[dst + "mlp.c_fc.weight"] = conv1d(state[src + "mlp.fc1.weight"])  # (C, 4C)
        out[dst + "mlp.c_fc.bias"] = state[src + "mlp.fc1.bias"]
        out[dst + "mlp.c_proj.weight"] = conv1d(state[src + "mlp.fc2.weight"])  # (4C, C)
        out[dst + "mlp.c_proj.bias"] = state[src + "mlp.fc2.bias"]
    out["transformer.ln_f.weight"] = state["ln_f.weight"]
    out["transformer.ln_f.bias"] = state["ln_f.bias"]
    if not tied:
        out["lm_head.weight"] = state["lm_head.weight"]  # (V, C)
    return {k: v.detach().to(device="cpu", dtype=dtype).contiguous() for k, v in out.items()}


def gpt2_config(
    config: GPTConfig, *, tied: bool, dtype: str, bos_id: int | None, eos_id: int | None, pad_id: int | None
) -> dict[str, Any]:
    """``config.json`` of the GPT2LMHeadModel equivalent to ``config``."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": 4 * config.n_embd,
        "activation_function": "gelu",  # exact erf GELU; GPT-2's default "gelu_new" is the tanh form
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        # Inference export: dropout plays no part (llmbuilder's training dropout is not recorded here).
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "tie_word_embeddings": tied,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "torch_dtype": dtype,  # the key older readers (transformers 4, vLLM, TGI) use
        "dtype": dtype,  # the key transformers 5 writes
    }


def _generation_config(bos_id: int | None, eos_id: int | None, pad_id: int | None) -> dict[str, Any]:
    """llmbuilder's sampling defaults (the one definition in config.py) in generation_config.json terms."""
    d = GenerationConfig()
    out: dict[str, Any] = {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id}
    out.update(
        do_sample=d.do_sample,
        temperature=d.temperature,
        top_k=d.top_k if d.top_k is not None else 0,  # transformers: 0 = off
        top_p=d.top_p if d.top_p is not None else 1.0,
        repetition_penalty=d.repetition_penalty,
        max_new_tokens=d.max_new_tokens,
    )
    return {k: v for k, v in out.items() if v is not None}


# ------------------------------------------------------------------------------------------- tokenizer
@dataclass
class _TokenizerExport:
    tokenizer_json: str
    specials: dict[str, str | None]  # bos_token / eos_token / unk_token / pad_token
    ids: dict[str, int | None]  # bos / eos / pad ids
    vocab_size: int
    how: str
    base_config: dict[str, Any] = field(default_factory=dict)  # tokenizer_config.json found beside it
    chat_template: str | None = None
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _from_sentencepiece(file: Path) -> _TokenizerExport:
    import sentencepiece as spm

    model = read_sentencepiece_model(file)
    tok = convert_sentencepiece(model)
    try:  # from the bytes: sentencepiece cannot open a path that is not valid UTF-8
        sp = spm.SentencePieceProcessor(model_proto=file.read_bytes())
    except Exception as exc:  # OSError, or sentencepiece's RuntimeError with C++ text
        raise TokenizerError(f"cannot read SentencePiece model {file}: {str(exc).splitlines()[0] if str(exc) else exc!r}",
                             hint="pass llmbuilder's tokenizer directory (it holds tokenizer.model)") from None
    bad = [t for t in _CHECK_TEXTS if tok.encode(t).ids != list(sp.encode(t))]
    notes = []
    if bad:
        notes.append(
            f"tokenizer self-check: {len(bad)} of {len(_CHECK_TEXTS)} sample texts encode differently from "
            f"SentencePiece (first: {bad[0]!r}); serving engines may see other prompt ids"
        )
    specials = model.special_tokens()
    # Not declared: transformers would make "<unk>" a special token, so decode(skip_special_tokens=True)
    # would drop it (SentencePiece renders " ⁇ ") and the literal text "<unk>" would encode as that id.
    specials.pop("unk_token", None)

    def valid(i: int) -> int | None:
        return i if 0 <= i < len(model.pieces) else None

    return _TokenizerExport(
        tokenizer_json=tok.to_str(pretty=True),
        specials=specials,
        ids={"bos": valid(model.bos_id), "eos": valid(model.eos_id), "pad": valid(model.pad_id)},
        vocab_size=len(model.pieces),
        how=f"converted from SentencePiece ({model.model_type}, {model.normalizer_name or 'no'} normalization)",
        notes=notes,
    )


def _from_tokenizer_json(file: Path) -> _TokenizerExport:
    from tokenizers import Tokenizer

    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        tok = Tokenizer.from_str(json.dumps(data))
    except Exception as exc:  # JSON or tokenizers errors
        raise TokenizerError(
            f"cannot read tokenizer file {file}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            hint="pass a valid Hugging Face tokenizer.json or llmbuilder's tokenizer directory",
        ) from None
    notes = []
    post = data.get("post_processor")
    kinds = {post.get("type")} if isinstance(post, dict) else set()
    if isinstance(post, dict) and post.get("type") == "Sequence":
        kinds = {p.get("type") for p in post.get("processors", []) if isinstance(p, dict)}
    removed = bool(kinds & _ADDING_POST_PROCESSORS)
    if removed:
        data["post_processor"] = None
        notes.append(
            "removed the tokenizer's post-processor, which added special tokens (e.g. <s> … </s>) around "
            "every prompt: llmbuilder models were trained and run without them"
        )
    base = _read_json(file.parent / "tokenizer_config.json")
    vocab = tok.get_vocab(with_added_tokens=True)
    added = {t.get("content") for t in data.get("added_tokens", []) if isinstance(t, dict) and t.get("special")}
    specials: dict[str, str | None] = {k: _token_text(base.get(k)) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    # Without a tokenizer_config.json: the usual names, when they are special tokens of this tokenizer.
    guesses = {
        "eos_token": ("</s>", "<|endoftext|>", "<eos>", "<|end_of_text|>", "<|im_end|>"),
        "bos_token": ("<s>", "<bos>", "<|begin_of_text|>"),
        "pad_token": ("<pad>",),
    }
    for key, names in guesses.items():
        if specials[key] is None:
            specials[key] = next((n for n in names if n in added), None)
    if specials["unk_token"] is None:
        model_unk = data.get("model", {}).get("unk_token") if isinstance(data.get("model"), dict) else None
        specials["unk_token"] = model_unk if isinstance(model_unk, str) else None
    specials = {k: (v if v in vocab else None) for k, v in specials.items()}
    template = None
    jinja = file.parent / "chat_template.jinja"
    if jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    return _TokenizerExport(
        tokenizer_json=json.dumps(data, ensure_ascii=False, indent=2),
        specials=specials,
        ids={k: (vocab.get(specials[f"{k}_token"]) if specials[f"{k}_token"] else None) for k in ("bos", "eos", "pad")},
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        how="copied tokenizer.json" + (" (post-processor removed)" if removed else ""),
        base_config=base,
        chat_template=template,
        notes=notes,
    )


def _tokenizer_config(t: _TokenizerExport, block_size: int) -> dict[str, Any]:
    cfg = {k: v for k, v in t.base_config.items() if k not in ("tokenizer_file", "auto_map", "name_or_path")}
    cfg.update(
        tokenizer_class="PreTrainedTokenizerFast",
        add_bos_token=False,  # llmbuilder prompts start without BOS ...
        add_eos_token=False,  # ... and without EOS
        clean_up_tokenization_spaces=False,  # decode exactly what the tokenizer's decoder produces
        model_max_length=block_size,
    )
    for key, value in t.specials.items():
        if value is not None:
            cfg[key] = value
        else:
            cfg.pop(key, None)
    return cfg


# --------------------------------------------------------------------------------------------- writing
_FORCE_HINT = ("--force replaces only a directory written by 'llmbuilder export hf' (it holds " + MARKER + "); "
               "choose another --out directory")


def _write_failed(out: Path, reason: str) -> UsageError:
    return UsageError(f"cannot write the export to {out}: {reason}",
                      hint="check free space and permissions, or choose another --out directory")


def _io_failure(exc: BaseException) -> str | None:
    """Why a write failed, when ``exc`` is the system refusing it: an OSError, or safetensors' own error
    class wrapping one (``I/O error: No space left on device (os error 28)``); None for anything else."""
    if isinstance(exc, OSError):
        return os_error_text(exc)
    m = re.search(r"\(os error (\d+)\)", str(exc)) if type(exc).__name__ == "SafetensorError" else None
    return os.strerror(int(m.group(1))) if m else None


def _is_previous_export(entries: list[Path]) -> bool:
    names = {e.name for e in entries}
    return MARKER in names and all(e.name in EXPORT_FILES and e.is_file() and not e.is_symlink() for e in entries)


def _check_out_dir(out: Path, overwrite: bool, sources: tuple[Path, ...] = ()) -> None:
    """Refuse an ``out`` that is a file, a non-empty directory (without ``overwrite``), or anything but a
    previous export (with it); never one that holds a source file."""
    try:
        if out.exists() and not out.is_dir():
            raise UsageError(f"{out} exists and is not a directory", hint="choose another --out directory")
        entries = sorted(out.iterdir()) if out.is_dir() else []
    except OSError as exc:
        raise UsageError(f"cannot use {out} as the export directory: {os_error_text(exc)}",
                         hint="choose another --out directory") from None
    for src in sources:
        if src == out or out in src.parents:
            raise UsageError(f"{out} holds the model or tokenizer being exported ({src})",
                             hint="choose an --out directory outside the model's files")
    if not entries:
        return
    if not overwrite:
        raise UsageError(
            f"{out} already exists and is not empty",
            hint="choose another --out directory, or pass --force to replace a previous export",
        )
    if not _is_previous_export(entries):
        others = [e.name + ("/" if e.is_dir() else "") for e in entries if e.name not in EXPORT_FILES or not e.is_file()]
        what = (f"it holds {', '.join(others[:4])}{', …' if len(others) > 4 else ''}" if others
                else f"it has no {MARKER}")
        raise UsageError(f"{out} is not a previous export, so --force does not replace it ({what})", hint=_FORCE_HINT)


def _refuse_other_formats(file: Path) -> None:
    """Only llmbuilder checkpoints are exported; HF directories and GGUF files already are standard."""
    kind = model_format(file)
    if kind != "llmbuilder":
        what = {"huggingface": "a Hugging Face model directory", "gguf": "a GGUF file"}.get(kind, kind)
        raise ModelLoadError(
            f"{file} is {what}, not an llmbuilder checkpoint",
            hint="export hf converts llmbuilder models (model.pt or a trainer checkpoint); serve this one as it is",
        )


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _sibling(out: Path, tag: str) -> Path:
    """An unused hidden name beside ``out`` (same filesystem, so renames are atomic)."""
    return out.parent / f".{out.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"


_STALE = re.compile(r"^\..+\.(?:tmp|old)-(\d+)-[0-9a-f]{8}$")


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, OSError):
        return True  # someone else's process, or a pid this system cannot name: leave its files alone
    return True


def _remove_export(d: Path) -> None:
    """Delete an export directory, the marker last (so a half-deleted one is still recognised)."""
    for e in d.iterdir():
        if e.name != MARKER:
            e.unlink()
    (d / MARKER).unlink(missing_ok=True)
    d.rmdir()


def _sweep_stale(parent: Path) -> None:
    """Remove what killed exports left in ``parent``: hidden ``.NAME.tmp-PID-…`` / ``.NAME.old-PID-…``
    directories holding only export files and the marker, whose process no longer runs."""
    try:
        candidates = [e for e in parent.iterdir() if _STALE.match(e.name)]
    except OSError:
        return
    for d in candidates:
        m = _STALE.match(d.name)
        try:
            if d.is_symlink() or not d.is_dir() or _running(int(m.group(1))):
                continue
            entries = list(d.iterdir())
            if MARKER in {e.name for e in entries} and _is_previous_export(entries):
                _remove_export(d)
        except OSError:
            continue


def _place(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` directory to ``out``, replacing an existing one only at the last moment."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = _sibling(out, "old")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old, out)  # put the previous export back
        raise
    try:
        _remove_export(old) if old.is_dir() and (old / MARKER).exists() else old.rmdir()
    except OSError:
        shutil.rmtree(old, ignore_errors=True)


def _file_mode() -> int:
    """The mode a new file gets from ``open()``: 0666 less the umask (read without changing it for long)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def export_hf(
    model_path: str | os.PathLike[str],
    tokenizer_path: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    num_heads: int | None = None,
    overwrite: bool = False,
    dtype: str = "float32",
) -> ExportReport:
    """Write the llmbuilder model at ``model_path`` as a Hugging Face GPT-2 directory ``out_dir``.

    ``tokenizer_path``: llmbuilder's tokenizer directory, its ``tokenizer.model`` or a ``tokenizer.json``
    (default: the ``tokenizer/`` directory beside the model). ``dtype``: the stored weight dtype
    (``float32`` keeps the exact weights; ``float16``/``bfloat16`` halve the size and round them).
    An existing non-empty ``out_dir`` is refused; with ``overwrite`` a previous export (a directory that
    holds `MARKER` and export files only) is replaced, anything else still refused. Nothing is changed
    before the export is complete. Failures to write are `UsageError`s (exit 2) that name ``out_dir``.
    """
    t0 = time.perf_counter()
    if out_dir is None or str(out_dir) == "":
        raise UsageError("no output directory given", hint="pass --out DIR")
    if dtype not in EXPORT_DTYPES:
        raise UsageError(f"unknown export dtype {dtype!r}", hint="use float32, float16 or bfloat16")
    text = os.fspath(out_dir)
    if "\0" in text:
        raise UsageError("the output directory name holds a NUL byte", hint="pass another --out DIR")
    out = Path(os.path.realpath(user_path(text)))  # through links: the directory the files will land in
    if out.parent == out:
        raise UsageError(f"cannot export to {out}", hint="pass a new directory as --out DIR")
    _check_out_dir(out, overwrite)

    file = resolve_model_file(model_path)
    _refuse_other_formats(file)
    tokenizer_path = tokenizer_path_for(file, tokenizer_path)
    config, state, fmt, stored_dtype = read_checkpoint(file, num_heads=num_heads)
    tok_file = resolve_tokenizer_file(tokenizer_path)
    sources = (Path(os.path.realpath(file)), Path(os.path.realpath(tok_file)))
    _check_out_dir(out, overwrite, sources)
    tok = _from_sentencepiece(tok_file) if tok_file.suffix == ".model" else _from_tokenizer_json(tok_file)
    if tok.vocab_size > config.vocab_size:
        raise TokenizerError(
            f"the tokenizer has {tok.vocab_size} tokens but the model's embedding has only {config.vocab_size} rows",
            hint="use the tokenizer the model was trained with",
        )

    tied = head_is_tied(state)
    tensors = gpt2_state_dict(config, state, tied=tied, dtype=getattr(torch, dtype))
    bos, eos, pad = tok.ids["bos"], tok.ids["eos"], tok.ids["pad"]
    files = {
        "config.json": gpt2_config(config, tied=tied, dtype=dtype, bos_id=bos, eos_id=eos, pad_id=pad),
        "generation_config.json": _generation_config(bos, eos, pad),
        "tokenizer_config.json": _tokenizer_config(tok, config.block_size),
        "special_tokens_map.json": {k: v for k, v in tok.specials.items() if v is not None},
    }

    marker = {"written_by": "llmbuilder-cli", "version": __version__, "source": str(sources[0]),
              "tokenizer": str(sources[1]), "dtype": dtype}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_failed(out, os_error_text(exc)) from None
    _sweep_stale(out.parent)
    tmp = _sibling(out, "tmp")
    try:
        tmp.mkdir()  # mode from the umask, like any directory the user creates
    except OSError as exc:
        raise _write_failed(out, os_error_text(exc)) from None
    try:
        from safetensors.torch import save_file

        # The marker first: a killed export's directory is recognised by it (ASCII: any path can be written).
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        os.chmod(tmp / "model.safetensors", _file_mode())  # safetensors creates it 0600
        for name, data in files.items():
            _write_json(tmp / name, data)
        (tmp / "tokenizer.json").write_text(tok.tokenizer_json + "\n", encoding="utf-8")
        if tok.chat_template:
            (tmp / "chat_template.jinja").write_text(tok.chat_template, encoding="utf-8")
        _check_out_dir(out, overwrite, sources)  # still free? (another process may have written there meanwhile)
        sizes = {n: (tmp / n).stat().st_size for n in EXPORT_FILES if (tmp / n).is_file()}
        _place(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = _io_failure(exc)
        if reason is not None:
            raise _write_failed(out, reason) from None
        raise

    summary = {
        "architecture": "GPT2LMHeadModel",
        "source": str(file.resolve()),
        "source_format": fmt,
        "source_dtype": stored_dtype,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_embd": config.n_embd,
        "n_positions": config.block_size,
        "vocab_size": config.vocab_size,
        "tie_word_embeddings": tied,
        "dtype": dtype,
        "parameters": config.num_parameters + (0 if tied else config.vocab_size * config.n_embd),
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
    }
    notes = list(tok.notes)
    if dtype != "float32":
        notes.append(f"weights rounded to {dtype}: outputs may differ slightly from llmbuilder's float32 model")
    return ExportReport(
        out_dir=out.resolve(), files=sizes, config=summary, tokenizer=tok.how, notes=notes,
        seconds=time.perf_counter() - t0,
    )
