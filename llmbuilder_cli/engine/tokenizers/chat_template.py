"""Chat templates: the Jinja text an instruct model ships to lay out a conversation, rendered safely.

A Hugging Face ``tokenizer_config.json`` (``chat_template``), a ``chat_template.jinja`` file or a GGUF's
``tokenizer.chat_template`` holds a Jinja template over ``messages`` (``[{"role": "system"|"user"|
"assistant", "content": str}]``), ``add_generation_prompt`` and the special tokens (``bos_token``,
``eos_token``). Rendering it with ``add_generation_prompt=True`` gives the text the model continues with
its reply; the reply ends at the model's end-of-turn token (one of its EOS ids).

Templates come from downloaded files, so they run in Jinja's immutable sandbox: no attribute access to
Python internals, no changing of objects passed in. The environment follows the conventions templates are
written for: ``trim_blocks``/``lstrip_blocks``, the loop-control extension, ``raise_exception(msg)``,
``strftime_now(fmt)`` and a ``tojson`` that keeps non-ASCII text as is.

A template is also a program that could run forever or ask for gigabytes, so one render is bounded
(`_Limits`), in this process, before anything large is allocated:

* text: no string or list a template builds (``*``, ``+``, ``~``, ``%``, a filter or a method), nor
  the rendered conversation, may exceed `MAX_OUTPUT` characters; a number that would make one larger
  (``center(4000000000)``, ``'%4000000000d'``) or an integer power over `MAX_POWER_BITS` is refused
  before it is computed;
* work: `MAX_STEPS` steps (an iteration over ``range`` or the messages, a call, an operator, an assignment
  into a ``namespace``), and `MAX_SECONDS` of wall-clock time as a last resort;
* recursion ends at Python's recursion limit. ``lipsum`` is not available.

Crossing a bound is a `GenerationError` naming it.
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime
from functools import lru_cache, wraps
from typing import Any, Callable, Iterator, Mapping, Sequence

from ...errors import ConfigError, GenerationError

__all__ = ["ChatTemplate", "Message", "MAX_OUTPUT", "MAX_STEPS", "MAX_SECONDS"]

Message = Mapping[str, str]  # {"role": ..., "content": ...}

#: Longest text (or list) one render may build or produce, in characters (items).
MAX_OUTPUT = 4_000_000
#: Steps one render may take: iterations over range() and the messages, calls, operators.
MAX_STEPS = 1_000_000
#: Wall-clock time one render may take, in seconds (a last resort behind MAX_STEPS).
MAX_SECONDS = 10.0
#: Largest integer a ** may produce, in bits.
MAX_POWER_BITS = 4096
_NUMBER = re.compile(r"\d+")


class _TemplateRaised(Exception):
    pass


class _LimitExceeded(Exception):
    """A render crossed one of the bounds above (turned into a GenerationError)."""


class _Limits:
    """The budget of the render in progress (renders do not nest; one template runs at a time)."""

    steps = 0
    deadline = math.inf

    @classmethod
    def start(cls) -> None:
        cls.steps, cls.deadline = 0, time.monotonic() + MAX_SECONDS

    @classmethod
    def step(cls, n: int = 1) -> None:
        cls.steps += n
        if cls.steps > MAX_STEPS:
            raise _LimitExceeded(f"it took more than {MAX_STEPS:,} steps")
        if cls.steps % 1024 == 0 and time.monotonic() > cls.deadline:
            raise _LimitExceeded(f"it ran for more than {MAX_SECONDS:g} seconds")


def _check_size(value: Any) -> Any:
    if isinstance(value, (str, list, tuple, dict)) and len(value) > MAX_OUTPUT:
        raise _LimitExceeded(f"it built a text or list longer than {MAX_OUTPUT:,}")
    return value


def _check_numbers(*values: Any) -> None:
    """Refuse an integer argument, or a number inside a format string, larger than MAX_OUTPUT: a width
    or count that big can only build a text beyond the limit."""
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_OUTPUT:
            raise _LimitExceeded(f"it asked for a size of {v:,}")
        if isinstance(v, str) and ("%" in v or "{" in v):
            for m in _NUMBER.finditer(v):
                if len(m.group()) > 7 and int(m.group()) > MAX_OUTPUT:
                    raise _LimitExceeded(f"it formats to a width of {m.group()}")


class _Range:
    """``range`` for templates: each item taken is a step, and no range is longer than MAX_OUTPUT."""

    def __init__(self, *args: int) -> None:
        self._r = range(*args)
        if len(self._r) > MAX_OUTPUT:
            raise _LimitExceeded(f"it asked for a range of {len(self._r):,} numbers")

    def __iter__(self) -> Iterator[int]:
        for i in self._r:
            _Limits.step()
            yield i

    def __len__(self) -> int:
        return len(self._r)

    def __getitem__(self, i: Any) -> Any:
        return self._r[i]

    def __contains__(self, x: object) -> bool:
        return x in self._r

    def __reversed__(self) -> Iterator[int]:
        for i in reversed(self._r):
            _Limits.step()
            yield i


class _Messages(list):
    """The messages, counting each item a loop takes as a step (nested loops over them stay bounded)."""

    def __iter__(self) -> Iterator[Any]:
        for m in super().__iter__():
            _Limits.step()
            yield m


def _guarded(f: Callable[..., Any], name: str) -> Callable[..., Any]:
    """A filter that refuses sizes beyond the limits before it runs, and results beyond them after."""

    @wraps(f)
    def run(*args: Any, **kwargs: Any) -> Any:
        _Limits.step()
        skip = 2 if getattr(f, "jinja_pass_arg", None) is not None else 1  # the context, then the value
        _check_numbers(*args[skip:], *kwargs.values())
        if name == "format" and len(args) >= skip:
            _check_numbers(args[skip - 1])
        if name == "replace" and len(args) >= skip + 2:
            value, old, new = args[skip - 1], args[skip], args[skip + 1]
            if isinstance(value, str) and isinstance(new, str) and len(new) > len(str(old)):
                _check_size_estimate(len(value) * max(1, len(new)) // max(1, len(str(old))))
        return _check_size(f(*args, **kwargs))

    return run


def _check_size_estimate(n: int) -> None:
    if n > MAX_OUTPUT:
        raise _LimitExceeded(f"it would build a text of about {n:,} characters")


def _sized(x: Any) -> int | None:
    return len(x) if isinstance(x, (str, list, tuple)) else None


def _raise(message: str) -> None:
    raise _TemplateRaised(message)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


@lru_cache(maxsize=1)
def _environment_class() -> type:
    """Jinja's immutable sandbox with the bounds of this module built in."""
    from jinja2.compiler import CodeGenerator
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.utils import Namespace

    class BoundedCodeGenerator(CodeGenerator):
        def visit_Concat(self, node: Any, frame: Any) -> None:  # ``a ~ b``: through bounded_concat
            self.write("environment.bounded_concat((")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write("))")

    class BoundedNamespace(Namespace):
        def __setitem__(self, name: str, value: Any) -> None:
            _Limits.step()
            super().__setitem__(name, _check_size(value))

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        code_generator_class = BoundedCodeGenerator
        intercepted_binops = frozenset({"*", "**", "%", "+"})

        def bounded_concat(self, parts: tuple) -> str:
            _Limits.step()
            texts = [str(p) for p in parts]
            _check_size_estimate(sum(map(len, texts)))
            return "".join(texts)

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _Limits.step()
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if _sized(seq) is not None and isinstance(n, int):
                        _check_size_estimate(_sized(seq) * n)
            elif operator == "+" and _sized(left) is not None and _sized(right) is not None:
                _check_size_estimate(_sized(left) + _sized(right))
            elif operator == "%" and isinstance(left, str):
                _check_numbers(left, *(right if isinstance(right, tuple) else (right,)))
            elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
                if abs(left) > 1 and right * math.log2(abs(left)) > MAX_POWER_BITS:
                    raise _LimitExceeded(f"it computes a power of more than {MAX_POWER_BITS} bits")
            return _check_size(super().call_binop(context, operator, left, right))

        def getattr(self, obj: Any, attribute: str) -> Any:
            if isinstance(obj, str) and attribute in ("format", "format_map"):
                _check_numbers(obj)  # '{:>4000000000}'.format(1): the width is in the string
            return super().getattr(obj, attribute)

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            _Limits.step()
            _check_numbers(*args, *kwargs.values())
            return _check_size(super().call(__context, __obj, *args, **kwargs))

    BoundedEnvironment.namespace_class = BoundedNamespace
    return BoundedEnvironment


@lru_cache(maxsize=8)
def _compile(source: str) -> Any:
    from jinja2 import TemplateError
    from jinja2.ext import loopcontrols

    env = _environment_class()(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters = {name: _guarded(f, name) for name, f in {**env.filters, "tojson": _tojson}.items()}
    env.globals.pop("lipsum", None)
    env.globals["range"] = _Range
    env.globals["namespace"] = env.namespace_class
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except TemplateError as exc:
        raise ConfigError(
            f"the model's chat template is not valid Jinja ({exc})",
            hint="pass --chat-template none to use plain 'User:/Assistant:' turns, or a template file",
        ) from None


class ChatTemplate:
    """A compiled chat template with the special-token strings it may use."""

    def __init__(self, source: str, special_tokens: Mapping[str, str] | None = None) -> None:
        if not isinstance(source, str) or not source.strip():
            raise ConfigError("a chat template must be non-empty text", hint="check the template file")
        self.source = source
        self.special_tokens = dict(special_tokens or {})
        self._template = _compile(source)

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """The conversation as the model expects it; with the generation prompt, ready for the reply."""
        from jinja2 import TemplateError

        context = {"bos_token": "", "eos_token": "", **self.special_tokens}
        _Limits.start()
        try:
            pieces, size = [], 0
            for piece in self._template.generate(
                messages=_Messages(dict(m) for m in messages), add_generation_prompt=add_generation_prompt,
                **context,
            ):
                size += len(piece)
                if size > MAX_OUTPUT:
                    raise _LimitExceeded(f"its output passed {MAX_OUTPUT:,} characters")
                _Limits.step()
                pieces.append(piece)
            return "".join(pieces)
        except _LimitExceeded as exc:
            raise GenerationError(
                f"the model's chat template was stopped: {exc} (templates are limited to {MAX_OUTPUT:,} "
                f"characters, {MAX_STEPS:,} steps and {MAX_SECONDS:g} seconds)",
                hint="pass --chat-template none to use plain 'User:/Assistant:' turns, or a template file",
            ) from None
        except _TemplateRaised as exc:
            raise GenerationError(
                f"the model's chat template refused the conversation: {exc}",
                hint="check the roles (some templates need user/assistant turns to alternate) or the system text",
            ) from None
        except RecursionError:
            raise GenerationError(
                "the model's chat template was stopped: it recursed too deeply",
                hint="pass --chat-template none to use plain 'User:/Assistant:' turns, or a template file",
            ) from None
        except (TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError,
                MemoryError) as exc:
            raise GenerationError(
                f"the model's chat template failed ({type(exc).__name__}: {_first_line(exc)})",
                hint="pass --chat-template none to use plain 'User:/Assistant:' turns",
            ) from None


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return text if len(text) <= 200 else text[:197] + "..."
