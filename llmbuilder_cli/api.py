"""The Python API: `load_model`, `generate_text`, `generate`, `stream_text`, `interactive_cli`.

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
from typing import TYPE_CHECKING, Any, Callable, TextIO, Union

from .config import GenerationConfig
from .types import GenerationResult

if TYPE_CHECKING:  # pragma: no cover
    from .turns import TurnFormat
    from .engine.generate import TextStream
    from .engine.loading import LoadedModel

__all__ = [
    "load_model",
    "model_info",
    "generate_text",
    "generate",
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
) -> GenerationConfig:
    """``config`` (or the defaults) with every given field replaced, validated."""
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
    }
    changes = {k: v for k, v in given.items() if v is not UNSET}
    base = config or GenerationConfig()
    return base.replace(**changes) if changes else base


def clear_model_cache() -> None:
    """Forget the model kept from the last path-based call (frees its memory)."""
    _cache.clear()


def resolve_model_arg(model_path: Any, tokenizer_path: Any) -> tuple[Any, Any]:
    """(model, tokenizer) paths to load: no model (or the name ``demo``) means the built-in demo model."""
    from . import demo

    if not demo.is_demo_request(model_path):
        return model_path, tokenizer_path
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
    sha256 and the tokenizer. None (or ``"demo"``) describes the built-in demo model, with its training
    results under ``"demo"``."""
    from . import demo
    from .engine.describe import describe

    is_demo = demo.is_demo_request(model_path)
    path, tok = resolve_model_arg(model_path, tokenizer_path)
    out = {"name": demo.DEMO_NAME if is_demo else None, **describe(path, tok, num_heads=num_heads)}
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
    return {**result.to_dict(), "config": config.to_dict(), "model": model}


def load_model(
    model_path: str | os.PathLike[str] | None = None,
    tokenizer_path: str | os.PathLike[str] | None = None,
    *,
    device: str | None = "auto",
    num_heads: int | None = None,
    threads: int | str | None = None,
) -> "LoadedModel":
    """Load a model and its tokenizer once; pass the handle to the other functions as ``model_path``.

    ``model_path``: ``model.pt``, a trainer checkpoint, or a run directory containing ``model.pt``;
    None (or ``"demo"``) loads the built-in demo model.
    ``tokenizer_path``: a directory with ``tokenizer.model`` or ``tokenizer.json``, or one of those files;
    by default the ``tokenizer/`` directory beside the model. ``num_heads`` is needed only for old
    checkpoints that do not record their configuration. ``threads`` sets torch's CPU thread count for
    the whole process: a number, "auto" (1 for small models), or None to leave it alone.
    """
    from .engine import loading

    model_path, tokenizer_path = resolve_model_arg(model_path, tokenizer_path)
    return loading.load(model_path, tokenizer_path, device=device, num_heads=num_heads, threads=threads)


def _loaded(
    model_path: ModelArg, tokenizer_path: Any, device: str | None, num_heads: int | None
) -> tuple["LoadedModel", float]:
    """A loaded model for the arguments, and the seconds spent loading it (0 when reused)."""
    from .engine import loading

    if isinstance(model_path, loading.LoadedModel):
        return model_path, 0.0
    model_path, tokenizer_path = resolve_model_arg(model_path, tokenizer_path)
    file = loading.resolve_model_file(model_path)
    st = file.stat()
    tok = None if tokenizer_path in (None, "") else str(Path(tokenizer_path).expanduser().resolve())
    key = (str(file.resolve()), st.st_mtime_ns, st.st_size, tok, device or "auto", num_heads)
    if key in _cache:
        return _cache[key], 0.0
    loaded = loading.load(file, tokenizer_path, device=device, num_heads=num_heads)
    _cache.clear()
    _cache[key] = loaded
    return loaded, loaded.load_s


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
    device: str | None = "auto",
    num_heads: int | None = None,
    top_logprobs: int = 0,
) -> "TextStream":
    """Start a generation and return its stream: iterate it for `StreamChunk`s as tokens are produced.

    The chunks' texts join to the continuation (without the prompt); the last chunk carries the
    finish reason (``eos`` | ``stop`` | ``length``) and the stats. ``top_logprobs=N`` (1–100) adds to
    each chunk a `TokenProbs`: the token's probability and the N most likely tokens after each stage.
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
    )
    loaded, load_s = _loaded(model_path, tokenizer_path, device, num_heads)
    from .engine.generate import TextStream

    return TextStream(loaded, prompt, cfg, load_s=load_s, top_logprobs=top_logprobs)


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
    device: str | None = "auto",
    num_heads: int | None = None,
    top_logprobs: int = 0,
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
        device=device,
        num_heads=num_heads,
        top_logprobs=top_logprobs,
    ).result()


def generate_text(
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
    device: str | None = "auto",
    num_heads: int | None = None,
) -> str:
    """Generate text the way llmbuilder's ``generate_text`` does and return the same string:
    the decoded prompt followed by the continuation (cut before a stop string, if one is set)."""
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
        device=device,
        num_heads=num_heads,
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
    system: str = "",
    turn_format: "TurnFormat | None" = None,
    input_stream: TextIO | None = None,
    output_stream: TextIO | None = None,
    error_stream: TextIO | None = None,
    render_reply: Callable[[Any], Any] | None = None,
    sources: dict[str, str] | None = None,
) -> int:
    """A multi-turn chat: each line read is a message; the reply is printed and both join the context.

    The KV cache is reused across turns; when the context would overflow, the oldest exchanges are
    dropped (``system`` text stays) and a note says so. Commands: ``/help``, ``/params``, ``/set KEY
    VALUE``, ``/seed``, ``/reset``, ``/system``, ``/clear``, ``/undo``, ``/regen``, ``/keep``, ``/save``,
    ``/load``, ``/stats``, ``/exit``. Ends at end of input or ``/exit``, returning 0. Streams default to
    the process's stdin/stdout/stderr. ``render_reply(stream) -> (last chunk, cancelled)`` replaces the
    plain writing of each reply (the CLI passes its live panel). ``turn_format`` (a `TurnFormat`) says
    how turns are written into the context; the default is ``User: …`` / ``Assistant:`` lines.
    ``sources`` (setting → where it came from) is what ``/params`` shows; the CLI passes its settings'
    provenance (flag, environment variable, profile).
    """
    from .chat import run_chat
    from .engine.conversation import Conversation

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
    loaded, _ = _loaded(model_path, tokenizer_path, device, num_heads)
    read_line = None
    if input_stream is None and _is_terminal(sys.stdin) and _is_terminal(sys.stderr):
        from .chat import COMMANDS
        from .line_editor import terminal_reader

        read_line = terminal_reader(COMMANDS)  # line editing, history, tab completion
    return run_chat(
        Conversation(loaded, turn_format, system=system),
        cfg,
        input_stream=input_stream or sys.stdin,
        output_stream=output_stream or sys.stdout,
        error_stream=error_stream or sys.stderr,
        option_fields=tuple(k for k, v in given.items() if v is not UNSET),
        sources=sources,
        read_line=read_line,
        render_reply=render_reply,
    )


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False

