"""``llmbuilder setup`` and ``generate text --setup``: the wizard in a real terminal, then save and run.

The questions (questionary) are drawn on stderr, so stdout still carries only generated text and
``llmbuilder setup > story.txt`` works. Without a terminal on stdin and stderr the wizard refuses with
exit code 2 instead of waiting for answers that never come. Ctrl-C at any question raises
KeyboardInterrupt: nothing has been written at that point, and the CLI exits with 130.

Nothing else draws while a question is on screen: a check that reads a model runs after the answer is
entered, under its own spinner, and a refused answer is asked again in place with the reason below it.
Reasons and long choices wrap to the terminal width instead of being cut. Saving into the profile being
edited changes only the keys the wizard decided; the file's comments and every other line stay as written.
"""

from __future__ import annotations

import contextlib
import math
import sys
from typing import Any, Callable, Iterator, Sequence

from .. import settings as st
from ..errors import UsageError
from ..terminal_text import wrap_for
from .wizard import Validator, WizardResult, next_time_command, run_wizard

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


@contextlib.contextmanager
def _keys_kept_for_the_next_question() -> Iterator[None]:
    """Between two questions the terminal is back in line mode: keys typed then would be echoed over the
    spinner (an Enter moving it down a row) and Ctrl-U eaten by the line editor. Turn echo and line
    editing off meanwhile, so they wait, unseen, for the next question; Ctrl-C still interrupts."""
    try:
        import termios
    except ImportError:  # Windows
        yield
        return
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
    except (AttributeError, ValueError, OSError, termios.error):  # stdin is no terminal
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | termios.ICANON)  # lflags; ISIG stays on
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


class QuestionaryAsker:
    """The wizard's questions as questionary prompts drawn on stderr; explanations printed with rich."""

    def __init__(self) -> None:
        from prompt_toolkit.output import create_output
        from rich.console import Console

        self._output = create_output(stdout=sys.stderr)
        self._console = Console(stderr=True, highlight=False)

    def _adapt(self, validate: Validator | None) -> Callable[[str], Any] | None:
        if validate is None:
            return None
        # questionary: True when valid, else the message (wrapped at spaces to the terminal's width)
        return lambda text: self._fit(validate(text)) or True

    def _fit(self, reason: str | None) -> str | None:
        return reason and wrap_for(reason, sys.stderr, width=max(1, self._output.get_size().columns))

    @staticmethod
    def _wrap_long_lines(question: Any) -> None:
        """Let the bottom bar (a refused answer's reason) and the choices of a select wrap to the
        terminal's width; prompt_toolkit and questionary cut them at the edge."""
        from prompt_toolkit.filters import to_filter
        from prompt_toolkit.layout.controls import FormattedTextControl

        for window in question.application.layout.find_all_windows():
            control = window.content
            if not isinstance(control, FormattedTextControl):
                continue
            if type(control).__name__ == "InquirerControl":  # the choices: continuation rows indented
                window.wrap_lines = to_filter(True)
                window.get_line_prefix = lambda line, wrap_count: "   " if wrap_count else ""
            elif getattr(control.text, "__qualname__", "").startswith("ValidationToolbar."):
                window.wrap_lines = to_filter(True)
                window.height = None  # as many rows as the wrapped reason needs

    def _ask(self, make: Callable[..., Any], message: str, default: str, validate: Validator | None,
             busy: str) -> str:
        """Ask until ``validate`` accepts. A slow check (``busy``) runs after Enter under a spinner, never
        while the question is drawn; a refused answer is erased and asked again with its reason."""
        from prompt_toolkit.validation import ValidationError

        problem: str | None = None
        while True:
            question = make(message, default=default, validate=None if busy else self._adapt(validate),
                            validate_while_typing=False, output=self._output)
            self._wrap_long_lines(question)
            if problem:  # asked again: the reason shows at once, as if just refused in place
                buffer = question.application.layout.current_buffer
                buffer.validation_error = ValidationError(message=self._fit(problem))
            answer = question.unsafe_ask()
            if not busy or validate is None:
                return answer
            with _keys_kept_for_the_next_question(), self._console.status(busy, spinner="dots"):
                problem = validate(answer)
            if problem is None:
                return answer
            self._erase_answer(f"? {message} {answer}")
            default = answer

    def _erase_answer(self, line: str) -> None:
        """Remove the rows of a question's final line (the cursor is on the row below it)."""
        from prompt_toolkit.utils import get_cwidth

        columns = max(1, self._output.get_size().columns)
        rows = max(1, math.ceil(get_cwidth(line) / columns))
        sys.stderr.write(f"\x1b[{rows}F\x1b[J")
        sys.stderr.flush()

    def say(self, text: str, *, style: str = "") -> None:
        self._console.print(text, style=style or None, markup=False)

    def text(self, message: str, *, default: str = "", validate: Validator | None = None, busy: str = "") -> str:
        import questionary

        return self._ask(questionary.text, message, default, validate, busy)

    def path(self, message: str, *, default: str = "", validate: Validator | None = None, busy: str = "") -> str:
        import questionary

        return self._ask(questionary.path, message, default, validate, busy)

    def select(self, message: str, choices: Sequence[tuple[str, Any]], *, default: Any = None) -> Any:
        import questionary

        options = [questionary.Choice(title, value) for title, value in choices]
        chosen = next((c for c in options if c.value == default), None)
        question = questionary.select(message, options, default=chosen, output=self._output)
        self._wrap_long_lines(question)
        return question.unsafe_ask()

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


def save_profile(result: WizardResult, edited: str | None = None) -> st.Settings:
    """Write the wizard's answers as profile ``result.profile``, atomically, keeping the file's layout.

    Saving into ``edited`` (the profile the wizard started from) changes only the keys the wizard
    decided (`WizardResult.asked`) and adds kept values the profile lacked; any other profile of that
    name is replaced. Keys whose value did not change are not rewritten, so their lines (and comments)
    stay byte for byte.
    """
    import tomlkit

    values = result.profile_values()
    name = result.profile
    assert name is not None

    def change(doc: Any) -> None:
        profiles = doc.get("profiles")
        if profiles is None:
            profiles = tomlkit.table(is_super_table=True)
            doc["profiles"] = profiles
        if name not in profiles:
            profiles[name] = tomlkit.table()
        table = profiles[name]
        editing = name == edited
        for key in [k for k in table if k not in values]:
            if key in result.asked or not editing:
                del table[key]
        for key, value in values.items():
            new = st.to_toml_value(value)
            if key in table and (editing and key not in result.asked or table[key].unwrap() == new):
                continue  # unchanged, or a setting the wizard did not ask about: left as written
            st.set_in_table(table, key, new)
        if result.make_default and doc.get("default_profile") != name:
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

    result = run_wizard(asker, start=start, describe=api.model_info, profiles=list(settings.profiles),
                        current_profile=resolved.profile)
    if result.action == "cancel":
        asker.say("Cancelled: nothing was saved.")
        return 0
    if result.action in ("save", "both"):
        saved = save_profile(result, edited=resolved.profile)
        asker.say(f"Saved profile {result.profile!r} in {saved.path}"
                  + (" (the default)" if result.make_default else "") + ".")
        asker.say(f"Next time: {next_time_command(result)}", style="dim")
    if result.action in ("run", "both"):
        return run(result.argv)
    return 0
