"""Describe a model file without running it: what ``llmbuilder info`` prints.

Reads and validates the checkpoint exactly as loading does (so a file described here will load), then
reports its architecture, size, context, vocabulary, format, stored dtype and sha256, and the tokenizer
that goes with it. A missing tokenizer is reported, not fatal; an explicitly given one that cannot be
read is an error, as it would be when generating.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import TokenizerError
from .loading import ModelInfo, default_tokenizer_path, head_is_tied, read_checkpoint, resolve_model_file
from .tokenizer import load_tokenizer

__all__ = ["describe"]


def _tokenizer_section(tokenizer_path: str | Path | None, model_file: Path, vocab: int) -> dict[str, Any]:
    explicit = tokenizer_path not in (None, "")
    path = tokenizer_path if explicit else default_tokenizer_path(model_file)
    if path is None:
        return {"found": False, "note": "none beside the model; pass --tokenizer DIR"}
    try:
        tok = load_tokenizer(path)
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
    }
    if tok.vocab_size > vocab:
        out["note"] = f"has {tok.vocab_size} tokens but the model only {vocab}: not this model's tokenizer"
    elif not tok.eos_ids:
        out["note"] = "no end-of-sequence token: generation always runs to --max-tokens"
    return out


def describe(model_path: str | Path, tokenizer_path: str | Path | None = None, *, num_heads: int | None = None) -> dict[str, Any]:
    """A JSON-ready description of the model at ``model_path`` and its tokenizer."""
    file = resolve_model_file(model_path)
    config, state, fmt, stored_dtype = read_checkpoint(file, num_heads=num_heads)
    info = ModelInfo.for_file(file, config, fmt, stored_dtype)
    tied = head_is_tied(state)
    return {
        "path": str(info.path),
        "format": info.format,
        "architecture": info.architecture,
        "parameters": info.num_parameters if tied else info.num_parameters + config.vocab_size * config.n_embd,
        "layers": config.n_layer,
        "heads": config.n_head,
        "embedding_dim": config.n_embd,
        "context_length": config.block_size,
        "vocab_size": config.vocab_size,
        "tied_output_head": tied,
        "stored_dtype": info.stored_dtype,
        "file_size": info.file_size,
        "sha256": info.sha256(),
        "tokenizer": _tokenizer_section(tokenizer_path, file, config.vocab_size),
    }
