"""Describe a model without running it: what ``llmbuilder info`` prints.

Reads and validates the model exactly as loading does (so a model described here will load), then
reports its architecture (layers, heads and key/value heads, width, context, vocabulary, rotary base,
sliding-window layers), format, stored dtype or quantization, the dtype it runs in by default, size and
sha256, and the tokenizer that goes with it (EOS/BOS, chat template).
llmbuilder checkpoints are read whole; a Hugging Face directory only from its safetensors headers; a GGUF
file is read as loading does. A missing tokenizer is reported, not fatal; an explicitly given one that
cannot be read is an error, as it would be when generating.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import TokenizerError
from .formats import hf_dir
from .formats.llmbuilder import head_is_tied, read_checkpoint
from .formats.locate import default_tokenizer_path, hf_tokenizer_path, model_format, resolve_model_file
from .loaded import ModelInfo
from .loading import read_gguf_model
from .runtime import resolve_device, resolve_dtype
from .tokenizers.tokenizer import HFTokenizer, Tokenizer, load_tokenizer

__all__ = ["describe"]


def _tokenizer_section(
    tokenizer_path: str | Path | None,
    default: Callable[[], Path | None],
    vocab: int,
    *,
    embedded: Tokenizer | None = None,
    **options: Any,
) -> dict[str, Any]:
    explicit = tokenizer_path not in (None, "")
    tok = None if explicit else embedded
    if tok is None:
        try:
            path = tokenizer_path if explicit else default()
        except TokenizerError:
            path = None
        if path is None:
            return {"found": False, "note": "none beside the model; pass --tokenizer DIR"}
        try:
            tok = load_tokenizer(path, **options)
        except TokenizerError:
            if explicit:
                raise
            return {"found": False, "note": f"unreadable tokenizer in {path}"}
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
    if tok.vocab_size > vocab:
        out["note"] = f"has {tok.vocab_size} tokens but the model only {vocab}: not this model's tokenizer"
    elif not tok.eos_ids:
        out["note"] = "no end-of-sequence token: generation always runs to --max-tokens"
    return out


def _llmbuilder(file: Path, tokenizer_path: Any, num_heads: int | None) -> tuple[ModelInfo, bool, dict, dict]:
    config, state, fmt, stored_dtype = read_checkpoint(file, num_heads=num_heads)
    info = ModelInfo.for_file(file, config, fmt, stored_dtype)
    tok = _tokenizer_section(tokenizer_path, lambda: default_tokenizer_path(file), config.vocab_size, add_bos=False)
    return info, head_is_tied(state), tok, {}


def _huggingface(directory: Path, tokenizer_path: Any) -> tuple[ModelInfo, bool, dict, dict]:
    d = hf_dir.inspect_hf_dir(directory)
    eos = hf_dir.eos_token_ids(d.generation_config, d.hf_config)
    tok = _tokenizer_section(tokenizer_path, lambda: hf_tokenizer_path(directory), d.config.vocab_size,
                             extra_eos_ids=eos)
    defaults = hf_dir.generation_defaults(d.generation_config)
    return ModelInfo.for_hf_dir(d), d.config.tie_word_embeddings, tok, defaults


def _gguf(file: Path, tokenizer_path: Any) -> tuple[ModelInfo, bool, dict, dict]:
    g, config, _ = read_gguf_model(file, torch.float32)  # the header only: no tensor is read
    embedded = HFTokenizer.from_tokenizer(
        g.tokenizer, path=file, eos_ids=g.eos_ids, bos_id=g.bos_id, add_bos=g.add_bos,
        chat_template=g.chat_template, special_tokens=g.special_tokens,
    )
    tok = _tokenizer_section(tokenizer_path, lambda: None, config.vocab_size, embedded=embedded,
                             extra_eos_ids=g.eos_ids)
    info = ModelInfo(path=file.resolve(), format="GGUF", architecture=config.model_type, config=config,
                     file_size=file.stat().st_size, stored_dtype=g.quantization, files=(file.resolve(),),
                     quantization=g.quantization)
    return info, config.tie_word_embeddings, tok, {}


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


def describe(model_path: str | Path, tokenizer_path: str | Path | None = None, *, num_heads: int | None = None) -> dict[str, Any]:
    """A JSON-ready description of the model at ``model_path`` and its tokenizer."""
    path = resolve_model_file(model_path)
    fmt = model_format(path)
    if fmt == "huggingface":
        info, tied, tok, defaults = _huggingface(path, tokenizer_path)
    elif fmt == "gguf":
        info, tied, tok, defaults = _gguf(path, tokenizer_path)
    else:
        info, tied, tok, defaults = _llmbuilder(path, tokenizer_path, num_heads)
    config = info.config
    parameters = info.num_parameters
    if fmt == "llmbuilder" and not tied:  # GPTConfig counts the head once, as llmbuilder ties it
        parameters += config.vocab_size * config.n_embd
    rope = getattr(config, "rope", None)
    return {
        "path": str(info.path),
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
        "run_dtype": str(resolve_dtype("auto", resolve_device("auto"))).replace("torch.", ""),
        "file_size": info.file_size,
        "sha256": info.sha256(),
        "tokenizer": tok,
        "generation_defaults": defaults,
    }
