"""``llmbuilder setup`` and ``generate text --setup``: the wizard in a real terminal, then save and run.

The questions (questionary) are drawn on stderr, so stdout still carries only generated text and
``llmbuilder setup > story.txt`` works. Without a terminal on stdin and stderr the wizard refuses with
exit code 2 instead of waiting for answers that never come. Ctrl-C at any question raises
KeyboardInterrupt: nothing has been written at that point, and the CLI exits with 130.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

from .. import settings as st
from ..errors import UsageError
from .wizard import Validator, WizardResult, run_wizard

__all__ = ["QuestionaryAsker", "run_setup", "require_terminal", "save_profile"]


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


def require_terminal() -> None:
    """Refuse (exit 2) when no person can answer: stdin or stderr is not a terminal."""
    if not (_is_tty(sys.stdin) and _is_tty(sys.stderr)):
        raise UsageError(
            "the setup wizard needs a terminal (stdin and stderr are not both a TTY)",
            hint="pass the options as flags, or use a saved profile with --profile NAME",
        )


class QuestionaryAsker:
    """The wizard's questions as questionary prompts drawn on stderr; explanations printed with rich."""

    def __init__(self) -> None:
        from prompt_toolkit.output import create_output
        from rich.console import Console

        self._output = create_output(stdout=sys.stderr)
        self._console = Console(stderr=True, highlight=False)

    @staticmethod
    def _adapt(validate: Validator | None) -> Callable[[str], Any] | None:
        if validate is None:
            return None
        return lambda text: validate(text) or True  # questionary: True when valid, else the message

    def say(self, text: str, *, style: str = "") -> None:
        self._console.print(text, style=style or None, markup=False)

    def text(self, message: str, *, default: str = "", validate: Validator | None = None) -> str:
        import questionary

        return questionary.text(message, default=default, validate=self._adapt(validate),
                                validate_while_typing=False, output=self._output).unsafe_ask()

    def path(self, message: str, *, default: str = "", validate: Validator | None = None) -> str:
        import questionary

        return questionary.path(message, default=default, validate=self._adapt(validate),
                                validate_while_typing=False, output=self._output).unsafe_ask()

    def select(self, message: str, choices: Sequence[tuple[str, Any]], *, default: Any = None) -> Any:
        import questionary

        options = [questionary.Choice(title, value) for title, value in choices]
        chosen = next((c for c in options if c.value == default), None)
        return questionary.select(message, options, default=chosen, output=self._output).unsafe_ask()

    def confirm(self, message: str, *, default: bool = True) -> bool:
        import questionary

        return questionary.confirm(message, default=default, output=self._output).unsafe_ask()

    def summary(self, rows: Sequence[tuple[str, str]], command: str) -> None:
        from rich.panel import Panel
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        table.add_column(style="cyan", no_wrap=True)
        table.add_column(overflow="fold")
        for key, value in rows:
            table.add_row(key, value)
        self._console.print(Panel(table, title="Your settings", expand=False))
        self._console.print("The same, as one command (for scripts):", style="dim")
        self._console.print(command, markup=False, soft_wrap=True)


def save_profile(result: WizardResult) -> st.Settings:
    """Write the wizard's answers as profile ``result.profile`` (replacing it), atomically."""
    import tomlkit

    values = result.profile_values()
    name = result.profile
    assert name is not None

    def change(doc: Any) -> None:
        profiles = doc.get("profiles")
        if profiles is None:
            profiles = tomlkit.table(is_super_table=True)
            doc["profiles"] = profiles
        table = tomlkit.table()
        for key, value in values.items():
            table[key] = st.to_toml_value(value)
        profiles[name] = table
        if result.make_default:
            doc["default_profile"] = name

    return st.update(change)


def run_setup(flags: dict[str, Any], profile: str | None, run: Callable[[list[str]], int]) -> int:
    """Run the wizard starting from the effective settings; save and/or run what was chosen."""
    require_terminal()
    from .. import api

    settings = st.Settings.read()
    resolved = st.resolve(flags, profile=profile, settings=settings)
    start = {k: v for k, v in resolved.values.items() if resolved.sources.get(k) != "default" or k in flags}
    asker = QuestionaryAsker()

    def describe(model: str, tokenizer: str | None) -> dict[str, Any]:
        with asker._console.status("Reading the model…", spinner="dots"):
            return api.model_info(model, tokenizer)

    result = run_wizard(asker, start=start, describe=describe, profiles=list(settings.profiles),
                        current_profile=resolved.profile)
    if result.action == "cancel":
        asker.say("Cancelled: nothing was saved.")
        return 0
    if result.action in ("save", "both"):
        saved = save_profile(result)
        asker.say(f"Saved profile {result.profile!r} in {saved.path}"
                  + (" (the default)" if result.make_default else "") + ".")
        asker.say(f"Next time: llmbuilder generate text --profile {result.profile} -p \"...\"", style="dim")
    if result.action in ("run", "both"):
        return run(result.argv)
    return 0
