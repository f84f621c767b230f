"""Prompt files for batch runs (``--prompts-file FILE --jsonl``): parsed and validated before any work.

One prompt per line. A line that starts with ``{`` is a JSON object: ``"prompt"`` (required), an optional
``"id"`` (any JSON value, echoed in the output) and any `GenerationConfig` field as a per-prompt override,
e.g. ``{"id": "q1", "prompt": "Once upon a time", "temperature": 0.2, "max_new_tokens": 40}``, and at most
one output constraint for that line (``constraint.LINE_KEYS``): ``"json_schema": {...}``, ``"format": "json"``,
``"regex": "..."``, ``"choice": ["yes", "no"]`` or ``"grammar": "FILE"``; it replaces the run's own.
Other lines are prompts as written; ``\\n`` and ``\\\\`` escapes are not interpreted (use JSON for
multi-line prompts). Blank lines are skipped. Every line is checked first, so a typo on line 900 fails
the run before line 1 is generated: valid JSON (numbers Python can hold, nesting it can parse), a
non-empty prompt, known keys, values `GenerationConfig` accepts, and text (``id`` and ``stop`` included)
that can be written back as UTF-8 JSON. What only the model can tell (a prompt that is empty after
tokenization) is reported per line while the batch runs (see ``cli/machine.py``). The file is read with
a size limit (`files.MAX_INPUT_BYTES`), so ``/dev/zero`` is an error, not a full memory. Standard
library only.

Batch size (``--batch-size``, ``generate_batch(batch_size=...)``): how many prompts decode together
(``engine/batching.py``). ``auto`` (the default) runs up to `AUTO_MAX_BATCH` at once and admits a prompt
only while the key/value caches of the running ones take at most `AUTO_CACHE_MEMORY_FRACTION` of the
memory available when the batch starts; a number N runs up to N at once (1 = one after another).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from .config import GenerationConfig
from .constraint import LINE_KEYS, from_line
from .errors import ConfigError, UsageError
from .files import read_bounded

__all__ = [
    "AUTO_CACHE_MEMORY_FRACTION",
    "AUTO_MAX_BATCH",
    "BatchSize",
    "DEFAULT_BATCH_SIZE",
    "PromptSpec",
    "parse_batch_size",
    "parse_prompts",
    "read_prompts_file",
]

BatchSize = Union[int, Literal["auto"]]
DEFAULT_BATCH_SIZE: BatchSize = "auto"
AUTO_MAX_BATCH = 16  # beyond this a CPU step gains little from more rows (see benchmarks/bench_batch.py)
AUTO_CACHE_MEMORY_FRACTION = 0.25  # of the memory available at the start, for the running key/value caches
MAX_BATCH_SIZE = 4096


def parse_batch_size(value: object) -> BatchSize:
    """``"auto"`` or a whole number 1..`MAX_BATCH_SIZE` (an int, or its digits as text)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        value = int(text) if text.isdigit() else text
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BATCH_SIZE:
        raise UsageError(f"batch size must be 'auto' or a whole number from 1 to {MAX_BATCH_SIZE} (got {value!r})",
                         hint="use --batch-size auto, or 1 to run the prompts one after another")
    return value

_META_KEYS = ("prompt", "id")


@dataclass(frozen=True)
class PromptSpec:
    line: int  # 1-based line number in the file
    prompt: str
    config: GenerationConfig  # the run's config with this line's overrides applied
    id: Any = None
    overrides: dict[str, Any] = field(default_factory=dict)


def _bad(line: int, what: str, hint: str) -> UsageError:
    return UsageError(f"prompts file line {line}: {what}", hint=hint)


def _parse_object(n: int, raw: str, base: GenerationConfig) -> PromptSpec:
    fix = "fix the JSON, or write a plain-text prompt that does not start with '{'"
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _bad(n, f"invalid JSON ({exc.msg} at column {exc.colno})", fix) from None
    except ValueError as exc:  # e.g. an integer longer than Python converts (4300 digits)
        raise _bad(n, f"invalid JSON ({str(exc).split(';')[0]})", fix) from None
    except RecursionError:
        raise _bad(n, "invalid JSON (nested too deeply)", fix) from None
    if not isinstance(obj, dict):
        raise _bad(n, "a JSON line must be an object", 'write {"prompt": "..."}')
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or prompt == "":
        raise _bad(n, 'needs a non-empty string "prompt"', 'write {"prompt": "..."}')
    fields = GenerationConfig.field_names()
    unknown = [k for k in obj if k not in fields and k not in _META_KEYS and k not in LINE_KEYS]
    if unknown:
        from difflib import get_close_matches

        close = get_close_matches(unknown[0], (*fields, *_META_KEYS, *LINE_KEYS), n=1)
        raise _bad(n, f"unknown key {unknown[0]!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                   f"keys are prompt, id, the settings {', '.join(fields)} and one of {', '.join(LINE_KEYS)}")
    try:  # what the output line will carry must be writable as UTF-8 JSON
        json.dumps(obj.get("id"), allow_nan=False)
    except ValueError:
        raise _bad(n, "the id holds NaN or an infinite number, which JSON cannot write back",
                   "use a string or an ordinary number as the id") from None
    bad_text = _unencodable(obj)
    if bad_text is not None:
        raise _bad(n, f"{bad_text} holds a lone surrogate escape (\\ud800-\\udfff), which is not valid UTF-8 text",
                   "write whole characters (a surrogate pair, or the character itself)")
    overrides = {k: v for k, v in obj.items() if k in fields}
    if "stop" in overrides:
        if not isinstance(overrides["stop"], (str, list)):
            raise _bad(n, '"stop" must be a string or a list of strings', 'write "stop": ["."]')
        if isinstance(overrides["stop"], list):
            overrides["stop"] = tuple(overrides["stop"])
    try:
        constraint = from_line(obj)
        if constraint is not None:
            overrides["constraint"] = constraint
        config = base.replace(**overrides) if overrides else base
    except (ConfigError, UsageError) as exc:
        raise _bad(n, exc.message, exc.hint or "fix the value on that line") from None
    except (TypeError, ValueError, OverflowError) as exc:  # a value of a type no check expected
        raise _bad(n, f"a setting has a value of the wrong type ({exc})", "fix the value on that line") from None
    return PromptSpec(line=n, prompt=prompt, config=config, id=obj.get("id"), overrides=overrides)


def _unencodable(value: Any, where: str = "") -> str | None:
    """The first key or value (``"id"``, ``"stop"``…) holding text that UTF-8 cannot encode, else None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "the line"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            found = _unencodable(k, "a key") or _unencodable(v, where or f'"{k}"')
            if found:
                return found
    elif isinstance(value, list):
        for v in value:
            found = _unencodable(v, where)
            if found:
                return found
    return None


def parse_prompts(text: str, base: GenerationConfig) -> list[PromptSpec]:
    """Every prompt in ``text`` (the file's content), validated against ``base``."""
    specs: list[PromptSpec] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            specs.append(_parse_object(n, line, base))
        else:
            specs.append(PromptSpec(line=n, prompt=line, config=base))
    if not specs:
        raise UsageError("the prompts file has no prompts", hint="write one prompt per line")
    return specs


def read_prompts_file(path: str, base: GenerationConfig, stdin_text: str | None = None) -> list[PromptSpec]:
    """Read ``path`` (``-`` = the given standard-input text) as UTF-8 and parse it."""
    if path == "-":
        return parse_prompts(stdin_text or "", base)
    data = read_bounded(path, "prompts file", "check the --prompts-file path")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"prompts file {str(path)[:200]} is not valid UTF-8 (byte {exc.start})",
                         hint="save it as UTF-8") from None
    return parse_prompts(text, base)
