"""Describe a model without running it: what ``llmbuilder info`` prints, and whether it runs here.

The verdict comes from the loader itself: `loading.prepare` reads and checks the model and its tokenizer
exactly as loading does, up to the weights, and `Prepared.check` adds what loading checks for the dtype it
will run in (quantization, memory; with weights too large, int8 and then int4 are tried where the
architecture has them, and the first that fits is suggested). The first refusal is the verdict's reason
(``runs``: false, ``why``: its one line); there is no separate list of what is supported.

A model that prepares is described from what the loader read: architecture (layers, heads and
key/value heads, width, context, vocabulary, rotary base, sliding-window layers), format, stored dtype or
quantization, the dtype it runs in, size and sha256, and its tokenizer (EOS/BOS, chat template).
One the loader refuses is described from its metadata alone, as far as it goes: a GGUF file from its
header (read even when the tensor data is cut short), a Hugging Face directory from config.json and its
safetensors headers, an llmbuilder checkpoint as read by `read_checkpoint` (which must succeed: a file
that cannot be parsed at all is an error, as is an explicitly given tokenizer that cannot be read).
GGUF files and Hugging Face directories also list their tensor types with counts and bytes. No tensor
data is read (llmbuilder checkpoints are read whole: that is their format), except the sha256 over the files.
"""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import ModelLoadError, OutOfMemoryError, TokenizerError, UsageError
from .formats import hf_dir
from .formats.gguf.file import read_gguf_header, read_gguf_tokenizer
from .formats.llmbuilder import head_is_tied, read_checkpoint
from .formats.locate import default_tokenizer_path, hf_tokenizer_path, model_format, resolve_model_file
from .loaded import ModelInfo, sha256_of
from .loading import Prepared, prepare, quantizable
from .runtime import resolve_device, resolve_dtype
from .tokenizers.tokenizer import HFTokenizer, Tokenizer, load_tokenizer

__all__ = ["describe"]

#: What the loader refuses on; anything else is a bug and propagates.
_REFUSALS = (ModelLoadError, TokenizerError, UsageError, OutOfMemoryError)
#: Quantizations tried, in order, when the weights do not fit as they are.
_SMALLER = ("int8", "int4")


# ------------------------------------------------------------------------------------------ tokenizer
def _tokenizer_fields(tok: Tokenizer, vocab: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "found": True,
        "path": str(Path(tok.path).resolve()),
        "kind": tok.kind,
        "vocab_size": tok.vocab_size,
        "eos": [{"id": i, "token": tok.id_to_token(i)} for i in tok.eos_ids],
        "bos": None if tok.bos_id is None else {"id": tok.bos_id, "token": tok.id_to_token(tok.bos_id)},
        "add_bos": tok.add_bos,
        "chat_template": tok.chat_template is not None,
    }
    if vocab is not None and tok.vocab_size > vocab:
        out["note"] = f"has {tok.vocab_size} tokens but the model only {vocab}: not this model's tokenizer"
    elif not tok.eos_ids:
        out["note"] = "no end-of-sequence token: generation always runs to --max-tokens"
    return out


def _tokenizer_section(
    tokenizer_path: str | Path | None,
    default: Callable[[], Path | None],
    vocab: int | None,
    *,
    embedded: Callable[[], Tokenizer] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The tokenizer of a model the loader refused: the one given (an error if unreadable), else the
    model's own or the one beside it (a note if there is none or it is unreadable)."""
    explicit = tokenizer_path not in (None, "")
    if explicit:
        return _tokenizer_fields(load_tokenizer(tokenizer_path, **options), vocab)
    if embedded is not None:
        try:
            return _tokenizer_fields(embedded(), vocab)
        except (TokenizerError, ModelLoadError) as exc:
            return {"found": False, "note": exc.one_line()}
    try:
        path = default()
    except TokenizerError:
        path = None
    if path is None:
        return {"found": False, "note": "none beside the model; pass --tokenizer DIR"}
    try:
        return _tokenizer_fields(load_tokenizer(path, **options), vocab)
    except TokenizerError:
        return {"found": False, "note": f"unreadable tokenizer in {path}"}


# --------------------------------------------------------------------------- from the metadata alone
def _whole(value: Any) -> int | None:
    """A positive whole number from metadata (a per-layer array counts when all its values agree)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        value = value[0] if value and all(v == value[0] for v in value) else None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _tensor_types(tensors: Iterable[tuple[str, int | None]]) -> list[dict[str, Any]]:
    """[(type name, bytes or None)] → one entry per type, most tensors first: type, tensors, bytes."""
    counts: Counter[str] = Counter()
    sizes: dict[str, int | None] = {}
    for name, nbytes in tensors:
        counts[name] += 1
        sizes[name] = None if nbytes is None or sizes.get(name, 0) is None else sizes.get(name, 0) + nbytes
    return [{"type": t, "tensors": n, "bytes": sizes[t]} for t, n in counts.most_common()]


def _stored(types: list[dict[str, Any]]) -> str | None:
    if not types:
        return None
    if len(types) == 1:
        return types[0]["type"]
    return ", ".join(f"{t['type']} ({t['tensors']} tensor{'s' if t['tensors'] != 1 else ''})" for t in types)


def _shape_fields(arch: str | None, layers: Any, heads: Any, kv: Any, width: Any, head_dim: Any, context: Any,
                  vocab: Any, parameters: int | None, tied: bool | None) -> dict[str, Any]:
    heads, width = _whole(heads), _whole(width)
    return {
        "architecture": arch,
        "parameters": parameters,
        "layers": _whole(layers),
        "heads": heads,
        "kv_heads": _whole(kv) or heads,
        "head_dim": _whole(head_dim) or (width // heads if width and heads else None),
        "embedding_dim": width,
        "context_length": _whole(context),
        "vocab_size": _whole(vocab),
        "tied_output_head": tied,
    }


def _gguf_overview(file: Path, tokenizer_path: Any) -> dict[str, Any]:
    header = read_gguf_header(file, cut_short_ok=True)  # the header only, even when the data is cut short
    meta, tensors = header.metadata, header.tensors
    arch = meta.get("general.architecture")
    arch = arch if isinstance(arch, str) else None
    key = lambda name: meta.get(f"{arch}.{name}")  # noqa: E731
    embed, words = tensors.get("token_embd.weight"), meta.get("tokenizer.ggml.tokens")
    vocab = embed.shape[0] if embed is not None else len(words) if isinstance(words, list) else None
    types = _tensor_types((t.type_name, header.tensor_bytes(t)) for t in tensors.values())
    scaling = key("rope.scaling.type")
    if "rope_factors_long.weight" in tensors:
        scaling = "longrope"
    out = {
        "format": "GGUF",
        **_shape_fields(arch, key("block_count"), key("attention.head_count"), key("attention.head_count_kv"),
                        key("embedding_length"), key("attention.key_length"), key("context_length"), vocab,
                        sum(math.prod(t.shape) for t in tensors.values()), "output.weight" not in tensors),
        "rope_theta": _number(key("rope.freq_base")),
        "rope_scaling": scaling if isinstance(scaling, str) and scaling != "none" else None,
        "stored_dtype": _stored(types),
        "quantization": _stored(types),
        "tensor_types": types,
        "file_size": header.file_size,
        "files": (file,),
    }
    model = meta.get("tokenizer.ggml.model")

    def embedded() -> Tokenizer:
        t = read_gguf_tokenizer(meta, file.name)
        return HFTokenizer.from_tokenizer(t.tokenizer, path=file, eos_ids=t.eos_ids, bos_id=t.bos_id,
                                          add_bos=t.add_bos, chat_template=t.chat_template,
                                          special_tokens=t.special_tokens)

    tok = _tokenizer_section(tokenizer_path, lambda: None, out["vocab_size"], embedded=embedded)
    tok["model"] = model if isinstance(model, str) else None
    tok.setdefault("chat_template", isinstance(meta.get("tokenizer.chat_template"), str))
    out["tokenizer"] = tok
    return out


def _safetensors_tensors(file: Path) -> list[tuple[str, int | None, int]]:
    """[(dtype name, bytes, elements)] of each tensor in a safetensors file, from its JSON header only;
    [] when the header cannot be read."""
    try:
        with open(file, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > min(file.stat().st_size, 100 << 20):
                return []
            header = json.loads(f.read(n))
    except (OSError, struct.error, ValueError):
        return []
    out = []
    for name, entry in header.items() if isinstance(header, dict) else ():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        nbytes = offsets[1] - offsets[0] if isinstance(offsets, list) and len(offsets) == 2 else None
        elements = math.prod(shape) if isinstance(shape, list) and all(isinstance(d, int) for d in shape) else 0
        out.append((hf_dir.DTYPE_NAMES.get(dtype, str(dtype)), nbytes, elements))
    return out


def _hf_overview(directory: Path, tokenizer_path: Any) -> dict[str, Any]:
    cfg = hf_dir.read_config(directory)
    archs = [a for a in cfg.get("architectures") or [] if isinstance(a, str)] \
        if isinstance(cfg.get("architectures"), list) else []
    mt = cfg.get("model_type")
    arch = mt if isinstance(mt, str) else (archs[0] if archs else None)
    first = lambda *names: next((cfg[n] for n in names if cfg.get(n) is not None), None)  # noqa: E731
    files = sorted(directory.glob("*.safetensors"))
    tensors = [t for f in files for t in _safetensors_tensors(f)]
    types = _tensor_types((dtype, nbytes) for dtype, nbytes, _ in tensors)
    rope = cfg.get("rope_scaling") if isinstance(cfg.get("rope_scaling"), dict) else cfg.get("rope_parameters")
    rope = rope if isinstance(rope, dict) else {}
    scaling = rope.get("rope_type", rope.get("type"))
    tied = cfg.get("tie_word_embeddings")
    out = {
        "format": "Hugging Face safetensors" + (f" ({len(files)} shards)" if len(files) > 1 else ""),
        **_shape_fields(arch, first("num_hidden_layers", "n_layer"), first("num_attention_heads", "n_head"),
                        first("num_key_value_heads"), first("hidden_size", "n_embd"), first("head_dim"),
                        first("max_position_embeddings", "n_positions"), first("vocab_size"),
                        sum(n for _, _, n in tensors) or None, tied if isinstance(tied, bool) else None),
        "rope_theta": _number(first("rope_theta") or rope.get("rope_theta")),
        "rope_scaling": scaling if isinstance(scaling, str) and scaling != "default" else None,
        "stored_dtype": _stored(types),
        "quantization": None,
        "tensor_types": types or None,
        "file_size": sum(f.stat().st_size for f in files),
        "files": tuple(files),
    }
    out["tokenizer"] = _tokenizer_section(tokenizer_path, lambda: hf_tokenizer_path(directory), out["vocab_size"],
                                          extra_eos_ids=hf_dir.eos_token_ids({}, cfg))
    try:  # a model refused for something else (its tokenizer, say) may still have a config we read
        out["attention"] = _attention(hf_dir.model_config(cfg))
    except _REFUSALS:
        out["attention"] = None
    return out


def _llmbuilder_overview(file: Path, tokenizer_path: Any, num_heads: int | None) -> dict[str, Any]:
    config, state, fmt, stored_dtype = read_checkpoint(file, num_heads=num_heads)
    info = ModelInfo.for_file(file, config, fmt, stored_dtype)
    return {
        **_described(info, head_is_tied(state)),
        "validated": True,  # read_checkpoint checked it: it runs in the default dtype once it has a tokenizer
        "tokenizer": _tokenizer_section(tokenizer_path, lambda: default_tokenizer_path(file), config.vocab_size,
                                        add_bos=False),
    }


# -------------------------------------------------------------------------------- what the loader read
def _attention(config: Any) -> dict[str, Any] | None:
    """For models that mix sliding-window and full-attention layers (Gemma 3): the window, how many layers
    of each kind, and the sliding layers' rotary base; None for models whose layers all attend alike."""
    types = getattr(config, "layer_types", None)
    if not types or "sliding_attention" not in types:
        return None
    local = getattr(config, "rope_local", None)
    return {
        "sliding_window": config.sliding_window,
        "sliding_layers": sum(t == "sliding_attention" for t in types),
        "full_layers": sum(t == "full_attention" for t in types),
        "sliding_rope_theta": None if local is None else local.theta,
    }


def _described(info: ModelInfo, tied: bool) -> dict[str, Any]:
    """The description of a model the loader read and validated (its tokenizer aside)."""
    config = info.config
    parameters = info.num_parameters
    if info.architecture == "llmbuilder-gpt" and not tied:  # GPTConfig counts the head once, as llmbuilder ties it
        parameters += config.vocab_size * config.n_embd
    rope = getattr(config, "rope", None)
    return {
        "format": info.format,
        "architecture": info.architecture,
        "parameters": parameters,
        "layers": config.n_layer,
        "heads": config.n_head,
        "kv_heads": getattr(config, "n_kv_head", config.n_head),
        "head_dim": config.head_dim,
        "embedding_dim": config.n_embd,
        "context_length": config.block_size,
        "vocab_size": config.vocab_size,
        "rope_theta": None if rope is None else rope.theta,
        "rope_scaling": None if rope is None or rope.kind == "default" else rope.kind,
        "attention": _attention(config),
        "tied_output_head": tied,
        "stored_dtype": info.stored_dtype,
        "quantization": info.quantization,
        "file_size": info.file_size,
        "files": info.files or (info.path,),
    }


def _verdict(prepared: Prepared, dtype: Any) -> dict[str, Any]:
    """Whether the prepared model fits as it runs by default, else with the first quantization that fits."""
    try:
        prepared.check(dtype, None)
        return {"runs": True, "why": None, "quantize": None}
    except OutOfMemoryError as exc:
        refusal = exc
    if quantizable(prepared.config):
        for quantize in _SMALLER:
            try:
                prepared.check(dtype, quantize)
            except OutOfMemoryError:
                continue
            return {"runs": True, "why": refusal.message, "quantize": quantize}
    return {"runs": False, "why": refusal.one_line(), "quantize": None, "refused_by": "memory"}


def _refused_by(exc: Exception) -> str:
    """What a refusal is about: ``tokenizer`` (another tokenizer may fix it), ``memory``, or ``model``."""
    if isinstance(exc, TokenizerError):
        return "tokenizer"
    return "memory" if isinstance(exc, OutOfMemoryError) else "model"


def describe(model_path: str | Path, tokenizer_path: str | Path | None = None, *,
             num_heads: int | None = None) -> dict[str, Any]:
    """A JSON-ready description of the model at ``model_path`` and its tokenizer, with the verdict:
    ``runs`` (whether `load` would take it here, in the default dtype), ``why`` (the loader's refusal when
    it would not; the memory shortfall when it runs only quantized), ``quantize`` (the quantization it
    needs, or None) and ``refused_by`` (``model``, ``tokenizer`` or ``memory``; None when it runs)."""
    path = resolve_model_file(model_path)
    fmt = model_format(path)
    dtype = resolve_dtype("auto", resolve_device("auto"))
    try:
        prepared = prepare(path, tokenizer_path, dtype=dtype, num_heads=num_heads)
    except _REFUSALS as exc:
        refusal = exc
        prepared = None
    if prepared is not None:
        out = {**_described(prepared.info, prepared.tied), "validated": True,
               "tokenizer": _tokenizer_fields(prepared.tokenizer, prepared.config.vocab_size),
               "generation_defaults": prepared.generation_defaults, **_verdict(prepared, dtype)}
        if fmt == "gguf":
            out["tensor_types"] = _gguf_overview_types(path)
        elif fmt == "huggingface":
            files = prepared.info.files
            out["tensor_types"] = _tensor_types((dt, nb) for f in files for dt, nb, _ in _safetensors_tensors(f))
    else:
        overview = {"gguf": lambda: _gguf_overview(path, tokenizer_path),
                    "huggingface": lambda: _hf_overview(path, tokenizer_path),
                    "llmbuilder": lambda: _llmbuilder_overview(path, tokenizer_path, num_heads)}[fmt]
        out = {"attention": None, "generation_defaults": {}, **overview(),
               "runs": False, "why": refusal.one_line(), "quantize": None, "refused_by": _refused_by(refusal)}
    files = out.pop("files")
    return {
        "path": str(path.resolve()),
        "format": out["format"],
        "architecture": out["architecture"],
        "parameters": out["parameters"],
        "layers": out["layers"],
        "heads": out["heads"],
        "kv_heads": out["kv_heads"],
        "head_dim": out["head_dim"],
        "embedding_dim": out["embedding_dim"],
        "context_length": out["context_length"],
        "vocab_size": out["vocab_size"],
        "rope_theta": out["rope_theta"],
        "rope_scaling": out["rope_scaling"],
        "attention": out["attention"],
        "tied_output_head": out["tied_output_head"],
        "stored_dtype": out["stored_dtype"],
        "quantization": out["quantization"],
        "tensor_types": out.get("tensor_types"),
        "run_dtype": str(dtype).replace("torch.", "") if out.get("validated") else None,
        "file_size": out["file_size"],
        "sha256": sha256_of(files) if files else None,
        "tokenizer": out["tokenizer"],
        "generation_defaults": out["generation_defaults"],
        "runs": out["runs"],
        "why": out["why"],
        "quantize": out["quantize"],
        "refused_by": out.get("refused_by"),
    }


def _gguf_overview_types(file: Path) -> list[dict[str, Any]]:
    header = read_gguf_header(file)
    return _tensor_types((t.type_name, header.tensor_bytes(t)) for t in header.tensors.values())
