"""Machine-readable output: ``--json`` (one object), ``--jsonl`` (one line per prompt) and batch runs
from ``--prompts-file``. stdout carries only JSON; the summary line and errors go to stderr.

Each object is `llmbuilder_cli.api.generation_record`: the generation (prompt, text, token ids, finish
reason, stats), the effective config and the model identity (with sha256). Batch lines also carry
``index`` (the prompt's place among the file's prompts, from 0), ``line`` (its line in the file) and ``id``
when the line gave one. Prompts decode ``--batch-size`` at a time (``engine/batching.py``); lines are
written and flushed as each prompt finishes (``--ordered``: in file order), so a CI log shows progress
and a crash keeps finished results. Ctrl-C writes the running prompts' lines, marked cancelled.

A batch prompt that fails while running (e.g. a prompt that is empty after tokenization, a chat template
that cannot render it) does not stop the batch: its line is an error object ``{"line", "id", "prompt",
"error": {"message", "hint", "exit_code"}}``, the same error goes to stderr naming the line, the other
prompts run, and the run exits with `EXIT_PARTIAL` (4).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from ..batch import DEFAULT_BATCH_SIZE
from ..errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL

if TYPE_CHECKING:  # pragma: no cover
    from ..batch import BatchSize, PromptSpec
    from ..config import GenerationConfig
    from ..engine.loading import LoadedModel
    from ..types import GenerationResult


@dataclass(frozen=True)
class ChatPrompt:
    """``--chat``: each prompt is a user message laid out with the chat template (after ``system``)."""

    system: str = ""
    template: str = "auto"


def _run_one(
    loaded: "LoadedModel", prompt: str, config: "GenerationConfig", top_logprobs: int, chat: ChatPrompt | None
) -> tuple["GenerationResult", bool]:
    """Generate to the end; on Ctrl-C return what was made so far, marked cancelled."""
    from .. import api

    if chat is None:
        stream = api.stream_text(loaded, prompt=prompt, config=config, top_logprobs=top_logprobs)
    else:
        stream = api.stream_text(loaded, prompt=prompt, config=config, top_logprobs=top_logprobs, chat=True,
                                 system=chat.system, chat_template=chat.template)
    try:
        for _ in stream:
            pass
    except KeyboardInterrupt:
        stream.cancel()
        return stream.result(), True
    return stream.result(), False


def _write(out: TextIO, obj: dict[str, Any], *, indent: int | None) -> None:
    out.write(json.dumps(obj, ensure_ascii=False, indent=indent) + "\n")
    out.flush()


def run_single(
    loaded: "LoadedModel",
    prompt: str,
    config: "GenerationConfig",
    *,
    lines: bool,
    quiet: bool,
    top_logprobs: int = 0,
    chat: ChatPrompt | None = None,
) -> int:
    """``--json`` (indented object) or ``--jsonl`` (one compact line) for one prompt; the usual footer
    goes to stderr unless ``quiet``."""
    from .. import api
    from ..types import StreamChunk, footer_text

    result, cancelled = _run_one(loaded, prompt, config, top_logprobs, chat)
    result.stats.load_s = loaded.load_s
    _write(sys.stdout, api.generation_record(result, config, api.model_identity(loaded)), indent=None if lines else 2)
    if not quiet:
        last = StreamChunk("", None, -1, finish_reason=result.finish_reason, stats=result.stats)
        sys.stderr.write(footer_text(last, loaded.block_size) + "\n")
    return EXIT_INTERRUPTED if cancelled else EXIT_OK


def run_batch(
    loaded: "LoadedModel",
    specs: "list[PromptSpec]",
    *,
    quiet: bool,
    top_logprobs: int = 0,
    chat: ChatPrompt | None = None,
    batch_size: "BatchSize" = DEFAULT_BATCH_SIZE,
    ordered: bool = False,
    share_prefix: bool = False,
) -> int:
    """Every prompt of a prompts file, one JSON line each, decoded ``batch_size`` at a time; lines are
    written as prompts finish (``ordered``: in file order, each as soon as those before it are written;
    ``share_prefix``: see `api.run_streams`)."""
    from .. import api

    model = api.model_identity(loaded)
    t0 = time.perf_counter()
    tokens = 0
    failed: list[int] = []
    written = 0
    held: dict[int, dict[str, Any]] = {}  # ordered: finished lines waiting for an earlier one
    next_out = 0

    def emit(index: int, record: dict[str, Any]) -> None:
        nonlocal written, next_out
        if not ordered:
            _write(sys.stdout, record, indent=None)
            written += 1
            return
        held[index] = record
        while next_out in held:
            _write(sys.stdout, held.pop(next_out), indent=None)
            next_out += 1
            written += 1

    def make(index: int):
        spec = specs[index]
        if chat is None:
            stream = api.stream_text(loaded, prompt=spec.prompt, config=spec.config, top_logprobs=top_logprobs)
        else:
            stream = api.stream_text(loaded, prompt=spec.prompt, config=spec.config, top_logprobs=top_logprobs,
                                     chat=True, system=chat.system, chat_template=chat.template)
        if index == 0:
            stream.stats.load_s = loaded.load_s  # the load is charged to the first prompt
        return stream

    cancelled_lines: list[int] = []
    try:
        for done in api.run_streams(make, len(specs), batch_size=batch_size, share_prefix=share_prefix):
            spec = specs[done.index]
            head = {"index": done.index, "line": spec.line, **({"id": spec.id} if spec.id is not None else {})}
            if done.error is not None:  # this prompt only: say which line, and go on with the others
                exc = done.error
                failed.append(spec.line)
                error = {"message": f"prompts file line {spec.line}: {exc.message}", "hint": exc.hint,
                         "exit_code": exc.exit_code}
                emit(done.index, {**head, "prompt": spec.prompt, "error": error})
                sys.stderr.write(f"Error: prompts file line {spec.line}: {exc.one_line()}\n")
                sys.stderr.flush()
                continue
            assert done.result is not None
            if done.cancelled:
                cancelled_lines.append(spec.line)
            record = dict(head)
            record.update(api.generation_record(done.result, spec.config, model))
            emit(done.index, record)
            tokens += done.result.stats.new_tokens
    except KeyboardInterrupt:
        for index in sorted(held):  # --ordered: what finished is written, even after a gap
            _write(sys.stdout, held.pop(index), indent=None)
        finished = written - len(cancelled_lines)
        lines = ", ".join(map(str, sorted(cancelled_lines)))
        note = f" (line{'s' if len(cancelled_lines) > 1 else ''} {lines} cancelled)" if cancelled_lines else ""
        sys.stderr.write(f"Interrupted after {finished} of {len(specs)} prompts{note}.\n")
        return EXIT_INTERRUPTED
    if not quiet:
        seconds = time.perf_counter() - t0
        failed.sort()
        lines = ", ".join(map(str, failed[:10])) + (", …" if len(failed) > 10 else "")
        fails = f" · {len(failed)} failed (line{'s' if len(failed) > 1 else ''} {lines})" if failed else ""
        sys.stderr.write(f"[{len(specs)} prompts{fails} · {tokens} tokens · {seconds:.1f} s]\n")
    return EXIT_PARTIAL if failed else EXIT_OK
