"""The setup wizard's questions, in order, independent of any terminal library.

`run_wizard` asks through an `Asker` (questionary in a terminal, a scripted one in tests) and returns a
`WizardResult`: every value, the mode, the equivalent one-line command, and what to do with it (run,
save as a profile, both, or cancel). Answers are checked with the same rules as the command line
(`settings.parse_value` → `GenerationConfig`), never a copy of them; an invalid answer is refused in
place with the reason. Nothing is written here: saving and running are the caller's (cli/setup.py).

The result remembers which keys the wizard decided (`WizardResult.asked`); every other key it started
from (threads, device, dtype, quantize, ...) is kept as it was, shown in the summary and spelled out in
the equivalent command, so editing a profile never drops what the wizard does not ask about.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from ..config import FIELD_GUIDE, MAX_SCALE, MIN_TEMPERATURE, TEMPERATURE_PRESETS, GenerationConfig
from ..errors import LLMBuilderError
from ..files import user_path
from .. import settings as st

__all__ = ["Asker", "WizardResult", "run_wizard", "equivalent_argv", "next_time_command", "stop_from_text",
           "stop_to_text", "MODES", "ACTIONS", "MODEL_FORMATS"]

Validator = Callable[[str], "str | None"]  # answer → None when valid, else the reason

MODES = {"prompt": "One prompt: continue a text once", "chat": "Chat: a conversation in the terminal",
         "batch": "Batch: a file of prompts, one JSON line per result"}
ACTIONS = {"run": "Run it now", "save": "Save as a profile", "both": "Save as a profile and run it",
           "cancel": "Cancel (nothing is saved)"}
#: Every kind of model the tool loads (engine/loading.py), as the wizard explains them.
MODEL_FORMATS = ("llmbuilder's model.pt, a trainer checkpoint or a run directory; a Hugging Face model "
                 "directory (config.json + safetensors); a GGUF file (.gguf); or ORG/NAME, a model in the local "
                 "Hugging Face cache (llmbuilder pull)")
#: Keys given as flags whose names are not simply ``--key-with-dashes``.
_FLAG_NAMES = {"model": "-m", "tokenizer": "-t", "max_new_tokens": "--max-tokens", "min_new_tokens": "--min-tokens"}
#: Keys the command line accepts only for a chat (a profile may still hold them).
_CHAT_ONLY = ("system", "chat_template")


class Asker(Protocol):
    """How the wizard talks to a person. Each question returns the answer; Ctrl-C raises KeyboardInterrupt.

    ``busy`` marks a validator that reads files and takes a while: the asker may run it once the answer
    is entered, showing ``busy`` meanwhile, and ask again with the reason when it refuses the answer.
    """

    def say(self, text: str, *, style: str = "") -> None: ...

    def text(self, message: str, *, default: str = "", validate: Validator | None = None, busy: str = "") -> str: ...

    def path(self, message: str, *, default: str = "", validate: Validator | None = None, busy: str = "") -> str: ...

    def select(self, message: str, choices: Sequence[tuple[str, Any]], *, default: Any = None) -> Any: ...

    def confirm(self, message: str, *, default: bool = True) -> bool: ...

    def summary(self, rows: Sequence[tuple[str, str]], command: str) -> None: ...


@dataclass
class WizardResult:
    mode: str  # "prompt" | "chat" | "batch"
    values: dict[str, Any]  # settings keys → values (model, tokenizer, system, generation fields)
    prompt: str | None = None
    prompts_file: str | None = None
    action: str = "cancel"  # "run" | "save" | "both" | "cancel"
    profile: str | None = None
    make_default: bool = False
    argv: list[str] = field(default_factory=list)  # the command after "llmbuilder"
    asked: set[str] = field(default_factory=set)  # the keys the wizard decided; the others are kept

    @property
    def command(self) -> str:
        return " ".join(_shell_quote(a) for a in ["llmbuilder", *self.argv])

    def profile_values(self) -> dict[str, Any]:
        """What a saved profile holds: every setting chosen or kept (model, tokenizer, run options, chat
        system text, generation fields), never the prompt or the mode."""
        return {k: v for k, v in self.values.items() if k in st.KEYS and v not in (None, "", ())}


def _shell_quote(arg: str) -> str:
    """``shlex.quote``, except that text with control characters (a stop string of two newlines) is
    written ``$'\\n\\n'`` so the command stays on one line and pastes back the same text."""
    if not any(ord(c) < 32 or ord(c) == 127 for c in arg):
        return shlex.quote(arg)
    body = "".join({"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(c)
                   or (f"\\x{ord(c):02x}" if ord(c) < 32 or ord(c) == 127 else c) for c in arg)
    return f"$'{body}'"


# Stop strings are typed as one line: '|' separates them, \n is a line break, \t a tab, \| and \\ themselves.
_STOP_ESCAPES = {"n": "\n", "t": "\t", "|": "|", "\\": "\\"}


def stop_from_text(text: str) -> tuple[str, ...]:
    """The wizard's one-line spelling of stop strings → the strings: ``User:|\\n\\n`` → ("User:", "\\n\\n").
    A backslash before any other character is kept as written."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for c in chars:
        if c == "\\":
            nxt = next(chars, "")
            current.append(_STOP_ESCAPES.get(nxt, "\\" + nxt))
        elif c == "|":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    parts.append("".join(current))
    return tuple(p for p in parts if p)


def stop_to_text(stop: Sequence[str]) -> str:
    """Stop strings in the spelling `stop_from_text` reads back."""
    back = {v: "\\" + k for k, v in _STOP_ESCAPES.items()}
    return "|".join("".join(back.get(c, c) for c in s) for s in stop)


def _fmt(value: Any, key: str = "") -> str:
    if key == "stop":
        return stop_to_text(value or ())
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return " | ".join(map(str, value)) if value else ""
    return "" if value is None else str(value)


def equivalent_argv(r: WizardResult) -> list[str]:
    """The ``llmbuilder`` arguments that do exactly what the wizard chose, every value spelled out."""
    v = r.values
    argv = ["generate", "text"]
    if v.get("model") not in (None, "", "demo"):
        argv += ["-m", str(v["model"])]
        if v.get("tokenizer"):
            argv += ["-t", str(v["tokenizer"])]
    handled = {"model", "tokenizer", *GenerationConfig.field_names(), *_CHAT_ONLY}
    for key in st.KEYS:  # run options the wizard kept (threads, device, dtype, quantize, ...)
        if key not in handled and v.get(key) not in (None, "", False):
            flag = _FLAG_NAMES.get(key, "--" + key.replace("_", "-"))
            argv += [flag] if v[key] is True else [flag, _fmt(v[key])]
    cfg = GenerationConfig(**{k: v[k] for k in GenerationConfig.field_names() if k in v})
    if cfg.greedy:
        argv.append("--greedy")
    else:
        argv += ["--sample", "--temperature", _fmt(cfg.temperature), "--top-k", str(cfg.top_k or 0),
                 "--top-p", _fmt(cfg.top_p if cfg.top_p is not None else 1.0)]
        if cfg.seed is not None:
            argv += ["--seed", str(cfg.seed)]
    argv += ["--max-tokens", str(cfg.max_new_tokens)]
    if cfg.min_new_tokens:
        argv += ["--min-tokens", str(cfg.min_new_tokens)]
    if cfg.repetition_penalty != 1.0:
        argv += ["--repetition-penalty", _fmt(cfg.repetition_penalty)]
    if cfg.ignore_eos:
        argv.append("--ignore-eos")
    for s in cfg.stop:
        argv += ["--stop", s]
    if r.mode == "chat":
        argv.append("-i")
        for key in _CHAT_ONLY:
            if v.get(key) not in (None, ""):
                argv += [_FLAG_NAMES.get(key, "--" + key.replace("_", "-")), str(v[key])]
    elif r.mode == "batch":
        argv += ["--prompts-file", str(r.prompts_file), "--jsonl"]
    else:
        argv += ["-p", str(r.prompt)]
    return argv


def next_time_command(r: WizardResult) -> str:
    """How to run a saved profile again, in the mode that was chosen."""
    tail = {"chat": ["-i"], "batch": ["--prompts-file", r.prompts_file or "FILE", "--jsonl"]}.get(r.mode, ["-p", "..."])
    return " ".join(_shell_quote(a) for a in ["llmbuilder", "generate", "text", "--profile", str(r.profile), *tail])


def _parse(key: str, text: str) -> Any:
    """An answer → the typed value for ``key`` (stop strings in the wizard's one-line spelling)."""
    return st.check_value("stop", stop_from_text(text)) if key == "stop" else st.parse_value(key, text)


def _check(key: str, values: dict[str, Any]) -> Validator:
    """A validator for one generation field: parsed and checked with the others chosen so far. When
    sampling was chosen, a value that would make GenerationConfig decode greedily is refused too."""

    def validate(text: str) -> str | None:
        try:
            value = _parse(key, text)
            cfg = GenerationConfig(**{**{k: v for k, v in values.items() if k in GenerationConfig.field_names()},
                                      key: value})
        except LLMBuilderError as exc:
            return exc.message
        if values.get("do_sample") and cfg.greedy:
            return (f"{key} {_fmt(value, key)} means greedy decoding; for sampling use a number from "
                    f"{MIN_TEMPERATURE:g} to {MAX_SCALE:g}")
        return None

    return validate


def _ask_field(ask: Asker, key: str, values: dict[str, Any], label: str, *, empty_means: str = "") -> None:
    """Explain ``key``, ask for it with its current value as default, store the checked answer."""
    ask.say(FIELD_GUIDE[key], style="dim")
    current = values.get(key)
    default = "" if current is None and empty_means else _fmt(current, key)
    validate = _check(key, values)
    if empty_means:
        base = validate

        def validate(text: str) -> str | None:  # an empty answer means "off"/"random"
            return None if not text.strip() else base(text)

    answer = ask.text(f"{label}{f' (empty = {empty_means})' if empty_means else ''}:", default=default,
                      validate=validate)
    if empty_means and not answer.strip():
        values[key] = () if key == "stop" else None
    else:
        values[key] = _parse(key, answer)


def _own_tokenizer(info: dict[str, Any]) -> dict[str, Any] | None:
    """The tokenizer a model carries itself (inside a GGUF file, a Hugging Face directory's tokenizer.json),
    or None when it needs one from elsewhere (llmbuilder's tokenizer/ beside the model, or none found)."""
    tok = info.get("tokenizer") or {}
    if not tok.get("found") or not info.get("path"):
        return None
    model, path = Path(info["path"]), Path(tok["path"])
    if path == model or model in path.parents:
        return tok
    if model.is_dir():  # a Hugging Face cache snapshot: its files are links to the cache's blobs
        try:
            for file in model.iterdir():
                if file.is_symlink() and Path(os.path.realpath(file)) == path:
                    return {**tok, "path": str(file)}
        except OSError:
            pass
    return None


def run_wizard(
    ask: Asker,
    *,
    start: dict[str, Any],
    describe: Callable[[str, str | None], dict[str, Any]],
    profiles: Sequence[str] = (),
    current_profile: str | None = None,
) -> WizardResult:
    """Ask everything a generation needs, starting from ``start`` (the effective settings).

    ``describe(model, tokenizer)`` reads a model (as ``llmbuilder info`` does) and raises a domain error
    when it cannot be read; a model it describes but says does not run (``runs``) is refused with ``why``;
    its answer is shown so the person sees what they picked. Keys of ``start``
    the wizard does not ask about are kept in the result unchanged.
    """
    values: dict[str, Any] = {k: v for k, v in start.items() if v is not None}
    asked: set[str] = set()
    ask.say("llmbuilder setup: each answer is checked as you go; Ctrl-C at any question quits without saving.",
            style="bold")

    # -- model -----------------------------------------------------------------------------------
    seen: dict[tuple[str, str | None], dict[str, Any]] = {}

    def read_model(model: str, tokenizer: str | None) -> str | None:
        """The problem with this model (and tokenizer), or None. Without a tokenizer given, a refusal that
        another tokenizer may fix is left to the tokenizer question."""
        key = (model.strip(), tokenizer)
        if key not in seen:
            try:
                seen[key] = describe(model.strip(), tokenizer)
            except LLMBuilderError as exc:
                return exc.one_line()
        info = seen[key]
        if info.get("runs") is False and (tokenizer is not None or info.get("refused_by") != "tokenizer"):
            return info.get("why")
        return None

    ask.say(f"The model: {MODEL_FORMATS}. 'demo' is the built-in demo model.", style="dim")
    from .completion import local_model_names

    named = [n for n, _ in local_model_names()]
    if named:  # models downloaded with 'llmbuilder pull' (or transformers) run by name
        shown = ", ".join(named[:8]) + (f" and {len(named) - 8} more" if len(named) > 8 else "")
        ask.say(f"Downloaded models (by name): {shown}.", style="dim")
    model = ask.path("Model:", default=str(values.get("model") or "demo"), busy="Reading the model…",
                     validate=lambda text: "enter a path, or 'demo'" if not text.strip() else read_model(text, None))
    model = model.strip()
    info = seen[(model, None)]
    ask.say(_describe_line(info))
    # The demo and models by name are kept as names (a cache path changes with each download), files as paths.
    values["model"] = info["name"] if info.get("name") else info.get("path", model)
    asked |= {"model", "tokenizer"}

    # -- tokenizer -------------------------------------------------------------------------------
    own = _own_tokenizer(info)
    if values["model"] == "demo":
        values.pop("tokenizer", None)  # the demo model has its own
    elif own is not None:
        values.pop("tokenizer", None)  # a GGUF file or a Hugging Face directory brings its own
        where = "inside the file" if Path(own["path"]) == Path(info["path"]) else Path(own["path"]).name
        ask.say(f"  tokenizer: the model's own ({where}): {own.get('kind', '?')}, {own.get('vocab_size', '?')} tokens")
    else:
        found = info.get("tokenizer", {})
        beside = found.get("path") if found.get("found") else ""
        ask.say("The tokenizer turns text into the model's token ids; it must be the one the model was "
                "trained with. Its vocabulary is checked against the model.", style="dim")

        def check_tok(text: str) -> str | None:
            if not text.strip():
                return "enter the tokenizer directory (with tokenizer.model or tokenizer.json)"
            problem = read_model(model, text.strip())
            if problem:
                return problem
            note = seen[(model, text.strip())].get("tokenizer", {}).get("note", "")
            return note if "not this model's tokenizer" in note else None

        start_tok = values.get("tokenizer") or (str(Path(beside).parent) if beside else "")
        tok = ask.path("Tokenizer:", default=str(start_tok), validate=check_tok,
                       busy="Reading the tokenizer…").strip()
        tinfo = seen[(model, tok)].get("tokenizer", {})
        ask.say(f"  tokenizer: {tinfo.get('kind', '?')}, {tinfo.get('vocab_size', '?')} tokens")
        values["tokenizer"] = str(user_path(tok).resolve())

    # -- mode ------------------------------------------------------------------------------------
    mode = ask.select("What do you want to do?", [(label, key) for key, label in MODES.items()], default="prompt")
    result = WizardResult(mode=mode, values=values, asked=asked)
    if mode == "prompt":
        result.prompt = ask.text("Prompt (the text the model continues):", default="Once upon a time",
                                 validate=lambda t: None if t.strip() else "the prompt cannot be empty")
    elif mode == "batch":
        def check_file(text: str) -> str | None:
            p = user_path(text.strip())
            return None if p.is_file() else f"no such file: {p}"

        ask.say("A prompts file has one prompt per line, or JSON lines with \"prompt\" and optional "
                "per-prompt settings.", style="dim")
        result.prompts_file = str(user_path(ask.path("Prompts file:", validate=check_file).strip()).resolve())
    else:
        system = ask.text("System text that opens the chat (empty = none):", default=str(values.get("system") or ""))
        values["system"] = system.strip() or None
        asked.add("system")

    # -- strategy --------------------------------------------------------------------------------
    ask.say(FIELD_GUIDE["do_sample"], style="dim")
    greedy_now = GenerationConfig(**{k: v for k, v in values.items() if k in GenerationConfig.field_names()}).greedy
    strategy = ask.select("Decoding:", [("Sampling: varied, natural text", "sample"),
                                        ("Greedy: always the most likely token (deterministic)", "greedy")],
                          default="greedy" if greedy_now else "sample")
    asked |= {"do_sample", "temperature", "top_k", "top_p", "seed"}
    if strategy == "greedy":
        values["do_sample"] = False
        for k in ("temperature", "top_k", "top_p", "seed"):
            values.pop(k, None)
    else:
        values["do_sample"] = True
        choices = [(f"{name} (temperature {t:g})", name) for name, t in TEMPERATURE_PRESETS.items()]
        current_t = values.get("temperature", GenerationConfig.temperature)
        preset_now = next((n for n, t in TEMPERATURE_PRESETS.items() if t == current_t), "custom")
        preset = ask.select("Style:", [*choices, ("custom: choose the temperature", "custom")], default=preset_now)
        if preset == "custom":
            if values.get("temperature") == 0.0:
                values.pop("temperature")
            balanced = TEMPERATURE_PRESETS["balanced"]
            _ask_field(ask, "temperature", values,
                       f"Temperature ({MIN_TEMPERATURE:g} to {MAX_SCALE:g}; {balanced:g} balanced)")
        else:
            values["temperature"] = TEMPERATURE_PRESETS[preset]
        values.setdefault("top_k", GenerationConfig.top_k)
        values.setdefault("top_p", GenerationConfig.top_p)
        _ask_field(ask, "top_k", values, "Top-k (whole number, 0 = off)")
        _ask_field(ask, "top_p", values, "Top-p (in (0, 1], 1 = off)")

    # -- length, repetition, seed, stop ----------------------------------------------------------
    values.setdefault("max_new_tokens", GenerationConfig.max_new_tokens)
    values.setdefault("min_new_tokens", GenerationConfig.min_new_tokens)
    values.setdefault("repetition_penalty", GenerationConfig.repetition_penalty)
    _ask_field(ask, "max_new_tokens", values, "Maximum new tokens (>= 1)")
    _ask_field(ask, "min_new_tokens", values, "Minimum new tokens (0 = may stop any time)")
    _ask_field(ask, "repetition_penalty", values, "Repetition penalty (> 0, 1.0 = off)")
    if values["do_sample"]:
        _ask_field(ask, "seed", values, "Seed", empty_means="a new random seed each run")
    _ask_field(ask, "stop", values, "Stop strings", empty_means="none")
    asked |= {"max_new_tokens", "min_new_tokens", "repetition_penalty", "stop"}
    if values.get("top_k") is None and "top_k" in values and values["do_sample"]:
        values["top_k"] = 0  # "off", in the form a settings file can hold

    # -- summary and action ----------------------------------------------------------------------
    result.argv = equivalent_argv(result)
    rows = [("mode", MODES[mode].split(":")[0])]
    rows += [(k, _fmt(v, k)) for k, v in values.items() if v not in (None, "", ())]
    if result.prompt is not None:
        rows.append(("prompt", result.prompt))
    if result.prompts_file:
        rows.append(("prompts file", result.prompts_file))
    ask.summary(rows, result.command)
    result.action = ask.select("Now:", [(label, key) for key, label in ACTIONS.items()], default="run")
    if result.action in ("save", "both"):
        def check_name(text: str) -> str | None:
            return st.valid_profile_name(text.strip())

        while True:
            name = ask.text("Profile name:", default=current_profile or "default", validate=check_name).strip()
            if name == current_profile or name not in profiles:
                break  # a new profile, or the one being edited: settings not asked about are kept
            if ask.confirm(f"Profile {name!r} exists. Replace it?", default=False):
                break
        result.profile = name
        result.make_default = ask.confirm("Use it by default (when no --profile is given)?",
                                          default=current_profile in (None, name))
    return result


def _describe_line(info: dict[str, Any]) -> str:
    params = info.get("parameters")
    size = f"{params / 1e6:.2f}M parameters" if isinstance(params, (int, float)) else "? parameters"
    name = "built-in demo model" if info.get("name") == "demo" else info.get("architecture", "model")
    return (f"  {name}: {size}, {info.get('layers', '?')} layers, {info.get('heads', '?')} heads, "
            f"vocabulary {info.get('vocab_size', '?')}, context {info.get('context_length', '?')} tokens")
