"""``llmbuilder info [MODEL]``: what a model is, printed as aligned lines or as JSON (``--json``).

The description is the requested output, so it goes to stdout. With no MODEL it describes the built-in
demo model. Nothing is generated; the model is read and checked as it would be for generation (a Hugging
Face directory only from its safetensors headers, a GGUF file from its header), and the last line, ``Runs
here``, gives the verdict of those checks (``engine/describe.py``). A model the loader refuses is still
described, from its metadata: exit code 0 whenever a description was printed (scripts test ``"runs"`` in
the JSON); a path that names no model, or a file that cannot be parsed at all, is an error (exit 3).
"""

# No `from __future__ import annotations`: with it Typer compiles every option's annotation from a
# string, several times, on each start of the program (see app.py).

import json
import sys
from typing import Annotated, Any, Optional

import typer

from .completion import complete_model


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n:,} ({n / scale:.2f}{unit})"
    return f"{n:,}"


def counted(n: int, noun: str) -> str:
    """``1 head``, ``4 heads``: a count with its noun in the right number (regular plurals only)."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _short_size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:,} bytes"


def _architecture(d: dict[str, Any]) -> str:
    """``llama: 2 layers, 4 heads (2 key/value), width 32, tied output head``: what is known of it."""
    parts = []
    if d.get("layers") is not None:
        parts.append(counted(d["layers"], "layer"))
    if d.get("heads") is not None:
        heads = counted(d["heads"], "head")
        kv = d.get("kv_heads")
        if kv is not None and kv != d["heads"]:
            heads += f" ({kv} key/value)"
        parts.append(heads)
    if d.get("embedding_dim") is not None:
        parts.append(f"width {d['embedding_dim']}")
    if d.get("tied_output_head"):
        parts.append("tied output head")
    name = d.get("architecture") or "unknown architecture"
    return f"{name}: {', '.join(parts)}" if parts else name


def _tensor_types(types: list[dict[str, Any]]) -> str:
    """``F32: 20 tensors, 12.3 KiB; Q8_0: 1 tensor, 4.5 KiB``"""
    return "; ".join(
        f"{t['type']}: {counted(t['tensors'], 'tensor')}"
        + ("" if t.get("bytes") is None else f", {_short_size(t['bytes'])}")
        for t in types
    )


def verdict(d: dict[str, Any]) -> str:
    """The ``Runs here`` line: ``yes``, ``yes, with --quantize int8 (why)`` or ``no — why``."""
    if not d.get("runs"):
        return f"no — {d.get('why')}"
    if d.get("quantize"):
        return f"yes, with --quantize {d['quantize']} ({d['why']})"
    return "yes"


def format_info(d: dict[str, Any]) -> str:
    """The aligned, human-readable form of `llmbuilder_cli.api.model_info`'s dict."""
    rows: list[tuple[str, str]] = []
    if d.get("name"):
        rows.append(("Model", f"{d['name']} (built-in)" if d.get("demo") else f"{d['name']} (Hugging Face cache)"))
    rows += [("Path", d["path"]), ("Format", d["format"]), ("Architecture", _architecture(d))]
    if d.get("parameters") is not None:
        rows.append(("Parameters", _count(d["parameters"])))
    if d.get("context_length") is not None:
        rows.append(("Context", f"{d['context_length']:,} tokens"))
    if d.get("vocab_size") is not None:
        rows.append(("Vocabulary", f"{d['vocab_size']:,}"))
    if d.get("rope_theta") is not None:
        scaling = f", {d['rope_scaling']} scaling" if d.get("rope_scaling") else ""
        rows.append(("Positions", f"rotary, theta {d['rope_theta']:g}{scaling}"))
    elif d.get("rope_scaling"):
        rows.append(("Positions", f"rotary, {d['rope_scaling']} scaling"))
    att = d.get("attention")
    if att:
        local = f" (rotary theta {att['sliding_rope_theta']:g})" if att.get("sliding_rope_theta") else ""
        where = ("every layer" if not att["full_layers"]
                 else f"{att['sliding_layers']} layers{local}, full in {att['full_layers']}")
        rows.append(("Attention", f"sliding window of {att['sliding_window']:,} tokens in {where}"))
    if d.get("stored_dtype") and (d.get("run_dtype") or not d.get("tensor_types")):  # else Tensors says it all
        run = f", run in {d['run_dtype']}" if d.get("run_dtype") else ""
        rows.append(("Weights", f"{d['stored_dtype']} in the file{run}"))
    if d.get("tensor_types"):
        rows.append(("Tensors", _tensor_types(d["tensor_types"])))
    rows.append(("File size", _size(d["file_size"])))
    if d.get("sha256"):
        rows.append(("SHA-256", d["sha256"]))
    tok = d["tokenizer"]
    if tok.get("found"):
        eos = ", ".join(f"{e['token']} (id {e['id']})" for e in tok["eos"]) or "none"
        bos = tok.get("bos")
        starts = f", starts with {bos['token']} (id {bos['id']})" if bos and tok.get("add_bos") else ""
        rows.append(("Tokenizer", f"{tok['kind']}, {tok['vocab_size']:,} tokens, EOS {eos}{starts}"))
        rows.append(("", tok["path"]))
    elif tok.get("model"):
        rows.append(("Tokenizer", f"{tok['model']!r} model in the file, not usable"))
    else:
        rows.append(("Tokenizer", "not found"))
    if tok.get("note"):
        rows.append(("", f"note: {tok['note']}"))
    if (tok.get("found") and tok.get("kind") == "huggingface") or (not tok.get("found") and "chat_template" in tok):
        rows.append(("Chat", "chat template included" if tok.get("chat_template") else "no chat template"))
    defaults = d.get("generation_defaults")
    if defaults:
        rows.append(("Defaults", ", ".join(f"{k} {v}" for k, v in defaults.items()) + " (generation_config.json)"))
    demo = d.get("demo")
    if demo and demo.get("heldout_loss") is not None:
        rows.append(
            (
                "Training",
                f"held-out loss {demo['heldout_loss']}, perplexity {demo['heldout_perplexity']} "
                f"after {demo['tokens_seen']:,} tokens ({demo['trained_by']})",
            )
        )
    rows.append(("Runs here", verdict(d)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}".rstrip() for k, v in rows)


def info_command(
    model: Annotated[
        Optional[str],
        typer.Argument(
            help="llmbuilder model file or run directory, Hugging Face model directory, .gguf file, or ORG/NAME "
            "from the local Hugging Face cache (see 'llmbuilder list'). "
            "Default: the built-in demo model ('demo').",
            show_default=False,
            autocompletion=complete_model,
        ),
    ] = None,
    tokenizer: Annotated[
        Optional[str],
        typer.Option("--tokenizer", "-t", help="Tokenizer directory or file. Default: tokenizer/ beside the model (the model's own for "
            "Hugging Face directories and GGUF files)."),
    ] = None,
    num_heads: Annotated[
        Optional[int],
        typer.Option("--num-heads", help="Attention heads, only for old checkpoints that do not record them.", min=1),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of aligned lines.")] = False,
) -> int:
    """Show what a model is: architecture, parameters, context, vocabulary, format, weights, sha256, tokenizer.

    The last line says whether it runs here ('Runs here  yes', or 'no — why'), from the checks loading makes;
    any GGUF file or Hugging Face directory that can be parsed is described, also of an architecture this tool
    does not run. The exit code is 0 whenever the model was described: scripts read "runs" from --json.

    Examples:

      llmbuilder info                 (the built-in demo model)

      llmbuilder info run/model.pt --json
    """
    from .. import api

    d = api.model_info(model, tokenizer, num_heads=num_heads)
    sys.stdout.write((json.dumps(d, indent=2) if as_json else format_info(d)) + "\n")
    return 0
