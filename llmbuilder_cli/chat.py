"""The interactive loop behind ``--interactive`` and ``interactive_cli``: read a line, answer it, repeat.

Two modes, one loop. **chat**: each message and each accepted reply joins a running context (see
engine/conversation.py for the token side: KV-cache reuse and the overflow policy) and only the reply is
printed. **complete** (llmbuilder's interactive mode; engine/completion.py): each line is a prompt the model
continues, generated exactly like one-shot ``generate text -p LINE`` and printed like it: the line as the
tokenizer normalised it, then the continuation, on the output stream — on a terminal too, so the screen
shows the typed line after the prompt and, below it, the text as the model saw and continued it, and a
redirected log reads like one-shot output, one line per prompt. ``/context on`` keeps earlier lines as
context (off by default, so each line equals one-shot). The seed applies per line (per reply in chat): a
fixed seed (``--seed S`` or ``/seed S``) seeds every generation with S, so a line's output equals
``generate text -p LINE --seed S``; without one, each generation draws a new seed (shown in the footer).
``/mode`` switches; each mode keeps its own history.

Replies go to the output stream; the banner, prompts, notes, footers and errors go to the error stream, so
a redirected stdout holds generated text only. Plain output writes each reply followed by one newline (a
reply may itself span lines); the machine mode (``jsonl=True``, the CLI's ``--jsonl``) writes one JSON
object per reply instead, one per line. Text bound for a terminal has its control characters shown, not
obeyed (terminal_text.for_stream); pipes and files get the exact bytes. The loop takes its I/O and the
sessions as parameters: tests drive it without a terminal.

Ctrl-C during a reply stops that reply only; the partial text stays in view, marked, and joins the
context only after ``/keep``. Ctrl-C at the prompt explains how to leave; end of input (Ctrl-D), ``/exit``
(``/quit``, ``/bye``) or a line that is just ``exit`` or ``quit`` ends with code 0. A line starting with
``\"\"\"`` starts a multi-line message (text after the quotes is its first line); a line ending with
``\"\"\"`` ends it.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Callable, NamedTuple, Protocol, TextIO

from .config import FIELD_HELP, GenerationConfig, field_key, parse_field_value
from .constraint import COMMAND_WORDS, Constraint, from_command
from .errors import EXIT_OK, ConfigError, LLMBuilderError, UsageError
from .files import read_bounded, user_path
from .paths import write_text_atomic
from .terminal_text import for_stream, wrap_for
from .types import GenerationStats, StreamChunk, footer_text

__all__ = [
    "COMMANDS",
    "COMMAND_ALIASES",
    "EXIT_WORDS",
    "ChatState",
    "MODES",
    "Transcript",
    "completions",
    "run_chat",
    "write_stream",
    "save_transcript",
    "load_transcript",
]

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
    "/format": "/format json | schema FILE | regex RE | choice A|B | grammar FILE | off — replies must match (alone: which)",
    "/mode": "/mode chat|complete — converse, or continue each line as a prompt (/mode alone: which and why)",
    "/context": "/context on|off — complete mode: keep earlier lines as context (off: each line alone)",
    "/exit": "leave (also /quit, /bye, a line with just exit or quit, or Ctrl-D)",
}
#: Other spellings people bring from other chat tools → the command they mean.
COMMAND_ALIASES = {"/quit": "/exit", "/bye": "/exit", "/?": "/help"}
#: Whole lines (case and surrounding space ignored) that leave the chat like /exit.
EXIT_WORDS = ("exit", "quit")
MULTILINE = '"""'
#: The interactive modes: a conversation, or each line continued as a prompt (llmbuilder's).
MODES = ("chat", "complete")
MODE_HELP = {
    "chat": "type a message and press Enter; the model answers and both join the conversation; "
            "/mode complete continues each line as a prompt instead",
    "complete": "each line is continued as a prompt; /mode chat to converse",
}


def completions() -> dict[str, tuple[str, ...]]:
    """What Tab completes: every command (and alias) → the words its argument can start with."""
    args = {"/set": GenerationConfig.field_names(), "/seed": ("off",), "/mode": MODES, "/context": ("on", "off"),
            "/format": COMMAND_WORDS}
    return {name: args.get(name, ()) for name in (*COMMANDS, *COMMAND_ALIASES)}


def _count(n: int, noun: str) -> str:
    """``1 exchange``, ``2 exchanges``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"

TRANSCRIPT_FORMAT = "llmbuilder-chat/1"


class ConversationLike(Protocol):  # engine.conversation.Conversation, or a test double
    system: str
    turns: list  # the exchanges in the context
    dropped: list  # the exchanges dropped from it to make room, oldest first

    @property
    def dropped_turns(self) -> int: ...

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
    def load_turns(self, pairs: list[tuple[str, str]], dropped: int = 0) -> None: ...


@dataclass
class ChatState:
    config: GenerationConfig
    initial: GenerationConfig
    sources: dict[str, str] = field(default_factory=dict)  # field -> "default" | "options" | "/set" | "loaded"
    last_stats: GenerationStats | None = None
    cancelled_user: str | None = None  # the message whose reply was cancelled (for /keep and /regen)
    mode: str = "chat"  # "chat" or "complete"


# ----------------------------------------------------------------------------------------- transcripts
class Transcript(NamedTuple):
    system: str
    config: GenerationConfig
    pairs: list[tuple[str, str]]  # (user, reply), oldest first
    dropped: int  # how many of the first pairs had been dropped from the context to make room
    mode: str = "chat"  # "chat", or "complete": each pair is (line, continuation)
    keep_context: bool = False  # complete mode: whether earlier lines were kept as context


def save_transcript(path: Path, conv: ConversationLike, config: GenerationConfig, *, mode: str = "chat",
                    keep_context: bool = False) -> None:
    """JSON (restorable) or, for a ``.md`` path, Markdown (for reading), replacing ``path`` atomically.

    Every exchange is saved, those dropped from the context to make room included: they come first and
    carry ``"dropped": true`` (in Markdown, a note), so loading the file restores the same context. The
    mode is recorded (``"mode"``; in complete mode also ``"context"``), so loading it restores the mode;
    so is a ``/format`` constraint (``"constraint"``, as ``--json`` records it)."""
    turns = [{"user": t.user, "reply": t.reply, "dropped": True} for t in conv.dropped]
    turns += [{"user": t.user, "reply": t.reply} for t in conv.turns]
    complete = mode == "complete"
    if path.suffix.lower() in (".md", ".markdown"):
        parts = ["# llmbuilder " + ("completions" if complete else "chat"), ""]
        if conv.system:
            parts += ["**System:** " + conv.system, ""]
        for t in turns:
            if t.get("dropped"):
                parts += ["*(dropped from the model's context to make room)*", ""]
            if complete:
                parts += ["## Prompt", "", t["user"], "", "## Continuation", "", t["reply"], ""]
            else:
                parts += ["## You", "", t["user"], "", "## Model", "", t["reply"], ""]
        parts += ["## Settings", "", "```json", json.dumps(config.to_dict(), indent=2), "```", ""]
        if config.constraint is not None:
            parts += [f"Replies must be {config.constraint.describe()}.", ""]
        text = "\n".join(parts)
    else:
        data: dict[str, Any] = {"format": TRANSCRIPT_FORMAT, "mode": mode}
        if complete:
            data["context"] = keep_context
        data.update(system=conv.system, settings=config.to_dict(), turns=turns)
        if config.constraint is not None:
            data["constraint"] = config.constraint.to_dict()
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}", hint="choose a writable path") from None


def load_transcript(path: Path) -> Transcript:
    """System text, settings and exchanges from a JSON transcript written by /save."""
    if not path.exists():
        raise UsageError(f"no such file: {path}", hint="give the path of a transcript saved with /save")
    raw = read_bounded(path, "the transcript", "give a transcript saved with /save FILE.json")  # /dev/zero too
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, RecursionError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", hint="give a transcript saved with /save FILE.json") from None
    except ValueError:
        raise UsageError(f"{path} is not JSON", hint="only .json transcripts can be loaded (.md is for reading)") from None
    if not isinstance(data, dict) or data.get("format") != TRANSCRIPT_FORMAT:
        raise UsageError(f"{path} is not a chat transcript", hint="give a file saved with /save FILE.json")
    turns = data.get("turns", [])
    if not isinstance(turns, list) or not all(
        isinstance(t, dict) and isinstance(t.get("user"), str) and isinstance(t.get("reply"), str)
        and isinstance(t.get("dropped", False), bool) for t in turns
    ):  # fmt: skip
        raise UsageError(f"{path}: 'turns' must be a list of {{user, reply}} texts", hint="re-save the chat")
    flags = [t.get("dropped", False) for t in turns]
    dropped = flags.index(False) if False in flags else len(flags)
    if any(flags[dropped:]):
        raise UsageError(f"{path}: dropped exchanges must come first", hint="re-save the chat")
    settings = data.get("settings", {})
    if not isinstance(settings, dict) or set(settings) - set(GenerationConfig.field_names()):
        raise UsageError(f"{path}: unknown settings", hint="re-save the chat with this version")
    if isinstance(settings.get("stop"), list):
        settings = {**settings, "stop": tuple(settings["stop"])}
    config = GenerationConfig(**settings)  # validated; a ConfigError names the field
    if data.get("constraint") is not None:
        config = config.replace(constraint=Constraint.from_dict(data["constraint"]))  # compiled again
    system = data.get("system") or ""
    if not isinstance(system, str):
        raise UsageError(f"{path}: 'system' must be text", hint="re-save the chat")
    mode = data.get("mode", "chat")  # files saved before modes existed are chats
    keep_context = data.get("context", False)
    if mode not in MODES or not isinstance(keep_context, bool):
        raise UsageError(f"{path}: 'mode' must be one of {', '.join(MODES)} and 'context' true or false",
                         hint="re-save the chat")
    return Transcript(system, config, [(t["user"], t["reply"]) for t in turns], dropped, mode, keep_context)


# ------------------------------------------------------------------------------------------------ loop
def write_stream(stream: Any, out: TextIO) -> tuple[StreamChunk | None, bool]:
    """Write a stream's text to ``out`` as it comes → (last chunk, whether Ctrl-C cancelled it).
    On Ctrl-C the stream is cancelled and the text it still held back is written too. On a terminal,
    control characters in the text are shown, not obeyed; a pipe or file gets the exact text."""
    last: StreamChunk | None = None
    try:
        for chunk in stream:
            if chunk.text:
                out.write(for_stream(chunk.text, out))
                out.flush()
            last = chunk
    except KeyboardInterrupt:
        last = stream.cancel()
        if last.text:
            out.write(for_stream(last.text, out))
        return last, True
    return last, False


def reply_record(user_text: str, text: str, last: StreamChunk | None, dropped: int,
                 conv: ConversationLike, *, mode: str = "chat", prompt_text: str = "") -> dict[str, Any]:
    """The JSON object the machine mode writes for one reply. Chat: the message (``user``) and the reply
    (``text``); complete mode: the line (``prompt``), as the tokenizer normalised it (``prompt_text``, what
    plain output prints first) and the continuation (``text``)."""
    said = {"user": user_text} if mode == "chat" else {"prompt": user_text, "prompt_text": prompt_text}
    return {
        "mode": mode,
        **said,
        "text": text,
        "finish_reason": str(last.finish_reason) if last is not None and last.finish_reason else None,
        "dropped": dropped,  # exchanges dropped from the context to make room for this reply
        "context": {"used": conv.context_used, "size": conv.block_size},
        "stats": last.stats.to_dict() if last is not None and last.stats is not None else None,
    }


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
    render_reply: Callable[..., tuple[StreamChunk | None, bool]] | None = None,
    jsonl: bool = False,
    completion: ConversationLike | None = None,
    mode: str = "chat",
    mode_reason: str = "",
) -> int:
    """Run until end of input or /exit; returns the exit code (0).

    ``option_fields``: settings given on the command line (shown as such by /params); ``sources``
    (field → where it came from, e.g. "env LLMBUILDER_TOP_K" or "profile 'x'") replaces that. ``read_line``:
    reads one line given its prompt text (None at end of input); by default lines come from
    ``input_stream`` and prompts are written to ``error_stream`` when it is a terminal.
    ``render_reply(stream) -> (last chunk, cancelled)``: shows a reply (the CLI's live panel); by default
    it is written plainly to ``output_stream``. It handles Ctrl-C itself by cancelling the stream. In
    complete mode it is called as ``render_reply(stream, echo=TEXT)`` and shows TEXT (the line, normalised)
    before the continuation. ``jsonl``: instead of the reply's text, write one compact JSON object per reply
    (`reply_record`) on its own line; ``render_reply`` is not used then.

    ``conv`` is the chat session; ``completion`` (an `engine.completion.Completion`) the complete mode's, if
    that mode is offered. ``mode`` ("chat" or "complete") is the mode the loop starts in, ``mode_reason``
    why (the banner says it); ``/mode`` switches."""
    if mode not in MODES or (mode == "complete" and completion is None):
        raise UsageError(f"cannot start in mode {mode!r}", hint="use 'chat', or 'complete' with a completion session")
    sessions: dict[str, ConversationLike | None] = {"chat": conv, "complete": completion}
    conv = sessions[mode]  # type: ignore[assignment]  # the session of the current mode, reassigned by /mode
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
    state = ChatState(config=config, initial=config, sources=dict(sources), mode=mode)
    initial_sources = dict(sources)

    def say(text: str) -> None:
        error_stream.write(for_stream(wrap_for(text, error_stream), error_stream) + "\n")
        error_stream.flush()

    def read_message() -> str | None:
        """One message: a line, or the lines between an opening and a closing \"\"\"."""
        line = next_line(">>> ")
        if line is not None and line.strip().lower() in EXIT_WORDS:
            return "/exit"  # what people coming from other chat tools type to leave
        if line is None or not line.lstrip().startswith(MULTILINE):
            return line
        lines: list[str] = []
        rest = line.lstrip()[len(MULTILINE):]
        while rest is not None:
            if rest.rstrip().endswith(MULTILINE):  # the closing quotes, after the message's last line
                last_line = rest.rstrip()[: -len(MULTILINE)]
                if last_line.strip():
                    lines.append(last_line)
                break
            if rest or lines:
                lines.append(rest)
            rest = next_line("... ")
        while lines and not lines[-1].strip():
            lines.pop()
        return "\n".join(lines)

    def reply(user_text: str) -> None:
        state.cancelled_user = None
        complete = state.mode == "complete"
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
            noun = "line" if complete else "exchange"
            which = f"oldest {noun}" if dropped == 1 else f"{dropped} oldest {noun}s"
            say(f"(context full: dropped the {which}" + (")" if complete else "; the system text is kept)"))
        prompt_tokens = len(getattr(stream, "prompt_ids", None) or ())
        if prompt_tokens > conv.block_size:
            what = "the prompt has" if complete else "this message takes"
            say(f"note: {what} {prompt_tokens} tokens but the model's context is {conv.block_size}; "
                f"it sees only the last {conv.block_size} (sliding window)")
        echo = conv.echo_text(user_text) if complete else ""  # type: ignore[attr-defined]
        buffer = io.StringIO() if jsonl else None
        try:
            if buffer is not None:
                last, cancelled = write_stream(stream, buffer)
            elif render_reply is not None:
                last, cancelled = render_reply(stream, echo=echo) if complete else render_reply(stream)
            else:
                if echo:  # as one-shot generation prints it: the prompt, then the continuation
                    output_stream.write(for_stream(echo, output_stream))
                    output_stream.flush()
                last, cancelled = write_stream(stream, output_stream)
        except LLMBuilderError as exc:
            conv.discard()
            say(f"\nError: {exc.one_line()}")
            return
        if not cancelled:
            conv.accept()
        if buffer is not None:
            record = reply_record(user_text, buffer.getvalue(), last, dropped, conv, mode=state.mode,
                                  prompt_text=echo)
            output_stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            output_stream.write("\n")
        output_stream.flush()
        if cancelled:
            state.cancelled_user = user_text
            state.last_stats = last.stats if last is not None else None
            say("[cancelled — not kept in the history; /keep keeps it, /regen continues the line again]" if complete
                else "[cancelled — not added to the conversation; /keep adds it, /regen answers again]")
            return
        if last is not None:
            state.last_stats = last.stats
            if show_prompt:
                kept = not complete or getattr(conv, "keep_context", False)
                say(footer_text(last, conv.block_size)
                    + (f" [context {conv.context_used}/{conv.block_size}]" if kept else ""))

    def command(line: str) -> bool:
        """Run a slash command; False means leave."""
        nonlocal conv
        words = line.split(maxsplit=1)
        cmd, arg = words[0].lower(), (words[1].strip() if len(words) > 1 else "")
        cmd = COMMAND_ALIASES.get(cmd, cmd)
        if cmd == "/exit":
            return False
        if cmd == "/help":
            for name, text in COMMANDS.items():
                say(f"  {name:<9} {text}" + ("  (also /?)" if name == "/help" else ""))
            say('  """      start a multi-line message (text may follow on the same line); '
                'a line ending with """ ends it')
        elif cmd == "/params":
            for name, value in state.config.to_dict().items():
                say(f"  {name:<19} {value!r:<12} ({state.sources.get(name, 'default')})")
        elif cmd in ("/set", "/seed"):
            key, _, value = (arg.partition(" ") if cmd == "/set" else ("seed", " ", arg))
            key = field_key(key) if key else key  # max-tokens, MAX_TOKENS, --max-tokens: max_new_tokens
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
        elif cmd == "/format":
            if not arg:
                c = state.config.constraint
                say(f"replies must be {c.describe()} (/format off to free them)" if c is not None
                    else "replies are free text (/format json, schema, regex, choice or grammar constrains them)")
                return True
            try:
                constraint = from_command(arg)
                state.config = state.config.replace(constraint=constraint)
            except LLMBuilderError as exc:
                say(f"Error: {exc.one_line()}")
            else:
                say("replies are free text again" if constraint is None else f"replies must be {constraint.describe()}")
        elif cmd == "/reset":
            state.config, state.sources = state.initial, dict(initial_sources)
            say("settings restored")
        elif cmd == "/system" and state.mode == "complete":
            say("complete mode has no system text (/mode chat to converse with one)")
        elif cmd == "/system":
            if not arg:
                say(f"system text: {conv.system!r}" if conv.system else "no system text (/system TEXT sets one)")
            else:
                conv.set_system("" if arg == "-" else arg)
                say("system text removed" if arg == "-" else "system text set")
        elif cmd == "/clear":
            conv.clear()
            state.cancelled_user = None
            say("history cleared" if state.mode == "complete" else "conversation cleared")
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
                save_transcript(user_path(arg), conv, state.config, mode=state.mode,
                                keep_context=bool(getattr(conv, "keep_context", False)))
            except LLMBuilderError as exc:
                say(f"Error: {exc.one_line()}")
            else:
                kept = len(conv.dropped) + len(conv.turns)
                say(f"saved {_count(kept, noun())} to {arg}"
                    + (f" ({len(conv.dropped)} of them dropped from the context earlier)" if conv.dropped else ""))
        elif cmd == "/load":
            if not arg:
                say("usage: /load FILE.json")
                return True
            try:
                saved = load_transcript(user_path(arg))
            except (LLMBuilderError, ConfigError) as exc:
                say(f"Error: {exc.one_line()}")
            else:
                if saved.mode != state.mode and sessions[saved.mode] is None:
                    say(f"Error: {arg} was saved in {saved.mode} mode, which this model does not offer here")
                    return True
                if saved.mode != state.mode:
                    switch(saved.mode)
                    reason[0] = f"restored by /load {arg}"
                if state.mode == "complete":
                    conv.keep_context = saved.keep_context  # type: ignore[attr-defined]
                else:
                    conv.set_system(saved.system)
                conv.load_turns(saved.pairs, saved.dropped)
                state.config = saved.config
                state.sources = {n: "loaded" for n in GenerationConfig.field_names()}
                state.cancelled_user = None
                say(f"loaded {_count(len(saved.pairs), noun())} and their settings from {arg} ({state.mode} mode"
                    + (", context kept" if getattr(conv, "keep_context", False) else "") + ")"
                    + (f" ({saved.dropped} of them out of the context, as when saved)" if saved.dropped else ""))
        elif cmd == "/stats":
            st = state.last_stats
            if st is not None:
                what = "continuation" if state.mode == "complete" else "reply"
                say(f"last {what}: {_count(st.new_tokens, 'token')}, "
                    f"first token {st.time_to_first_token_s * 1000:.0f} ms, "
                    f"{st.tokens_per_s:.1f} tok/s" + (f", seed {st.seed}" if st.seed is not None else ""))
            if state.mode == "complete" and not getattr(conv, "keep_context", False):
                say(f"{_count(len(conv.turns), 'line')} continued; each stands alone (/context on keeps them)")
            else:
                say(f"context: {conv.context_used}/{conv.block_size} tokens, {_count(len(conv.turns), noun())}, "
                    f"{conv.dropped_turns} dropped to make room")
        elif cmd == "/mode":
            if not arg:
                say(f"{state.mode} mode — {MODE_HELP[state.mode]}" + (f" ({reason[0]})" if reason[0] else ""))
            elif arg.lower() not in MODES:
                say("usage: /mode chat   or   /mode complete")
            elif arg.lower() == state.mode:
                say(f"already in {state.mode} mode")
            elif sessions[arg.lower()] is None:
                say(f"Error: {arg.lower()} mode is not available here")
            else:
                switch(arg.lower())
                reason[0] = "switched with /mode"
                say(f"{state.mode} mode — {MODE_HELP[state.mode]}")
        elif cmd == "/context":
            if state.mode != "complete":
                say("/context is for complete mode; a chat always keeps its conversation (/clear forgets it)")
            elif arg.lower() not in ("on", "off", ""):
                say("usage: /context on   or   /context off")
            else:
                if arg:
                    conv.keep_context = arg.lower() == "on"  # type: ignore[attr-defined]
                on = getattr(conv, "keep_context", False)
                say("context on: earlier lines and their continuations come before each new line" if on
                    else "context off: each line is continued on its own, as one-shot generation")
        else:
            close = get_close_matches(cmd, [*COMMANDS, *COMMAND_ALIASES], n=1)
            say(f"unknown command {cmd}" + (f" — did you mean {close[0]}?" if close else " — /help lists them"))
        return True

    def noun() -> str:
        return "line" if state.mode == "complete" else "exchange"

    def switch(new_mode: str) -> None:
        nonlocal conv
        if state.cancelled_user is not None:
            conv.discard()
        conv = sessions[new_mode]  # type: ignore[assignment]
        state.mode, state.cancelled_user = new_mode, None

    reason = [mode_reason]
    if show_prompt:
        say(f"{state.mode.capitalize()} mode" + (f" ({mode_reason})" if mode_reason else "") + ": "
            + MODE_HELP[state.mode] + ".")
        say("/help for commands, /exit or Ctrl-D to leave.")
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
