"""The interactive prompt loop behind ``--interactive`` and ``interactive_cli``.

Each input line is one prompt, continued independently (llmbuilder 2.0.0's interactive semantics);
the continuation goes to the output stream and everything else (banner, prompts, stats, errors) to the
error stream, so piped use gets clean replies. The loop takes its I/O and its generate function as
parameters: tests drive it without a terminal or a model.

Commands: /help, /settings, /set KEY VALUE, /reset, /exit (also /quit). Ctrl-C during a reply stops
that reply only; Ctrl-C at the prompt explains how to leave; end of input (Ctrl-D) ends with code 0.
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Callable, Iterator, TextIO

from .config import FIELD_HELP, GenerationConfig, parse_field_value
from .errors import EXIT_OK, LLMBuilderError
from .types import StreamChunk, footer_text

__all__ = ["run_prompt_loop", "COMMANDS"]

COMMANDS = {
    "/help": "show this help",
    "/settings": "show the current generation settings",
    "/set": "/set KEY VALUE — change a setting (e.g. /set temperature 0.5)",
    "/reset": "restore the settings the session started with",
    "/exit": "leave (also /quit or Ctrl-D)",
}

StreamFn = Callable[[str, GenerationConfig], Iterator[StreamChunk]]


def run_prompt_loop(
    stream: StreamFn,
    config: GenerationConfig,
    *,
    input_stream: TextIO,
    output_stream: TextIO,
    error_stream: TextIO,
    show_prompt: bool | None = None,
) -> int:
    """Run until end of input or /exit; returns the exit code (0)."""
    initial = config
    if show_prompt is None:
        show_prompt = bool(getattr(input_stream, "isatty", lambda: False)())

    def say(text: str) -> None:
        error_stream.write(text + "\n")
        error_stream.flush()

    if show_prompt:
        say("Interactive mode: type a prompt and press Enter. /help for commands, /exit or Ctrl-D to leave.")
    while True:
        if show_prompt:
            error_stream.write(">>> ")
            error_stream.flush()
        try:
            line = input_stream.readline()
        except KeyboardInterrupt:
            say("\n(type /exit or press Ctrl-D to leave)")
            continue
        if line == "":
            if show_prompt:
                say("")
            return EXIT_OK
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if line.startswith("/"):
            words = line.split(maxsplit=2)
            cmd = words[0].lower()
            if cmd in ("/exit", "/quit"):
                return EXIT_OK
            if cmd == "/help":
                for name, text in COMMANDS.items():
                    say(f"  {name:<10} {text}")
            elif cmd == "/settings":
                for name, value in config.to_dict().items():
                    say(f"  {name:<19} {value!r}")
            elif cmd == "/reset":
                config = initial
                say("settings restored")
            elif cmd == "/set":
                if len(words) < 3:
                    say("usage: /set KEY VALUE   (keys: " + ", ".join(GenerationConfig.field_names()) + ")")
                    continue
                try:
                    value = parse_field_value(words[1], words[2])
                    config = config.replace(**{words[1]: value})
                except LLMBuilderError as exc:
                    say(f"Error: {exc.one_line()}")
                else:
                    say(f"{words[1]} = {getattr(config, words[1])!r}  ({FIELD_HELP[words[1]]})")
            else:
                close = get_close_matches(cmd, COMMANDS, n=1)
                say(f"unknown command {cmd}" + (f" — did you mean {close[0]}?" if close else " — /help lists them"))
            continue

        chunks: Iterator[StreamChunk] | None = None
        last: StreamChunk | None = None
        try:
            chunks = stream(line, config)
            for chunk in chunks:
                if chunk.text:
                    output_stream.write(chunk.text)
                    output_stream.flush()
                last = chunk
        except KeyboardInterrupt:
            cancel = getattr(chunks, "cancel", None)
            last = cancel() if cancel else None
            if last is not None and last.text:
                output_stream.write(last.text)
            say("\n[cancelled]")
        except LLMBuilderError as exc:
            say(f"\nError: {exc.one_line()}")
            continue
        output_stream.write("\n")
        output_stream.flush()
        if last is not None and last.finish_reason is not None and show_prompt:
            say(footer_text(last))
