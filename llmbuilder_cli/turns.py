"""How a chat's turns are written into the model's context: a small, validated turn format.

Models trained by llmbuilder have no chat template, so a chat lays turns out as plain text the model can
continue: ``User: <text>`` on one line, then ``Assistant:`` and the reply, each reply followed by a
newline. The reply ends at the model's EOS token or when it starts the next user line (a stop string).
Everything here is configurable and checked once. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["TurnFormat"]


@dataclass(frozen=True)
class TurnFormat:
    system: str = "{text}\n\n"  # how system text opens the context
    user: str = "User: {text}\n"  # one user turn
    assistant: str = "Assistant:"  # written before each reply; the model continues from here
    end: str = "\n"  # written after each reply
    stops: tuple[str, ...] = ("\nUser:",)  # the reply is cut before any of these

    def __post_init__(self) -> None:
        for name in ("system", "user"):
            template = getattr(self, name)
            if not isinstance(template, str) or template.count("{text}") != 1:
                raise ConfigError(f"turn format '{name}' must contain {{text}} exactly once (got {template!r})",
                                  hint="e.g. 'User: {text}\\n'", field=name)
        for name in ("assistant", "end"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"turn format '{name}' must be text", hint="e.g. 'Assistant:'", field=name)
        stops = tuple(self.stops)
        if not all(isinstance(s, str) and s for s in stops):
            raise ConfigError("turn format stops must be non-empty strings", hint="e.g. ['\\nUser:']", field="stops")
        object.__setattr__(self, "stops", stops)

    def system_text(self, text: str) -> str:
        return self.system.replace("{text}", text)

    def user_text(self, text: str) -> str:
        """A user turn followed by the assistant prefix: what is added before a reply is generated."""
        return self.user.replace("{text}", text) + self.assistant
