"""``llmbuilder export hf MODEL --out DIR``: write an llmbuilder model as a Hugging Face GPT-2 directory.

Serving engines (vLLM, TGI, transformers, conversion scripts for llama.cpp) read that layout, so a model
trained with llmbuilder can be served by them. The work is done by ``engine/formats/export_hf.py``, imported only
when the command runs (``--help`` never imports torch). Progress and the list of written files go to
stderr; stdout stays empty. What ``--force`` may replace, and how failures to write are reported, is
decided in the engine module (see its docstring).
"""

# No `from __future__ import annotations`: with it Typer compiles every option's annotation from a
# string, several times, on each start of the program (see app.py).

import os
import sys
from enum import Enum
from typing import Annotated, Optional

import typer

from .completion import complete_model

export_app = typer.Typer(
    help="Export a model for other tools.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class ExportDType(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _quote(path: str) -> str:
    """``path`` as a shell word; bytes that are not UTF-8 (surrogate escapes here) in bash's $'\\xNN' form."""
    if any("\udc80" <= c <= "\udcff" for c in path):
        raw = os.fsencode(path)
        return "$'" + "".join(chr(b) if 32 <= b < 127 and b not in (39, 92) else f"\\x{b:02x}" for b in raw) + "'"
    safe = all(c.isalnum() or c in "/._-+:@%" for c in path)
    return path if safe and path else "'" + path.replace("'", "'\\''") + "'"


def _shown(path: object) -> str:
    """A path for the messages: bytes that are not UTF-8 written as \\xNN, so any stream can take it."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


@export_app.command("hf")
def hf_command(
    model: Annotated[
        str,
        typer.Argument(help="llmbuilder model file or run directory ('demo' for the built-in demo model).",
                       autocompletion=complete_model),
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Directory to write (must be new or empty).")],
    tokenizer: Annotated[
        Optional[str],
        typer.Option("--tokenizer", "-t", help="Tokenizer directory or file. Default: tokenizer/ beside the model."),
    ] = None,
    num_heads: Annotated[
        Optional[int],
        typer.Option("--num-heads", help="Attention heads, only for old checkpoints that do not record them.", min=1),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace --out if it holds a previous export (never any other files).")
    ] = False,
    dtype: Annotated[
        ExportDType, typer.Option("--dtype", help="Stored weight type (float32 keeps the weights exact).")
    ] = ExportDType.float32,
) -> int:
    """Write MODEL as a Hugging Face GPT-2 directory (config.json, model.safetensors, tokenizer.json, ...).

    The result loads with transformers' GPT2LMHeadModel and can be served by engines such as vLLM or TGI.
    A SentencePiece tokenizer is converted to tokenizer.json with the same token ids. Files get the
    usual permissions (0666 less your umask).

    Every export holds llmbuilder_export.json, which marks it as one: --force replaces only such a
    directory, and only when it holds nothing else, so the model's own directory, its parent or files you
    added are never deleted (exit 2). A disk that is full or read-only is exit 2 too, leaving nothing behind.

    Examples:

      llmbuilder export hf run/model.pt --out run/hf

      llmbuilder export hf demo -o demo-hf --dtype float16
    """
    from ..api import resolve_model_arg
    from ..engine.formats.export_hf import export_hf

    model_path, tokenizer_path = resolve_model_arg(model, tokenizer)
    report = export_hf(
        model_path, tokenizer_path, out, num_heads=num_heads, overwrite=force, dtype=dtype.value
    )
    c = report.config
    err = sys.stderr
    err.write(
        f"exported {c['architecture']}: {c['n_layer']} layers, {c['n_head']} heads, width {c['n_embd']}, "
        f"context {c['n_positions']}, vocabulary {c['vocab_size']}, {c['dtype']}"
        f"{', tied output head' if c['tie_word_embeddings'] else ''} ({report.seconds:.2f} s)\n"
    )
    err.write(f"tokenizer: {report.tokenizer}\n")
    width = max(len(n) for n in report.files)
    for name, size in report.files.items():
        err.write(f"  {_shown(report.out_dir / name)}{' ' * (width - len(name))}  {_size(size)}\n")
    for note in report.notes:
        err.write(f"note: {note}\n")
    err.write(f"serve it with: vllm serve {_quote(str(report.out_dir))}\n")
    err.flush()
    return 0
