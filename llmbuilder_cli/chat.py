"""The multi-turn chat behind ``--interactive`` and ``interactive_cli``: read a line, answer it, repeat.

Each message and each accepted reply joins a running context (see engine/conversation.py for the token
side: KV-cache reuse and the overflow policy). Replies go to the output stream; the banner, prompts,
notes, footers and errors go to the error stream, so piped use gets clean replies, one per input line.
The loop takes its I/O and the conversation as parameters: tests drive it without a terminal.

Ctrl-C during a reply stops that reply only; the partial text stays in view, marked, and joins the
context only after ``/keep``. Ctrl-C at the prompt explains how to leave; end of input (Ctrl-D) ends
with code 0. A line holding only ``\"\"\"`` starts a multi-line message, ended by another such line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Callable, Protocol, TextIO

from .config import FIELD_HELP, GenerationConfig, parse_field_value
from .errors import EXIT_OK, ConfigError, LLMBuilderError, UsageError
from .types import GenerationStats, StreamChunk, footer_text

__all__ = ["COMMANDS", "ChatState", "run_chat", "write_stream", "save_transcript", "load_transcript"]

COMMANDS = {
    "/help": "show this help",
    "/params": "every generation setting, its value and where it came from",
    "/set": "/set KEY VALUE — change a setting (e.g. /set temperature 0.5)",
    "/seed": "/seed N — sample with seed N from now on (/seed off: a new random seed per reply)",
    "/reset": "restore the settings the chat started with",
    "/system": "/system TEXT — set the system text (/system - removes it; /system alone shows it)",
    "/clear": "forget the conversation (settings and system text stay)",
    "/undo": "remove the last exchange",
    "/regen": "answer the last message again",
    "/keep": "add a cancelled partial reply to the conversation",
    "/save": "/save FILE — write transcript and settings (.json, or .md for reading)",
    "/load": "/load FILE — restore a transcript and its settings saved as .json",
    "/stats": "numbers about the last reply and the context",
    "/exit": "leave (also /quit or Ctrl-D)",
}

TRANSCRIPT_FORMAT = "llmbuilder-chat/1"


class ConversationLike(Protocol):  # engine.conversation.Conversation, or a test double
    system: str
    turns: list
    dropped_turns: int

    @property
    def context_used(self) -> int: ...
    @property
    def block_size(self) -> int: ...
    def start(self, user_text: str, config: GenerationConfig) -> tuple[Any, int]: ...
    def accept(self) -> Any: ...
    def discard(self) -> None: ...
    def undo(self) -> Any: ...
    def clear(self) -> None: ...
    def set_system(self, text: str) -> None: ...
    def load_turns(self, pairs: list[tuple[str, str]]) -> None: ...


@dataclass
class ChatState:
    config: GenerationConfig
    initial: GenerationConfig
    sources: dict[str, str] = field(default_factory=dict)  # field -> "default" | "options" | "/set" | "loaded"
    last_stats: GenerationStats | None = None
    cancelled_user: str | None = None  # the message whose reply was cancelled (for /keep and /regen)


# ----------------------------------------------------------------------------------------- transcripts
def save_transcript(path: Path, conv: ConversationLike, config: GenerationConfig) -> None:
    """JSON (restorable) or, for a ``.md`` path, Markdown (for reading)."""
    turns = [{"user": t.user, "reply": t.reply} for t in conv.turns]
    if path.suffix.lower() in (".md", ".markdown"):
        parts = ["# llmbuilder chat", ""]
        if conv.system:
            parts += ["**System:** " + conv.system, ""]
        for t in turns:
            parts += ["## You", "", t["user"], "", "## Model", "", t["reply"], ""]
        parts += ["## Settings", "", "```json", json.dumps(config.to_dict(), indent=2), "```", ""]
        text = "\n".join(parts)
    else:
        data = {"format": TRANSCRIPT_FORMAT, "system": conv.system, "settings": config.to_dict(), "turns": turns}
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}", hint="choose a writable path") from None


def load_transcript(path: Path) -> tuple[str, GenerationConfig, list[tuple[str, str]]]:
    """(system text, settings, (user, reply) pairs) from a JSON transcript written by /save."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}", hint="give the path of a transcript saved with /save") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", hint="give a transcript saved with /save FILE.json") from None
    except ValueError:
        raise UsageError(f"{path} is not JSON", hint="only .json transcripts can be loaded (.md is for reading)") from None
    if not isinstance(data, dict) or data.get("format") != TRANSCRIPT_FORMAT:
        raise UsageError(f"{path} is not a chat transcript", hint="give a file saved with /save FILE.json")
    turns = data.get("turns", [])
    if not isinstance(turns, list) or not all(
        isinstance(t, dict) and isinstance(t.get("user"), str) and isinstance(t.get("reply"), str) for t in turns
    ):
        raise UsageError(f"{path}: 'turns' must be a list of {{user, reply}} texts", hint="re-save the chat")
    settings = data.get("settings", {})
    if not isinstance(settings, dict) or set(settings) - set(GenerationConfig.field_names()):
        raise UsageError(f"{path}: unknown settings", hint="re-save the chat with this version")
    if isinstance(settings.get("stop"), list):
        settings = {**settings, "stop": tuple(settings["stop"])}
    config = GenerationConfig(**settings)  # validated; a ConfigError names the field
    system = data.get("system") or ""
    if not isinstance(system, str):
        raise UsageError(f"{path}: 'system' must be text", hint="re-save the chat")
    return system, config, [(t["user"], t["reply"]) for t in turns]


# ------------------------------------------------------------------------------------------------ loop
def write_stream(stream: Any, out: TextIO) -> tuple[StreamChunk | None, bool]:
    """Write a stream's text to ``out`` as it comes → (last chunk, whether Ctrl-C cancelled it).
    On Ctrl-C the stream is cancelled and the text it still held back is written too."""
    last: StreamChunk | None = None
    try:
        for chunk in stream:
            if chunk.text:
                out.write(chunk.text)
                out.flush()
            last = chunk
    except KeyboardInterrupt:
        last = stream.cancel()
        if last.text:
            out.write(last.text)
        return last, True
    return last, False


def run_chat(
    conv: ConversationLike,
    config: GenerationConfig,
    *,
    input_stream: TextIO,
    output_stream: TextIO,
    error_stream: TextIO,
    show_prompt: bool | None = None,
    option_fields: tuple[str, ...] = (),
    sources: dict[str, str] | None = None,
    read_line: Callable[[str], str | None] | None = None,
    render_reply: Callable[[Any], tuple[StreamChunk | None, bool]] | None = None,
) -> int:
    """Run until end of input or /exit; returns the exit code (0).

    ``option_fields``: settings given on the command line (shown as such by /params); ``sources``
    (field → where it came from, e.g. "env LLMBUILDER_TOP_K" or "profile 'x'") replaces that. ``read_line``:
    reads one line given its prompt text (None at end of input); by default lines come from
    ``input_stream`` and prompts are written to ``error_stream`` when it is a terminal.
    ``render_reply(stream) -> (last chunk, cancelled)``: shows a reply (the CLI's live panel); by default
    it is written plainly to ``output_stream``. It handles Ctrl-C itself by cancelling the stream."""
    if show_prompt is None:
        show_prompt = read_line is not None or bool(getattr(input_stream, "isatty", lambda: False)())

    def next_line(prompt: str) -> str | None:
        if read_line is not None:
            return read_line(prompt)
        if show_prompt:
            error_stream.write(prompt)
            error_stream.flush()
        line = input_stream.readline()
        return None if line == "" else line.rstrip("\r\n")
    defaults = GenerationConfig()
    given = sources or {}
    sources = {
        n: given.get(n)
        or ("options" if n in option_fields or getattr(config, n) != getattr(defaults, n) else "default")
        for n in GenerationConfig.field_names()
    }
    state = ChatState(config=config, initial=config, sources=dict(sources))
    initial_sources = dict(sources)

    def say(text: str) -> None:
        error_stream.write(text + "\n")
        error_stream.flush()

    def read_message() -> str | None:
        line = next_line(">>> ")
        if line is None or line.strip() != '"""':
            return line
        lines: list[str] = []
        while True:
            more = next_line("... ")
            if more is None or more.strip() == '"""':
                return "\n".join(lines)
            lines.append(more)

    def reply(user_text: str) -> None:
        state.cancelled_user = None
        try:
            stream, dropped = conv.start(user_text, state.config)
        except LLMBuilderError as exc:
            say(f"Error: {exc.one_line()}")
            return
        except KeyboardInterrupt:  # before the reply began: nothing to keep
            conv.discard()
            say("[cancelled]")
            return
        if dropped:
            say(f"(context full: dropped the {dropped} oldest exchange{'s' if dropped > 1 else ''}; "
                f"the system text is kept)")
        try:
            last, cancelled = render_reply(stream) if render_reply else write_stream(stream, output_stream)
        except LLMBuilderError as exc:
            conv.discard()
            say(f"\nError: {exc.one_line()}")
            return
        output_stream.write("\n")
        output_stream.flush()
        if cancelled:
            state.cancelled_user = user_text
            state.last_stats = last.stats if last is not None else None
            say("[cancelled — not added to the conversation; /keep adds it, /regen answers again]")
            return
        conv.accept()
        if last is not None:
            state.last_stats = last.stats
            if show_prompt:
                say(footer_text(last, conv.block_size) + f" [context {conv.context_used}/{conv.block_size}]")

    def command(line: str) -> bool:
        """Run a slash command; False means leave."""
        words = line.split(maxsplit=1)
        cmd, arg = words[0].lower(), (words[1].strip() if len(words) > 1 else "")
        if cmd in ("/exit", "/quit"):
            return False
        if cmd == "/help":
            for name, text in COMMANDS.items():
                say(f"  {name:<9} {text}")
            say('  """      start/end a multi-line message')
        elif cmd == "/params":
            for name, value in state.config.to_dict().items():
                say(f"  {name:<19} {value!r:<12} ({state.sources.get(name, 'default')})")
        elif cmd in ("/set", "/seed"):
            key, _, value = (arg.partition(" ") if cmd == "/set" else ("seed", " ", arg))
            if not key or not value.strip():
                say("usage: /set KEY VALUE   (keys: " + ", ".join(GenerationConfig.field_names()) + ")"
                    if cmd == "/set" else "usage: /seed N   or   /seed off")
                return True
            try:
                state.config = state.config.replace(**{key: parse_field_value(key, value.strip())})
            except LLMBuilderError as exc:
                say(f"Error: {exc.one_line()}")
            else:
                state.sources[key] = "/set"
                say(f"{key} = {getattr(state.config, key)!r}  ({FIELD_HELP[key]})")
        elif cmd == "/reset":
            state.config, state.sources = state.initial, dict(initial_sources)
            say("settings restored")
        elif cmd == "/system":
            if not arg:
                say(f"system text: {conv.system!r}" if conv.system else "no system text (/system TEXT sets one)")
            else:
                conv.set_system("" if arg == "-" else arg)
                say("system text removed" if arg == "-" else "system text set")
        elif cmd == "/clear":
            conv.clear()
            state.cancelled_user = None
            say("conversation cleared")
        elif cmd == "/undo":
            turn = conv.undo()
            state.cancelled_user = None
            say(f"removed: {turn.user!r}" if turn else "nothing to undo")
        elif cmd == "/keep":
            if state.cancelled_user is None:
                say("nothing to keep (only a cancelled reply can be kept)")
            else:
                conv.accept()
                state.cancelled_user = None
                say("partial reply added to the conversation")
        elif cmd == "/regen":
            if state.cancelled_user is not None:
                user = state.cancelled_user
                conv.discard()
            else:
                turn = conv.undo()
                if turn is None:
                    say("nothing to answer again")
                    return True
                user = turn.user
            reply(user)
        elif cmd == "/save":
            if not arg:
                say("usage: /save FILE.json   or   /save FILE.md")
                return True
            try:
                save_transcript(Path(arg).expanduser(), conv, state.config)
            except LLMBuilderError as exc:
                say(f"Error: {exc.one_line()}")
            else:
                say(f"saved {len(conv.turns)} exchanges to {arg}")
        elif cmd == "/load":
            if not arg:
                say("usage: /load FILE.json")
                return True
            try:
                system, cfg, pairs = load_transcript(Path(arg).expanduser())
            except (LLMBuilderError, ConfigError) as exc:
                say(f"Error: {exc.one_line()}")
            else:
                conv.set_system(system)
                conv.load_turns(pairs)
                state.config = cfg
                state.sources = {n: "loaded" for n in GenerationConfig.field_names()}
                state.cancelled_user = None
                say(f"loaded {len(pairs)} exchanges and their settings from {arg}")
        elif cmd == "/stats":
            st = state.last_stats
            if st is not None:
                say(f"last reply: {st.new_tokens} tokens, first token {st.time_to_first_token_s * 1000:.0f} ms, "
                    f"{st.tokens_per_s:.1f} tok/s" + (f", seed {st.seed}" if st.seed is not None else ""))
            say(f"context: {conv.context_used}/{conv.block_size} tokens, {len(conv.turns)} exchanges, "
                f"{conv.dropped_turns} dropped to make room")
        else:
            close = get_close_matches(cmd, COMMANDS, n=1)
            say(f"unknown command {cmd}" + (f" — did you mean {close[0]}?" if close else " — /help lists them"))
        return True

    if show_prompt:
        say("Chat: type a message and press Enter. /help for commands, /exit or Ctrl-D to leave.")
    while True:
        try:
            message = read_message()
        except KeyboardInterrupt:
            say("\n(type /exit or press Ctrl-D to leave)")
            continue
        if message is None:
            if show_prompt:
                say("")
            return EXIT_OK
        if not message.strip():
            continue
        if message.startswith("/"):
            if not command(message):
                return EXIT_OK
            continue
        reply(message)
