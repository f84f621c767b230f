"""The Python API: `load_model`, `generate_text`, `generate`, `generate_batch`, `stream_text`, `interactive_cli`.

Argument names follow llmbuilder's documented API (``model_path``, ``tokenizer_path``, ``prompt``,
``max_new_tokens``, ``temperature``, … or ``config=GenerationConfig(...)``). Loose sampling arguments
override the matching fields of ``config``. Every argument is an explicit keyword; nothing is passed
through blindly.

torch is imported lazily (inside the functions), so ``import llmbuilder_cli`` stays fast.

A model is loaded once per handle: pass the result of `load_model` as ``model_path`` to reuse it.
The last model loaded from a path is also kept, so calling `generate_text` in a loop with the same
paths does not reload it (the file's size and modification time are checked each call).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TextIO, Union

from .batch import DEFAULT_BATCH_SIZE, BatchSize
from .config import GenerationConfig
from .constraint import Constraint
from .files import read_bounded, user_path
from .interrupts import deferred_interrupt
from .types import GenerationResult

if TYPE_CHECKING:  # pragma: no cover
    from .turns import TurnFormat
    from .engine.batching import Finished
    from .engine.generate import TextStream
    from .engine.loading import LoadedModel

__all__ = [
    "load_model",
    "model_info",
    "generate_text",
    "generate",
    "generate_batch",
    "run_streams",
    "stream_text",
    "interactive_cli",
    "merge_config",
    "clear_model_cache",
]


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()  # "not given": distinct from None, which means "off" for top_k/top_p/seed

ModelArg = Union[str, "os.PathLike[str]", "LoadedModel", None]

_cache: dict[tuple, "LoadedModel"] = {}


def merge_config(
    config: GenerationConfig | None = None,
    *,
    max_new_tokens: int = UNSET,
    min_new_tokens: int = UNSET,
    temperature: float = UNSET,
    top_k: int | None = UNSET,
    top_p: float | None = UNSET,
    repetition_penalty: float = UNSET,
    do_sample: bool = UNSET,
    seed: int | None = UNSET,
    stop: Any = UNSET,
    ignore_eos: bool = UNSET,
    early_stopping: bool = UNSET,
    eos_token_id: int | None = UNSET,
    pad_token_id: int | None = UNSET,
    length_penalty: float = UNSET,
    constraint: Constraint | None = UNSET,
) -> GenerationConfig:
    """``config`` (or the defaults) with every given field replaced, validated. ``early_stopping`` to
    ``length_penalty`` are llmbuilder's fields (see `llmbuilder_cli.config.LLMBUILDER_FIELDS`);
    ``constraint`` is what the output must match (`llmbuilder_cli.Constraint`, or None for free text)."""
    if config is not None and not isinstance(config, GenerationConfig):
        from .errors import ConfigError

        raise ConfigError(
            f"config must be a GenerationConfig, not {type(config).__name__}",
            hint="build it with llmbuilder_cli.GenerationConfig(...)",
        )
    given = {
        "max_new_tokens": max_new_tokens,
        "min_new_tokens": min_new_tokens,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "repetition_penalty": repetition_penalty,
        "do_sample": do_sample,
        "seed": seed,
        "stop": stop,
        "ignore_eos": ignore_eos,
        "early_stopping": early_stopping,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "length_penalty": length_penalty,
        "constraint": constraint,
    }
    changes = {k: v for k, v in given.items() if v is not UNSET}
    base = config or GenerationConfig()
    return base.replace(**changes) if changes else base


def clear_model_cache() -> None:
    """Forget the model kept from the last path-based call (frees its memory)."""
    _cache.clear()


def resolve_model_arg(model_path: Any, tokenizer_path: Any) -> tuple[Any, Any]:
    """(model, tokenizer) paths to load: no model (or the name ``demo``) means the built-in demo model; a
    Hugging Face name (``ORG/NAME``, ``ORG/NAME:FILE.gguf``) means its files in the local cache (hub.py)."""
    from . import demo

    if not demo.is_demo_request(model_path):
        from .hub import resolve_model

        named = resolve_model(model_path)  # ORG/NAME from the local Hugging Face cache (a path that exists wins)
        return (model_path if named is None else named), tokenizer_path
    if tokenizer_path not in (None, ""):
        from .errors import UsageError

        raise UsageError(
            "a tokenizer was given without a model",
            hint="pass the model too (the built-in demo model uses its own tokenizer)",
        )
    d = demo.demo_model_dir()
    return d, d / "tokenizer"


def model_info(
    model_path: str | os.PathLike[str] | None = None,
    tokenizer_path: str | os.PathLike[str] | None = None,
    *,
    num_heads: int | None = None,
) -> dict[str, Any]:
    """Describe a model file without running it (what ``llmbuilder info`` shows), as a JSON-ready dict:
    architecture, parameters, layers, heads, context length, vocabulary, format, stored dtype, file size,
    sha256 and the tokenizer, and whether it runs here: ``runs``, ``why`` (the loader's refusal),
    ``quantize`` (the quantization it needs to fit in memory, else None) and ``refused_by`` (``model``,
    ``tokenizer`` or ``memory``). None (or ``"demo"``) describes the built-in demo model, with its training
    results under ``"demo"``; ``"name"`` is ``"demo"`` for it, the model name for ``ORG/NAME`` from the
    Hugging Face cache, else None."""
    from . import demo
    with deferred_interrupt():
        from .engine.describe import describe

    from .hub import name_for

    is_demo = demo.is_demo_request(model_path)
    hub_name = None if is_demo else name_for(model_path)
    path, tok = resolve_model_arg(model_path, tokenizer_path)
    name = demo.DEMO_NAME if is_demo else (str(hub_name) if hub_name is not None else None)
    out = {"name": name, **describe(path, tok, num_heads=num_heads)}
    if is_demo:
        report = demo.training_report()
        results = report.get("results", {})
        out["demo"] = {
            "trained_by": "scripts/train_demo.py",
            "corpus": report.get("corpus", {}).get("generator"),
            "heldout_loss": results.get("heldout_loss"),
            "heldout_perplexity": results.get("heldout_perplexity"),
            "tokens_seen": results.get("tokens_seen"),
        }
    return out


def model_identity(loaded: "LoadedModel") -> dict[str, Any]:
    """Which model a loaded handle is (``name`` is ``"demo"`` for the built-in demo): path, format,
    architecture, parameters, context length, vocabulary, stored dtype, sha256, tokenizer, device."""
    from . import demo

    ident = loaded.identity()
    name = demo.DEMO_NAME if Path(ident["path"]).parent == demo.demo_dir() else None
    return {"name": name, **ident}


def generation_record(
    result: GenerationResult, config: GenerationConfig, model: dict[str, Any]
) -> dict[str, Any]:
    """The JSON object ``--json`` prints: the generation, the effective config and the model identity."""
    record = {**result.to_dict(), "config": config.to_dict(), "model": model}
    if config.constraint is not None:
        record["constraint"] = config.constraint.to_dict()
    return record


def load_model(
    model_path: str | os.PathLike[str] | None = None,
    tokenizer_path: str | os.PathLike[str] | None = None,
    *,
    device: str | None = "auto",
    num_heads: int | None = None,
    threads: int | str | None = None,
    dtype: str = "auto",
    quantize: str | None = None,
) -> "LoadedModel":
    """Load a model and its tokenizer once; pass the handle to the other functions as ``model_path``.

    ``model_path``: ``model.pt``, a trainer checkpoint, or a run directory containing ``model.pt``;
    None (or ``"demo"``) loads the built-in demo model.
    ``tokenizer_path``: a directory with ``tokenizer.model`` or ``tokenizer.json``, or one of those files;
    by default the ``tokenizer/`` directory beside the model. ``num_heads`` is needed only for old
    checkpoints that do not record their configuration. ``threads`` sets torch's CPU thread count for
    the whole process: a number, "auto" (1 for small models, else the CPUs other programs leave free; see
    ``cpu_load.py``), or None to leave it alone. ``dtype``:
    "auto" (float32 on CPU and MPS; bfloat16, else float16, on CUDA), "float32", "bfloat16" or "float16".
    ``quantize``: None, "int8" or "int4" for weight-only quantization (Llama-family and Gemma 3 models: int8 reads
    about 4x less memory than float32 per token; int4, groups of 32 with torch's CPU kernel, decodes
    fastest; each with a small, measured loss of quality; see README "Performance").

    Model formats: llmbuilder files, Hugging Face directories (``config.json`` + safetensors) of the
    Llama family, GPT-2 and Gemma 3 (text), and GGUF files of them (dequantized at load).
    """
    with deferred_interrupt():  # the first import of torch must not be cut in half by Ctrl-C
        from .engine import loading

    model_path, tokenizer_path = resolve_model_arg(model_path, tokenizer_path)
    return loading.load(model_path, tokenizer_path, device=device, num_heads=num_heads, threads=threads, dtype=dtype,
                        quantize=quantize)


def _loaded(
    model_path: ModelArg, tokenizer_path: Any, device: str | None, num_heads: int | None, dtype: str = "auto"
) -> tuple["LoadedModel", float]:
    """A loaded model for the arguments, and the seconds spent loading it (0 when reused)."""
    with deferred_interrupt():
        from .engine import loading

    if isinstance(model_path, loading.LoadedModel):
        return model_path, 0.0
    model_path, tokenizer_path = resolve_model_arg(model_path, tokenizer_path)
    file = loading.resolve_model_file(model_path)
    tok = None if tokenizer_path in (None, "") else str(user_path(tokenizer_path).resolve())
    key = (str(file.resolve()), _fingerprint(file), tok, device or "auto", num_heads, dtype)
    if key in _cache:
        return _cache[key], 0.0
    loaded = loading.load(file, tokenizer_path, device=device, num_heads=num_heads, dtype=dtype)
    _cache.clear()
    _cache[key] = loaded
    return loaded, loaded.load_s


def _fingerprint(path: Path) -> tuple[int, int]:
    """(newest modification time, total size) of a model file, or of the files of a model directory,
    so a replaced weights file is never served from the cache."""
    files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else [path]
    stats = [p.stat() for p in files]
    return max((s.st_mtime_ns for s in stats), default=0), sum(s.st_size for s in stats)


def stream_text(
    model_path: ModelArg = None,
    tokenizer_path: str | os.PathLike[str] | None = None,
    prompt: str = "",
    *,
    config: GenerationConfig | None = None,
    max_new_tokens: int = UNSET,
    min_new_tokens: int = UNSET,
    temperature: float = UNSET,
    top_k: int | None = UNSET,
    top_p: float | None = UNSET,
    repetition_penalty: float = UNSET,
    do_sample: bool = UNSET,
    seed: int | None = UNSET,
    stop: Any = UNSET,
    ignore_eos: bool = UNSET,
    early_stopping: bool = UNSET,
    eos_token_id: int | None = UNSET,
    pad_token_id: int | None = UNSET,
    length_penalty: float = UNSET,
    constraint: Constraint | None = UNSET,
    device: str | None = "auto",
    num_heads: int | None = None,
    dtype: str = "auto",
    top_logprobs: int = 0,
    chat: bool = False,
    system: str = "",
    chat_template: str = "auto",
) -> "TextStream":
    """Start a generation and return its stream: iterate it for `StreamChunk`s as tokens are produced.

    The chunks' texts join to the continuation (without the prompt); the last chunk carries the
    finish reason (``eos`` | ``stop`` | ``length``) and the stats. ``top_logprobs=N`` (1–100) adds to
    each chunk a `TokenProbs`: the token's probability and the N most likely tokens after each stage.

    ``chat=True`` treats ``prompt`` as one user message (after ``system`` text, if any): it is laid out
    with the model's chat template, so instruct models answer it, and the stream holds only the reply.
    ``chat_template``: "auto" (the model's template, else plain ``User:``/``Assistant:`` turns), "none"
    (always plain turns), or the path of a Jinja template file.
    """
    cfg = merge_config(
        config,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        do_sample=do_sample,
        seed=seed,
        stop=stop,
        ignore_eos=ignore_eos,
        early_stopping=early_stopping,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        length_penalty=length_penalty,
        constraint=constraint,
    )
    loaded, load_s = _loaded(model_path, tokenizer_path, device, num_heads, dtype)
    if chat:
        from .engine.conversation import Conversation

        conv = Conversation(loaded, system=system, template=chat_template_choice(loaded, chat_template))
        stream, _ = conv.start(prompt, cfg, top_logprobs=top_logprobs, load_s=load_s)
        return stream
    if system:
        from .errors import UsageError

        raise UsageError("system text is for chat prompts", hint="pass chat=True, or put the text in the prompt")
    from .engine.generate import TextStream

    return TextStream(loaded, prompt, cfg, load_s=load_s, top_logprobs=top_logprobs)


def chat_template_choice(loaded: "LoadedModel", spec: str | os.PathLike[str] | None) -> Any:
    """What Conversation gets for ``spec``: "auto" → the model's own template (if any), "none" → plain
    turns (None), a file path → that Jinja template (with the model's special tokens)."""
    from .engine.tokenizers.chat_template import ChatTemplate
    from .errors import UsageError

    text = "auto" if spec is None else str(spec)
    if text == "auto":
        return "auto"
    if text == "none":
        return None
    hint = "pass 'auto', 'none' or a readable Jinja file"
    data = read_bounded(text, "chat template", hint)
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"the chat template {text[:200]} is not valid UTF-8 (byte {exc.start})", hint=hint) from None
    return ChatTemplate(source, getattr(loaded.tokenizer, "special_tokens", None) or {})


def generate(
    model_path: ModelArg = None,
    tokenizer_path: str | os.PathLike[str] | None = None,
    prompt: str = "",
    *,
    config: GenerationConfig | None = None,
    max_new_tokens: int = UNSET,
    min_new_tokens: int = UNSET,
    temperature: float = UNSET,
    top_k: int | None = UNSET,
    top_p: float | None = UNSET,
    repetition_penalty: float = UNSET,
    do_sample: bool = UNSET,
    seed: int | None = UNSET,
    stop: Any = UNSET,
    ignore_eos: bool = UNSET,
    early_stopping: bool = UNSET,
    eos_token_id: int | None = UNSET,
    pad_token_id: int | None = UNSET,
    length_penalty: float = UNSET,
    constraint: Constraint | None = UNSET,
    device: str | None = "auto",
    num_heads: int | None = None,
    dtype: str = "auto",
    top_logprobs: int = 0,
    chat: bool = False,
    system: str = "",
    chat_template: str = "auto",
) -> GenerationResult:
    """Generate and return a `GenerationResult` (text, token ids, finish reason, stats, and with
    ``top_logprobs=N`` the per-token probabilities in ``token_probs``)."""
    return stream_text(
        model_path,
        tokenizer_path,
        prompt,
        config=config,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        do_sample=do_sample,
        seed=seed,
        stop=stop,
        ignore_eos=ignore_eos,
        early_stopping=early_stopping,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        length_penalty=length_penalty,
        constraint=constraint,
        device=device,
        num_heads=num_heads,
        dtype=dtype,
        top_logprobs=top_logprobs,
        chat=chat,
        system=system,
        chat_template=chat_template,
    ).result()


def run_streams(
    make_stream: Callable[[int], "TextStream"], count: int, *, batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    share_prefix: bool = False,
) -> "Iterator[Finished]":
    """Run ``count`` streams (``make_stream(i)`` builds stream i) decoded together, ``batch_size`` at a
    time (see `batch.parse_batch_size`); yield each `Finished` (index, result or error) as it ends.
    ``share_prefix``: prompts that begin with the same 16 or more tokens compute them once (faster; a
    line may then differ from its one-at-a-time result in the last bits, so off by default)."""
    from .batch import AUTO_CACHE_MEMORY_FRACTION, AUTO_MAX_BATCH, parse_batch_size
    from .engine import batching
    from .engine.limits import available_memory

    size = parse_batch_size(batch_size)
    budget = None
    if size == "auto":
        free = available_memory()
        size, budget = AUTO_MAX_BATCH, None if free is None else int(free * AUTO_CACHE_MEMORY_FRACTION)
    return batching.run_streams(make_stream, count, max_active=size, memory_budget=budget,
                                share_prefix=batching.SHARE_PREFIX if share_prefix else None)


def generate_batch(
    model_path: ModelArg = None,
    tokenizer_path: str | os.PathLike[str] | None = None,
    prompts: "Sequence[str]" = (),
    *,
    config: GenerationConfig | None = None,
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    share_prefix: bool = False,
    device: str | None = "auto",
    num_heads: int | None = None,
    dtype: str = "auto",
) -> list[GenerationResult]:
    """`generate` for every prompt with the same ``config``, decoded ``batch_size`` at a time (``"auto"``:
    by a memory budget for the key/value caches; 1: one after another). Results are in the order of
    ``prompts``; greedy results equal one-at-a-time generation, and a seeded line's tokens depend only on
    its seed (``share_prefix=True`` trades that last-bit exactness for computing a shared leading part
    once: see `run_streams`). The first failing prompt's error is raised once every prompt has run."""
    from .errors import ConfigError

    if isinstance(prompts, str):
        raise ConfigError("prompts must be a list of texts, not one text", hint="use generate(prompt) for one")
    prompts = list(prompts)
    cfg = config if config is not None else GenerationConfig()
    loaded, load_s = _loaded(model_path, tokenizer_path, device, num_heads, dtype)
    from .engine.generate import TextStream

    def make(i: int) -> "TextStream":
        return TextStream(loaded, prompts[i], cfg, load_s=load_s if i == 0 else 0.0)

    results: list[GenerationResult | None] = [None] * len(prompts)
    errors = []
    for done in run_streams(make, len(prompts), batch_size=batch_size, share_prefix=share_prefix):
        if done.error is not None:
            errors.append((done.index, done.error))
        results[done.index] = done.result
    if errors:
        raise min(errors, key=lambda e: e[0])[1]
    return [r for r in results if r is not None]


def generate_text(
    model_path: ModelArg = None,
    tokenizer_path: str | os.PathLike[str] | None = None,
    prompt: str = "",
    device: str | None = "auto",
    *,
    config: GenerationConfig | None = None,
    max_new_tokens: int = UNSET,
    min_new_tokens: int = UNSET,
    temperature: float = UNSET,
    top_k: int | None = UNSET,
    top_p: float | None = UNSET,
    repetition_penalty: float = UNSET,
    do_sample: bool = UNSET,
    seed: int | None = UNSET,
    stop: Any = UNSET,
    ignore_eos: bool = UNSET,
    early_stopping: bool = UNSET,
    eos_token_id: int | None = UNSET,
    pad_token_id: int | None = UNSET,
    length_penalty: float = UNSET,
    constraint: Constraint | None = UNSET,
    num_heads: int | None = None,
    dtype: str = "auto",
) -> str:
    """Generate text the way llmbuilder's ``generate_text`` does and return the same string:
    the decoded prompt followed by the continuation (cut before a stop string, if one is set).

    As in llmbuilder, ``device`` is the fourth positional argument (None or "auto": CUDA, else MPS,
    else CPU) and llmbuilder's ``early_stopping``, ``eos_token_id``, ``pad_token_id`` and
    ``length_penalty`` are accepted: see `GenerationConfig`."""
    return generate(
        model_path,
        tokenizer_path,
        prompt,
        config=config,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        do_sample=do_sample,
        seed=seed,
        stop=stop,
        ignore_eos=ignore_eos,
        early_stopping=early_stopping,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        length_penalty=length_penalty,
        constraint=constraint,
        device=device,
        num_heads=num_heads,
        dtype=dtype,
    ).full_text


def interactive_cli(
    model_path: ModelArg = None,
    tokenizer_path: str | os.PathLike[str] | None = None,
    *,
    config: GenerationConfig | None = None,
    max_new_tokens: int = UNSET,
    min_new_tokens: int = UNSET,
    temperature: float = UNSET,
    top_k: int | None = UNSET,
    top_p: float | None = UNSET,
    repetition_penalty: float = UNSET,
    do_sample: bool = UNSET,
    seed: int | None = UNSET,
    stop: Any = UNSET,
    ignore_eos: bool = UNSET,
    device: str | None = "auto",
    num_heads: int | None = None,
    dtype: str = "auto",
    system: str = "",
    turn_format: "TurnFormat | None" = None,
    chat_template: str = "auto",
    input_stream: TextIO | None = None,
    output_stream: TextIO | None = None,
    error_stream: TextIO | None = None,
    render_reply: Callable[..., Any] | None = None,
    sources: dict[str, str] | None = None,
    jsonl: bool = False,
    mode: str = "auto",
    keep_context: bool = False,
) -> int:
    """The interactive loop, in one of two modes (``mode``: "auto", "chat" or "complete").

    **complete** (llmbuilder's interactive mode): each line read is a prompt; the output stream gets the
    line as the tokenizer normalised it, then the continuation — exactly what ``generate text -p LINE``
    prints, generated the same way (with a fixed seed, the same seed for every line). ``keep_context=True``
    (``/context on``) keeps earlier lines and continuations before each new line. **chat**: each line read
    is a message; the reply is printed and both join the context. "auto" picks chat when the model has a
    chat template (or ``chat_template``/``turn_format`` gives one) or ``system`` text is given, else
    complete; the banner says which and why, and ``/mode`` switches.

    In chat mode the KV cache is reused across turns; when the context would overflow, the oldest exchanges
    (in complete mode with context kept, the oldest lines) are dropped (``system`` text stays) and a note
    says so. Commands (both modes): ``/help``, ``/params``, ``/set KEY VALUE``, ``/seed``, ``/reset``,
    ``/system``, ``/clear``, ``/undo``, ``/regen``, ``/keep``, ``/save``, ``/load``, ``/stats``, ``/mode``,
    ``/context``, ``/exit`` (also ``/quit``, ``/bye``, or a line that is just ``exit`` or ``quit``;
    ``/?`` is ``/help``). Ends at end of input or ``/exit``, returning 0. Streams default to
    the process's stdin/stdout/stderr. ``render_reply(stream) -> (last chunk, cancelled)`` replaces the
    plain writing of each reply (the CLI passes its live panel). ``turn_format`` (a `TurnFormat`) says
    how turns are written into the context; by default the model's chat template is used when it has one
    (``chat_template``: "auto", "none" or a Jinja file), else ``User: …`` / ``Assistant:`` lines.
    ``sources`` (setting → where it came from) is what ``/params`` shows; the CLI passes its settings'
    provenance (flag, environment variable, profile). ``jsonl=True`` is the machine mode: one compact JSON
    object per reply on the output stream (user text, reply text, finish reason, context, stats; in complete
    mode the line as ``prompt`` and ``prompt_text``, the continuation as ``text``). In complete mode
    ``render_reply`` is called as ``render_reply(stream, echo=TEXT)``, TEXT being the normalised line.
    """
    from .chat import MODES, run_chat
    from .engine.completion import Completion
    from .engine.conversation import Conversation
    from .errors import UsageError

    if mode not in ("auto", *MODES):
        raise UsageError(f"unknown mode {mode!r}", hint="use auto, chat or complete")

    given = {
        "max_new_tokens": max_new_tokens,
        "min_new_tokens": min_new_tokens,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "repetition_penalty": repetition_penalty,
        "do_sample": do_sample,
        "seed": seed,
        "stop": stop,
        "ignore_eos": ignore_eos,
    }
    cfg = merge_config(config, **given)
    loaded, _ = _loaded(model_path, tokenizer_path, device, num_heads, dtype)
    template = chat_template_choice(loaded, chat_template)  # "auto" yields to an explicit turn_format
    read_line = None
    if input_stream is None and not _is_terminal(sys.stdin) and hasattr(sys.stdin, "reconfigure"):
        try:  # a line that is not UTF-8 becomes one clear error for that line, not a crash of the chat
            sys.stdin.reconfigure(errors="surrogateescape")
        except (ValueError, OSError):
            pass
    if input_stream is None and _is_terminal(sys.stdin) and _is_terminal(sys.stderr):
        from .chat import completions
        from .line_editor import terminal_reader

        read_line = terminal_reader(completions())  # line editing, history, tab completion (drawn on stderr)
    conv = Conversation(loaded, turn_format, system=system, template=template)
    has_template = conv.template is not None
    if has_template:
        why = "the model has a chat template" if template == "auto" else "a chat template was given"
    else:
        why = "a turn format was given" if turn_format is not None else "no chat template"
    if not has_template and turn_format is None and system:
        why = "system text was given"  # only a chat has one
    if mode == "auto":
        mode = "chat" if has_template or turn_format is not None or system else "complete"
    else:
        why = "as asked; " + why
    if system and mode == "complete":
        raise UsageError("system text is for chat mode", hint="add --mode chat (mode='chat'), or leave out --system")
    return run_chat(
        conv,
        cfg,
        input_stream=input_stream or sys.stdin,
        output_stream=output_stream or sys.stdout,
        error_stream=error_stream or sys.stderr,
        option_fields=tuple(k for k, v in given.items() if v is not UNSET),
        sources=sources,
        read_line=read_line,
        render_reply=render_reply,
        jsonl=jsonl,
        completion=Completion(loaded, keep_context=keep_context),
        mode=mode,
        mode_reason=why,
    )


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False

