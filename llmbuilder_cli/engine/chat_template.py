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
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any, Mapping, Sequence

from ..errors import ConfigError, GenerationError

__all__ = ["ChatTemplate", "Message"]

Message = Mapping[str, str]  # {"role": ..., "content": ...}


class _TemplateRaised(Exception):
    pass


def _raise(message: str) -> None:
    raise _TemplateRaised(message)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


@lru_cache(maxsize=8)
def _compile(source: str) -> Any:
    from jinja2 import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
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
        try:
            return self._template.render(
                messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt, **context
            )
        except _TemplateRaised as exc:
            raise GenerationError(
                f"the model's chat template refused the conversation: {exc}",
                hint="check the roles (some templates need user/assistant turns to alternate) or the system text",
            ) from None
        except (TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise GenerationError(
                f"the model's chat template failed ({type(exc).__name__}: {exc})",
                hint="pass --chat-template none to use plain 'User:/Assistant:' turns",
            ) from None
