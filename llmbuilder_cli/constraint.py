"""Constrained output: what the generated text must match, described and checked before any model loads.

A `Constraint` is one of five kinds, each compiled to a grammar for the ``llguidance`` library (a Rust
engine that turns a grammar and a tokenizer into per-token masks; ``engine/constrain.py`` applies them):

  * ``json_schema``: a JSON Schema (an object, or its JSON text); the output is one JSON value valid
    against it, written compactly (no free whitespace, so the model cannot pad forever).
  * ``json``: any JSON value (the schema ``{}``), written the same way.
  * ``regex``: the whole output matches the pattern (Rust ``regex`` syntax, anchored at both ends).
  * ``choice``: the output is exactly one of the given strings.
  * ``grammar``: a Lark grammar (``start:`` rule) or a GBNF grammar (``root ::=`` rule, llama.cpp's format).

Constructing one validates it (a schema the library cannot compile, a regex that does not parse, a grammar
with an unknown rule…) and raises a one-line `ConfigError` (exit 2) that says what and where: the CLI
builds its constraint from the flags before the model loads, so a typo costs no load time.
`from_options` is the CLI's view (``--json-schema``, ``--format json``, ``--regex``, ``--choice``,
``--grammar``: a file path or inline text); `from_line` is a prompts-file line's (``json_schema``,
``format``, ``regex``, ``choice``, ``grammar`` keys); `from_command` is the chat's ``/format``.
``to_dict`` is what ``--json`` records.

This module imports only the standard library; ``llguidance`` is imported when a constraint is built.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from .errors import ConfigError, UsageError

__all__ = ["Constraint", "KINDS", "LINE_KEYS", "COMMAND_WORDS", "from_options", "from_line", "from_command",
           "require_llguidance"]

#: The kinds of constraint, in the order the CLI documents them.
KINDS: tuple[str, ...] = ("json_schema", "json", "regex", "choice", "grammar")

#: Keys of a prompts-file line that set that line's constraint (one at most).
LINE_KEYS: tuple[str, ...] = ("json_schema", "format", "regex", "choice", "grammar")

#: How JSON is written under a constraint: compact, no free whitespace (bounded output, one canonical form).
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False}

_INSTALL_HINT = "install it with: pip install llguidance (a dependency of llmbuilder-cli: reinstalling it also works)"


def require_llguidance() -> Any:
    """The ``llguidance`` module, or a one-line `UsageError` saying how to install it."""
    try:
        import llguidance
    except ImportError:
        raise UsageError("constrained output needs the llguidance package, which is not installed",
                         hint=_INSTALL_HINT) from None
    return llguidance


_SOURCE_ECHO = re.compile(r"^\s*(\d+ \|.*|\^+)\s*$")  # llguidance's quoted source line and its caret


def _one_line(message: str, limit: int = 300) -> str:
    lines = [p.strip() for p in str(message).splitlines() if p.strip() and not _SOURCE_ECHO.match(p)]
    text = " ".join(lines)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Constraint:
    """What the output must match. ``value``: the schema (a JSON-ready object) for ``json_schema``, None
    for ``json``, the pattern for ``regex``, the strings (a tuple) for ``choice``, the grammar text for
    ``grammar``. ``source``: the file it was read from, if any (shown in errors and recorded)."""

    kind: str
    value: Any = None
    source: str | None = None
    grammar: str = field(default="", init=False, repr=False, compare=False)  # llguidance's grammar text

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown constraint kind {self.kind!r}", hint=f"use one of {', '.join(KINDS)}",
                              field="constraint")
        value = self.value
        if self.kind == "choice":
            if isinstance(value, str) or not isinstance(value, Sequence) or not value:
                raise self._bad("needs a non-empty list of strings", "give each choice as its own string")
            value = tuple(value)
            if not all(isinstance(v, str) and v for v in value):
                raise self._bad("needs non-empty strings", "give each choice as non-empty text")
        elif self.kind == "json_schema":
            if isinstance(value, str):
                value = _parse_schema_text(value, self.source)
            if not isinstance(value, (dict, bool)):
                raise self._bad("must be a JSON object", 'write a schema such as {"type": "object"}')
        elif self.kind == "json":
            value = None
        elif not isinstance(value, str) or value == "":
            raise self._bad("needs non-empty text", "give the pattern or grammar")
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "grammar", self._compile())

    def _what(self) -> str:
        name = {"json_schema": "JSON schema", "json": "JSON format", "regex": "regex", "choice": "choice list",
                "grammar": "grammar"}[self.kind]
        return f"the {name}" + (f" {self.source}" if self.source else "")

    def _bad(self, what: str, hint: str) -> ConfigError:
        return ConfigError(f"{self._what()} {what}", hint=hint, field="constraint")

    def _compile(self) -> str:
        llg = require_llguidance()
        matcher = llg.LLMatcher
        try:
            if self.kind in ("json_schema", "json"):
                schema = {} if self.kind == "json" else self.value
                grammar = matcher.grammar_from_json_schema(json.dumps(schema), overrides=JSON_OPTIONS)
            elif self.kind == "regex":
                grammar = matcher.grammar_from_regex(self.value)
            elif self.kind == "choice":
                grammar = matcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in self.value))
            else:
                grammar = llg.grammar_from("grammar", self.value)  # Lark as it is; GBNF is converted to Lark
        except (ValueError, TypeError, RecursionError) as exc:
            raise self._bad(f"cannot be used: {_one_line(exc)}", self._fix_hint()) from None
        error = matcher.validate_grammar(grammar)
        if error:
            raise self._bad(f"cannot be used: {_one_line(error)}", self._fix_hint())
        return grammar

    def _fix_hint(self) -> str:
        return {
            "json_schema": "fix the schema (JSON Schema: type, properties, items, enum, pattern…)",
            "json": "report this: the JSON format should always compile",
            "regex": "fix the pattern (Rust regex syntax: no look-around or back-references)",
            "choice": "give plain strings",
            "grammar": "fix the grammar (Lark with a start rule, or GBNF with a root rule)",
        }[self.kind]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, as ``--json`` records it."""
        d: dict[str, Any] = {"type": self.kind}
        if self.kind == "json_schema":
            d["schema"] = self.value
        elif self.kind == "regex":
            d["pattern"] = self.value
        elif self.kind == "choice":
            d["choices"] = list(self.value)
        elif self.kind == "grammar":
            d["grammar"] = self.value
        if self.source:
            d["file"] = self.source
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "Constraint":
        """The constraint `to_dict` described (a saved chat's ``/format``); the text is compiled again, so
        a changed or damaged record fails here with the constraint's own one-line error."""
        keys = {"json_schema": "schema", "json": None, "regex": "pattern", "choice": "choices", "grammar": "grammar"}
        if not isinstance(d, dict) or d.get("type") not in keys:
            raise ConfigError("the saved output constraint is not one this version knows",
                              hint=f"its \"type\" must be one of {', '.join(KINDS)}", field="constraint")
        source = d.get("file")
        if source is not None and not isinstance(source, str):
            raise ConfigError("the saved output constraint's \"file\" must be text", hint="re-save the chat",
                              field="constraint")
        key = keys[d["type"]]
        return cls(d["type"], None if key is None else d.get(key), source=source)

    def describe(self) -> str:
        """A short human description (the chat's ``/format`` status)."""
        if self.kind == "json_schema":
            return "JSON matching " + (f"the schema {self.source}" if self.source else "the given schema")
        if self.kind == "json":
            return "any JSON value"
        if self.kind == "regex":
            return f"text matching /{self.value}/"
        if self.kind == "choice":
            return "one of " + ", ".join(json.dumps(c, ensure_ascii=False) for c in self.value)
        return "text in the grammar" + (f" {self.source}" if self.source else "")


def _parse_schema_text(text: str, source: str | None) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        where = f" {source}" if source else ""
        detail = f"{exc.msg} at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) \
            else _one_line(exc)
        raise ConfigError(f"the JSON schema{where} is not valid JSON ({detail})",
                          hint="fix the JSON, or pass a file that holds it", field="constraint") from None


def _read_text(path: str, what: str) -> str:
    from .files import read_bounded

    data = read_bounded(path, what, f"check the {what} path")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"the {what} {path} is not valid UTF-8 (byte {exc.start})", hint="save it as UTF-8") from None


def _schema_arg(text: str) -> Constraint:
    """``--json-schema``: inline JSON (it starts with ``{``) or a file that holds the schema."""
    if text.lstrip().startswith("{"):
        return Constraint("json_schema", text)
    return Constraint("json_schema", _read_text(text, "schema file"), source=text)


def from_options(
    *,
    json_schema: str | None = None,
    format: str | None = None,
    regex: str | None = None,
    choice: Sequence[str] | None = None,
    grammar: str | None = None,
) -> Constraint | None:
    """The constraint the CLI flags ask for (at most one of them), or None."""
    given = [name for name, v in (("--json-schema", json_schema), ("--format", format), ("--regex", regex),
                                  ("--choice", choice or None), ("--grammar", grammar)) if v is not None]
    if len(given) > 1:
        raise UsageError(f"{given[0]} and {given[1]} cannot be combined", hint="give one output constraint")
    if json_schema is not None:
        return _schema_arg(json_schema)
    if format is not None:
        if format.strip().lower() != "json":
            raise UsageError(f"unknown --format {format!r}",
                             hint="the only output format is json (any JSON value); --json-schema FILE for a schema")
        return Constraint("json")
    if regex is not None:
        return Constraint("regex", regex)
    if choice:
        return Constraint("choice", tuple(choice))
    if grammar is not None:
        return Constraint("grammar", _read_text(grammar, "grammar file"), source=grammar)
    return None


def from_line(obj: dict[str, Any]) -> Constraint | None:
    """The constraint a prompts-file line sets with one of `LINE_KEYS`, or None. ``json_schema`` is an
    object (or its JSON text), ``format`` is ``"json"``, ``regex`` a pattern, ``choice`` a list of strings,
    ``grammar`` a grammar file's path."""
    given = [k for k in LINE_KEYS if k in obj]
    if len(given) > 1:
        raise UsageError(f'"{given[0]}" and "{given[1]}" cannot be combined', hint="give one output constraint")
    if not given:
        return None
    key, value = given[0], obj[given[0]]
    if key == "json_schema":
        return Constraint("json_schema", value)
    if key == "format":
        if value != "json":
            raise UsageError(f'unknown "format" {value!r}', hint='the only output format is "json"')
        return Constraint("json")
    if key == "regex":
        return Constraint("regex", value)
    if key == "choice":
        if isinstance(value, str):
            raise UsageError('"choice" must be a list of strings', hint='write "choice": ["yes", "no"]')
        return Constraint("choice", value)
    if not isinstance(value, str):
        raise UsageError('"grammar" must be the path of a grammar file', hint='write "grammar": "FILE.lark"')
    return Constraint("grammar", _read_text(value, "grammar file"), source=value)


#: The first words ``/format`` takes.
COMMAND_WORDS: tuple[str, ...] = ("json", "schema", "regex", "choice", "grammar", "off")

COMMAND_USAGE = ("/format json | schema FILE-or-{...} | regex PATTERN | choice A|B|C | grammar FILE | off")


def from_command(arg: str) -> Constraint | None:
    """The chat's ``/format ARG``: the new constraint, or None for ``off``. Choices are separated by ``|``."""
    word, _, rest = arg.strip().partition(" ")
    word, rest = word.lower(), rest.strip()
    if word == "off" and not rest:
        return None
    if word == "json" and not rest:
        return Constraint("json")
    if word in ("schema", "regex", "grammar", "choice") and rest:
        if word == "schema":
            return _schema_arg(rest)
        if word == "regex":
            return Constraint("regex", rest)
        if word == "grammar":
            return Constraint("grammar", _read_text(rest, "grammar file"), source=rest)
        return Constraint("choice", tuple(c.strip() for c in rest.split("|") if c.strip()))
    raise UsageError(f"/format does not understand {arg.strip()!r}", hint=f"use {COMMAND_USAGE}")
