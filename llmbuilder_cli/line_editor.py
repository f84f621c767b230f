"""Line input for the chat on a terminal: editing, persistent history and tab completion of commands.

Built on prompt_toolkit (already installed with questionary). History lives in ``chat_history`` under
the llmbuilder home (see paths.py); when that cannot be written, history is kept for the session only.
Ctrl-C raises KeyboardInterrupt and Ctrl-D ends input, exactly as with a plain stream, so the chat loop
treats both kinds of input the same way. Imported only when a chat runs on a terminal.
"""

from __future__ import annotations

from typing import Callable, Iterable

from . import paths

__all__ = ["HISTORY_FILE", "terminal_reader"]

HISTORY_FILE = "chat_history"


def terminal_reader(commands: Iterable[str]) -> Callable[[str], "str | None"]:
    """A ``read_line(prompt) -> line | None`` for the chat, with editing, history and completion."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import WordCompleter
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    history = InMemoryHistory()
    try:
        home = paths.home_dir()
        home.mkdir(parents=True, exist_ok=True)
        file = home / HISTORY_FILE
        file.touch(exist_ok=True)
        history = FileHistory(str(file))
    except OSError:
        pass
    completer = WordCompleter(sorted(commands), sentence=True, match_middle=False)
    session: PromptSession = PromptSession(history=history, completer=completer, complete_while_typing=False)

    def read_line(prompt: str) -> "str | None":
        try:
            return session.prompt(prompt)
        except EOFError:
            return None

    return read_line
