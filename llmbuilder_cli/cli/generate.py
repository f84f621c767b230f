"""``llmbuilder generate text``: one-shot generation (and the simple interactive loop).

stdout carries only the generated text: by default the decoded prompt followed by the continuation (what
llmbuilder's generator returns), then a newline. The stats footer, notes and errors go to stderr.
Option defaults are taken from `GenerationConfig` (one definition); an option left out keeps it.
"""

# No `from __future__ import annotations`: with it Typer compiles every option's annotation from a
# string, several times, on each start of the program (see app.py).

import sys
from typing import Annotated, List, Optional

import typer

from .. import demo, paths
from ..batch import AUTO_CACHE_MEMORY_FRACTION, AUTO_MAX_BATCH, DEFAULT_BATCH_SIZE, parse_batch_size
from ..config import FIELD_HELP, GenerationConfig
from ..errors import EXIT_INTERRUPTED, EXIT_OK, MODEL_PATH_HINT, ModelLoadError, UsageError
from ..terminal_text import is_terminal, visible, wrap_for
from ..types import FinishReason, StreamChunk, footer_text
from .completion import (
    complete_chat_template,
    complete_device,
    complete_dtype,
    complete_mode,
    complete_model,
    complete_profile,
    complete_quantize,
)
from .display_mode import use_live_display

_D = GenerationConfig()  # the defaults, shown in --help

P_MODEL = "Model"
P_PROMPT = "Prompt and output"
P_SAMPLING = "Sampling"
P_LENGTH = "Length and stopping"
P_OUTPUT = "Machine output"
P_MODES = "Modes"
P_CONSTRAIN = "Constrained output"


def _read_stdin_prompt() -> str:
    from ..files import read_stream_bounded

    hint = "pipe at most that much text, or use --prompt"
    if sys.stdin is None:
        raise UsageError("there is no standard input to read", hint="pass --prompt TEXT")
    if hasattr(sys.stdin, "buffer"):
        data = read_stream_bounded(sys.stdin.buffer, "standard input", hint)
    else:
        data = read_stream_bounded(sys.stdin, "standard input", hint).encode("utf-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"standard input is not valid UTF-8 (byte {exc.start})", hint="pipe UTF-8 text or use --prompt"
        ) from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    return text


def _model_label(model: str | None, loaded) -> str:
    """How the panel names the model: ``demo``, its name (``ORG/NAME``), or the file with its directory
    (``run/model.pt``)."""
    from ..hub import name_for

    path = loaded.info.path
    if demo.is_demo_request(model):
        return demo.DEMO_NAME
    named = name_for(model)
    return str(named) if named is not None else f"{path.parent.name}/{path.name}"


def live_render(stream, label: str, block: int, *, echo: "bool | str") -> "tuple[StreamChunk | None, bool]":
    """Stream into the live display → (last chunk, whether Ctrl-C cancelled it). ``echo``: True shows the
    stream's prompt text first, a string shows that text. The text ends without a newline; the caller
    finishes the line."""
    from rich.console import Console

    from .display import LiveView, PanelInfo

    info = PanelInfo(
        model=label, config=stream.config, seed=stream.stats.seed, processors=tuple(stream.processors), block_size=block
    )
    last: StreamChunk | None = None
    with LiveView(Console(file=sys.stdout), info) as view:
        try:
            if echo:
                view.feed(stream.prompt_text if echo is True else echo, style="bold")
            for chunk in stream:
                view.feed(chunk.text)
                view.tick(len(stream.token_ids), stream.context_used)
                last = chunk
        except KeyboardInterrupt:
            last = stream.cancel()
            view.feed(last.text)
            return last, True
    return last, False


def _run_live(stream, label: str, block: int, *, echo: bool) -> int:
    """One-shot generation in the live display (a terminal on both streams); footer on stderr after it."""
    last, cancelled = live_render(stream, label, block, echo=echo)
    sys.stdout.write("\n")
    sys.stdout.flush()
    if stream.token_probs:
        from .probs_view import print_probs_table

        print_probs_table(stream.token_probs, sys.stderr)
    if last is not None:
        sys.stderr.write(wrap_for(footer_text(last, block), sys.stderr) + "\n")
        sys.stderr.flush()
    return EXIT_INTERRUPTED if cancelled else EXIT_OK


class _ShownOnTerminal:
    """Writes to `out` with control characters made visible when `out` is a terminal (a model cannot
    clear the screen or write the clipboard); a pipe or a file gets the text byte for byte."""

    def __init__(self, out) -> None:
        self.out = out
        self.terminal = is_terminal(out)

    def write(self, text: str) -> int:
        return self.out.write(visible(text) if self.terminal else text)

    def flush(self) -> None:
        self.out.flush()


def show_demo_notice_once(named: bool = False) -> None:
    """Say on stderr, the first time only, that the built-in demo model is running and how to change it
    (``named``: the user asked for it with ``-m demo``)."""
    if paths.state_marker(demo.NOTICE_MARKER):
        return
    sys.stderr.write(wrap_for(demo.notice(named), sys.stderr) + "\n")
    sys.stderr.flush()
    paths.set_state_marker(demo.NOTICE_MARKER)


def _chat_sources(resolved) -> dict[str, str]:
    """Where each generation setting came from, in the short words the chat's /params shows."""
    short = {"flag": "options", "default": "default"}
    out = {}
    for key, src in resolved.sources.items():
        out[key] = short.get(src, src.split(" (")[0])
    return out


def _threads_value(value: Optional[str]):
    """``--threads``: 'auto' or a whole number, checked as a saved setting is (same rule, same message)."""
    if value is None:
        return None
    from ..settings import parse_value

    return parse_value("threads", value)


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is None or sys.stdin.isatty()
    except (ValueError, AttributeError):
        return True


def text_command(
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model",
            "-m",
            help="The model: llmbuilder's model.pt, a trainer checkpoint or the run directory holding them; a "
            "Hugging Face model directory (config.json + safetensors); a GGUF file; or ORG/NAME[:FILE.gguf] from the "
            "local Hugging Face cache ('llmbuilder pull' downloads it; ./ORG/NAME is a path). "
            "Default: the built-in demo model ('demo').",
            rich_help_panel=P_MODEL,
            autocompletion=complete_model,
        ),
    ] = None,
    tokenizer: Annotated[
        Optional[str],
        typer.Option(
            "--tokenizer",
            "-t",
            help="Tokenizer directory (tokenizer.model or tokenizer.json) or file. Default: tokenizer/ beside the model.",
            rich_help_panel=P_MODEL,
        ),
    ] = None,
    device: Annotated[
        Optional[str],
        typer.Option(
            "--device", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps.",
            show_default="auto",
            rich_help_panel=P_MODEL,
            autocompletion=complete_device,
        ),
    ] = None,
    dtype: Annotated[
        Optional[str],
        typer.Option(
            "--dtype",
            help="Precision the model runs in: auto (float32 on CPU/MPS; bfloat16, else float16, on CUDA), "
            "float32, bfloat16 or float16.",
            show_default="auto",
            rich_help_panel=P_MODEL,
            autocompletion=complete_dtype,
        ),
    ] = None,
    quantize: Annotated[
        Optional[str],
        typer.Option(
            "--quantize",
            help="Weight-only quantization: none, int8 or int4 (Llama-family models; less memory traffic per "
            "token, faster decoding on CPU, slightly different text; int4 is the fastest on CPU).",
            show_default="none",
            rich_help_panel=P_MODEL,
            autocompletion=complete_quantize,
        ),
    ] = None,
    profile: Annotated[
        Optional[str],
        typer.Option(
            "--profile",
            help="Settings profile to use (see 'llmbuilder config profiles'). Default: LLMBUILDER_PROFILE, "
            "else the default profile. Flags and LLMBUILDER_* variables override its values.",
            rich_help_panel=P_MODEL,
            autocompletion=complete_profile,
        ),
    ] = None,
    num_heads: Annotated[
        Optional[int],
        typer.Option(
            "--num-heads",
            help="Attention heads, only for old checkpoints that do not record their configuration.",
            rich_help_panel=P_MODEL,
            min=1,
        ),
    ] = None,
    threads: Annotated[
        Optional[str],
        typer.Option(
            "--threads",
            help="CPU threads: a number, or auto: 1 for models under 50M parameters (no thread synchronisation), "
            "else the CPUs this process may use that other programs leave free.",
            show_default="auto",
            metavar="N|auto",
            rich_help_panel=P_MODEL,
            callback=_threads_value,
        ),
    ] = None,
    prompt: Annotated[
        Optional[str],
        typer.Option(
            "--prompt",
            "-p",
            help="Text to continue. '-' or no --prompt with piped input reads it from stdin.",
            rich_help_panel=P_PROMPT,
        ),
    ] = None,
    echo: Annotated[
        bool,
        typer.Option(
            "--echo/--no-echo",
            help="Print the (tokenizer-normalised) prompt before the continuation, as llmbuilder does.",
            rich_help_panel=P_PROMPT,
        ),
    ] = True,
    plain: Annotated[
        bool,
        typer.Option(
            "--plain",
            help="Bare text even on a terminal: no live panel, spinner or colour (automatic when piped, "
            "with NO_COLOR or TERM=dumb).",
            rich_help_panel=P_PROMPT,
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No stats footer or notes on stderr.", rich_help_panel=P_PROMPT)
    ] = False,
    greedy: Annotated[
        Optional[bool],
        typer.Option(
            "--greedy/--sample",
            help=f"Greedy decoding (always the most likely token) or sampling. Default: {'greedy' if _D.greedy else 'sample'}.",
            rich_help_panel=P_SAMPLING,
            show_default=False,
        ),
    ] = None,
    temperature: Annotated[
        Optional[float],
        typer.Option(help=FIELD_HELP['temperature'], show_default=str(_D.temperature), rich_help_panel=P_SAMPLING),
    ] = None,
    top_k: Annotated[
        Optional[int], typer.Option(help=FIELD_HELP['top_k'], show_default=str(_D.top_k), rich_help_panel=P_SAMPLING)
    ] = None,
    top_p: Annotated[
        Optional[float], typer.Option(help=FIELD_HELP['top_p'], show_default=str(_D.top_p), rich_help_panel=P_SAMPLING)
    ] = None,
    repetition_penalty: Annotated[
        Optional[float],
        typer.Option(
            help=FIELD_HELP['repetition_penalty'], show_default=str(_D.repetition_penalty), rich_help_panel=P_SAMPLING
        ),
    ] = None,
    seed: Annotated[
        Optional[int],
        typer.Option(help=f"{FIELD_HELP['seed']} Default: a random seed, printed in the footer.", rich_help_panel=P_SAMPLING),
    ] = None,
    max_tokens: Annotated[
        Optional[int],
        typer.Option(
            "--max-tokens", help=FIELD_HELP['max_new_tokens'], show_default=str(_D.max_new_tokens), rich_help_panel=P_LENGTH
        ),
    ] = None,
    min_tokens: Annotated[
        Optional[int],
        typer.Option(
            "--min-tokens", help=FIELD_HELP['min_new_tokens'], show_default=str(_D.min_new_tokens), rich_help_panel=P_LENGTH
        ),
    ] = None,
    stop: Annotated[
        Optional[List[str]],
        typer.Option(
            "--stop",
            help=FIELD_HELP["stop"] + " Repeatable. Matched on the decoded text (llmbuilder's tokenizer lowercases it).",
            rich_help_panel=P_LENGTH,
        ),
    ] = None,
    ignore_eos: Annotated[
        Optional[bool], typer.Option("--ignore-eos", help=FIELD_HELP["ignore_eos"], rich_help_panel=P_LENGTH)
    ] = None,
    json_schema: Annotated[
        Optional[str],
        typer.Option(
            "--json-schema",
            help="The output is JSON valid against this JSON Schema (a file, or inline JSON starting with '{'): "
            "only tokens that keep it valid are sampled, and generation ends when the value is complete.",
            rich_help_panel=P_CONSTRAIN,
        ),
    ] = None,
    output_format: Annotated[
        Optional[str],
        typer.Option(
            "--format",
            help="'json': the generated text is one JSON value (any). Not the same as --json, which prints the "
            "whole result (text, stats, config) as a JSON record.",
            rich_help_panel=P_CONSTRAIN,
        ),
    ] = None,
    regex: Annotated[
        Optional[str],
        typer.Option(
            "--regex", help="The whole output matches this regular expression (Rust regex syntax).",
            rich_help_panel=P_CONSTRAIN,
        ),
    ] = None,
    choice: Annotated[
        Optional[List[str]],
        typer.Option(
            "--choice", help="The output is exactly one of these strings. Repeatable: --choice yes --choice no.",
            rich_help_panel=P_CONSTRAIN,
        ),
    ] = None,
    grammar: Annotated[
        Optional[str],
        typer.Option(
            "--grammar", help="The output follows this grammar file: Lark (a 'start' rule) or GBNF (a 'root' rule).",
            rich_help_panel=P_CONSTRAIN,
        ),
    ] = None,
    show_probs: Annotated[
        bool,
        typer.Option(
            "--show-probs",
            help="After the text, show each token's probability and the top alternatives after every sampling "
            "stage (stderr; a table on a terminal).",
            rich_help_panel=P_OUTPUT,
        ),
    ] = False,
    top_logprobs: Annotated[
        Optional[int],
        typer.Option(
            "--top-logprobs",
            help="Alternatives per stage for --show-probs (default 5); with --json/--jsonl adds token_probs.",
            rich_help_panel=P_OUTPUT,
            min=1,
            max=100,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object instead of text: prompt, text, token ids, finish reason, stats, "
            "effective config and model identity (see README).",
            rich_help_panel=P_OUTPUT,
        ),
    ] = False,
    as_jsonl: Annotated[
        bool,
        typer.Option(
            "--jsonl", help="Print one compact JSON line per prompt (the same object as --json); with --interactive, "
            "one JSON object per reply.", rich_help_panel=P_OUTPUT
        ),
    ] = False,
    prompts_file: Annotated[
        Optional[str],
        typer.Option(
            "--prompts-file",
            help="Batch: one prompt per line, or JSON lines with \"prompt\", optional \"id\" and per-prompt settings; "
            "'-' reads stdin. Needs --jsonl; every line is checked before the first generation.",
            rich_help_panel=P_OUTPUT,
        ),
    ] = None,
    batch_size: Annotated[
        Optional[str],
        typer.Option(
            "--batch-size",
            help=f"With --prompts-file: how many prompts decode together, or 'auto' (up to {AUTO_MAX_BATCH}, while "
            f"their key/value caches take at most {AUTO_CACHE_MEMORY_FRACTION:.0%} of the available memory); "
            "1 runs them one after another.",
            show_default="auto",
            rich_help_panel=P_OUTPUT,
        ),
    ] = None,
    ordered: Annotated[
        bool,
        typer.Option(
            "--ordered",
            help="With --prompts-file: write the JSON lines in file order (by default each is written as its "
            "prompt finishes; its \"index\" says which prompt it is).",
            rich_help_panel=P_OUTPUT,
        ),
    ] = False,
    share_prefix: Annotated[
        bool,
        typer.Option(
            "--share-prefix",
            help="With --prompts-file: prompts that begin alike (16 tokens or more: a system prompt, a few-shot "
            "header) compute that beginning once. Faster; a line may then differ from its one-at-a-time "
            "result in the last bits of its numbers (rarely a different token), so it is off by default.",
            rich_help_panel=P_OUTPUT,
        ),
    ] = False,
    interactive: Annotated[
        bool,
        typer.Option(
            "--interactive",
            "-i",
            help="Interactive: each line is continued as a prompt (complete mode, as llmbuilder does) or answered "
            "as a chat message (chat mode, with a running context); see --mode. /help inside.",
            rich_help_panel=P_MODES,
        ),
    ] = False,
    mode: Annotated[
        Optional[str],
        typer.Option(
            "--mode",
            help="For --interactive: auto (chat when the model has a chat template or --system is given, else "
            "complete), chat, or complete (each line continued as a prompt, exactly like -p LINE).",
            show_default="auto",
            rich_help_panel=P_MODES,
            autocompletion=complete_mode,
        ),
    ] = None,
    system: Annotated[
        Optional[str],
        typer.Option("--system", help="System text that opens the chat's context (with --interactive).",
                     rich_help_panel=P_MODES),
    ] = None,
    chat: Annotated[
        bool,
        typer.Option(
            "--chat",
            help="Treat the prompt as a chat message: lay it out with the model's chat template (instruct models "
            "answer it) and print only the reply. Works with --system, --json/--jsonl and --prompts-file.",
            rich_help_panel=P_MODES,
        ),
    ] = False,
    chat_template: Annotated[
        Optional[str],
        typer.Option(
            "--chat-template",
            help="For --chat and --interactive: 'auto' (the model's template, else plain User:/Assistant: turns), "
            "'none' (always plain turns) or a Jinja template file.",
            show_default="auto",
            rich_help_panel=P_MODES,
            autocompletion=complete_chat_template,
        ),
    ] = None,
    setup: Annotated[
        bool,
        typer.Option(
            "--setup",
            help="Guided setup wizard: choose the model and every setting with explanations, see the equivalent "
            "command, run it and/or save it as a profile (needs a terminal).",
            rich_help_panel=P_MODES,
        ),
    ] = False,
) -> int:
    """Continue a prompt with a trained model and print the text.

    Examples:

      llmbuilder generate text -p "Once upon a time"      (the built-in demo model)

      llmbuilder generate text -m run/model.pt -t run/tokenizer -p "Once upon a time" --greedy --max-tokens 40

      echo "The little fox" | llmbuilder generate text -m run/ --temperature 0.7 --seed 7

    Context: while prompt + output fit the model's context length, a KV cache makes each new token cheap.
    Beyond it, each step sees only the last <context> tokens at positions 0..context-1 (llmbuilder's
    sliding window), exactly as llmbuilder generates; the prompt is never cut from the output.
    """
    from .. import api
    from .. import settings as st

    flags = {
        "model": model,
        "tokenizer": tokenizer,
        "device": device,
        "dtype": dtype,
        "quantize": quantize,
        "threads": threads,
        "system": system,
        "mode": mode,
        "max_new_tokens": max_tokens,
        "min_new_tokens": min_tokens,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "repetition_penalty": repetition_penalty,
        "seed": seed,
        "stop": tuple(stop) if stop else None,
        "ignore_eos": ignore_eos,
        "do_sample": None if greedy is None else not greedy,
    }
    flags = {k: v for k, v in flags.items() if v is not None}
    if setup:
        from .app import invoke
        from .setup import run_setup

        return run_setup(flags, profile, invoke)
    if interactive and prompt is not None:
        raise UsageError("--interactive and --prompt cannot be combined", hint="choose one of them")
    if system is not None and not (interactive or chat):
        raise UsageError("--system is for the chat", hint="add --chat or --interactive, or put the text in --prompt")
    if mode is not None and not interactive:
        raise UsageError("--mode is for --interactive", hint="add --interactive, or leave out --mode")
    if chat_template is not None and not (interactive or chat):
        raise UsageError("--chat-template is for chat", hint="add --chat or --interactive")
    if as_json and as_jsonl:
        raise UsageError("--json and --jsonl cannot be combined", hint="choose one of them")
    if interactive and as_json:
        raise UsageError("--interactive prints text, not one JSON object",
                         hint="use --jsonl for one JSON object per reply")
    n_probs = top_logprobs or (5 if show_probs else 0)
    if n_probs and interactive:
        raise UsageError("--show-probs and --top-logprobs work with one-shot generation", hint="leave out --interactive")
    if prompts_file is not None:
        if not as_jsonl:
            raise UsageError("--prompts-file needs --jsonl (one JSON line per prompt)", hint="add --jsonl")
        if prompt is not None or interactive:
            raise UsageError("--prompts-file cannot be combined with --prompt or --interactive", hint="choose one")
    elif batch_size is not None or ordered or share_prefix:
        flag = "--batch-size" if batch_size is not None else "--ordered" if ordered else "--share-prefix"
        raise UsageError(f"{flag} is for --prompts-file", hint="add --prompts-file FILE, or leave it out")
    batch = parse_batch_size(batch_size if batch_size is not None else DEFAULT_BATCH_SIZE)

    from ..constraint import from_options

    # Checked (schema compiled, file read) before any model loads; not a setting, so set on each config.
    constraint = from_options(json_schema=json_schema, format=output_format, regex=regex, choice=choice,
                              grammar=grammar)
    resolved = st.resolve(flags, profile=profile)  # flag > LLMBUILDER_* > profile > default
    config = resolved.generation_config().replace(constraint=constraint)
    model = resolved.values.get("model")
    tokenizer = resolved.values.get("tokenizer")
    device = resolved.values.get("device", "auto")
    dtype = resolved.values.get("dtype", "auto")
    quantize = resolved.values.get("quantize", "none")
    threads = resolved.values.get("threads")
    system = resolved.values.get("system") if (interactive or chat) else None
    mode = resolved.values.get("mode") or "auto"
    if mode == "complete" and "system" not in flags:
        system = None  # a profile's system text is for its chats; complete mode has none
    chat_prompt = None
    if chat and not interactive:
        from .machine import ChatPrompt

        chat_prompt = ChatPrompt(system=system or "", template=chat_template or "auto")
    if model is None and not demo.is_installed() and _stdin_is_terminal() and sys.stderr.isatty():
        # llmbuilder's behaviour: no model → the wizard. Only when nothing else can serve, on a terminal.
        from .app import invoke
        from .setup import run_setup

        return run_setup(flags, profile, invoke)

    specs = None
    if prompts_file is not None:
        from ..batch import read_prompts_file

        stdin_text = _read_stdin_prompt() if prompts_file == "-" else None
        specs = read_prompts_file(prompts_file, config, stdin_text)  # all lines checked before loading
    elif not interactive:
        if prompt == "-" or (prompt is None and not _stdin_is_terminal()):
            prompt = _read_stdin_prompt()
        elif prompt is None:
            raise UsageError("no prompt given", hint="pass --prompt TEXT, pipe text on stdin, or use --interactive")
    if demo.is_demo_request(model):
        api.resolve_model_arg(model, tokenizer)  # a stray --tokenizer or a missing demo fails before the note
        if not quiet:
            show_demo_notice_once(named=model is not None)

    live = specs is None and not (as_json or as_jsonl or interactive) and use_live_display(plain=plain, quiet=quiet)
    def load():
        try:
            return api.load_model(model, tokenizer, device=device, num_heads=num_heads, threads=threads or "auto",
                                  dtype=dtype, quantize=None if quantize == "none" else quantize)
        except ModelLoadError as exc:
            if exc.hint == MODEL_PATH_HINT:  # this command takes the path as --model: say where to look
                exc.hint = "check the --model path"
            raise

    if live or (interactive and use_live_display(plain=plain, quiet=quiet, stdout=sys.stderr)):
        from rich.console import Console

        with Console(stderr=True).status("Loading the model…", spinner="dots"):
            loaded = load()
    else:
        if interactive and not quiet and sys.stderr.isatty():  # the chat opens on a terminal: say why it waits
            sys.stderr.write("Loading the model…\n")
            sys.stderr.flush()
        loaded = load()
    model_defaults = getattr(loaded, "generation_defaults", None)
    if model_defaults:  # the model's generation_config.json sits between the profile and built-in defaults
        resolved = st.resolve(flags, profile=profile, settings=resolved.settings, model_defaults=model_defaults)
        config = resolved.generation_config().replace(constraint=constraint)
        if specs is not None:
            specs = read_prompts_file(prompts_file, config, stdin_text)

    if interactive:
        render = None
        if not as_jsonl and use_live_display(plain=plain, quiet=quiet) and _stdin_is_terminal():
            label = _model_label(model, loaded)
            block = loaded.block_size

            def render(stream, echo=""):  # each reply in the live panel, as one-shot generation
                return live_render(stream, label, block, echo=echo)

        return api.interactive_cli(
            loaded, config=config, system=system or "", render_reply=render, sources=_chat_sources(resolved),
            chat_template=chat_template or "auto", jsonl=as_jsonl, mode=mode,
        )
    if specs is not None:
        from .machine import run_batch

        return run_batch(loaded, specs, quiet=quiet, top_logprobs=n_probs, chat=chat_prompt, batch_size=batch,
                         ordered=ordered, share_prefix=share_prefix)
    if as_json or as_jsonl:
        from .machine import run_single

        assert prompt is not None
        return run_single(loaded, prompt, config, lines=as_jsonl, quiet=quiet, top_logprobs=n_probs, chat=chat_prompt)

    assert prompt is not None
    if chat_prompt is not None:  # the reply only: the rendered template is not the user's text
        stream = api.stream_text(loaded, prompt=prompt, config=config, top_logprobs=n_probs, chat=True,
                                 system=chat_prompt.system, chat_template=chat_prompt.template)
        echo = False
    else:
        stream = api.stream_text(loaded, prompt=prompt, config=config, top_logprobs=n_probs)
    if loaded.device.type == "cpu":  # a note after the footer if other programs hold decoding up
        from .busy_note import WatchedStream

        stream = WatchedStream(stream, stream.stats.threads)
    block = loaded.block_size
    if not quiet and len(stream.prompt_ids) > block:
        note = (f"note: the prompt has {len(stream.prompt_ids)} tokens but the model's context is {block}; "
                f"it sees only the last {block} (sliding window)")
        sys.stderr.write(wrap_for(note, sys.stderr) + "\n")
    if live:
        label = _model_label(model, loaded)
        code = _run_live(stream, label, block, echo=echo)
        _busy_note(stream, quiet)
        return code
    from ..chat import write_stream

    out = _ShownOnTerminal(sys.stdout)
    if echo:
        out.write(stream.prompt_text)
        out.flush()
    last, cancelled = write_stream(stream, out)
    out.write("\n")
    out.flush()
    if stream.token_probs:  # asked for explicitly, so shown even with --quiet
        from .probs_view import format_probs_plain

        sys.stderr.write(format_probs_plain(stream.token_probs) + "\n")
    if not quiet and last is not None:
        sys.stderr.write(wrap_for(footer_text(last, block), sys.stderr) + "\n")
        if config.constraint is not None and last.finish_reason is FinishReason.LENGTH:
            note = "note: --max-tokens ended the output before the output constraint was complete; raise --max-tokens"
            sys.stderr.write(wrap_for(note, sys.stderr) + "\n")
        sys.stderr.flush()
    _busy_note(stream, quiet)
    return EXIT_INTERRUPTED if cancelled else EXIT_OK


def _busy_note(stream, quiet: bool) -> None:
    report = getattr(stream, "report", None)  # a WatchedStream (CPU runs) says if decoding was held up
    if report is not None:
        report(quiet)
