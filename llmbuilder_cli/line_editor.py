"""Line input for the chat on a terminal: editing, persistent history and tab completion of commands.

Built on prompt_toolkit (already installed with questionary). The prompt and the line being edited are
drawn on stderr, the terminal, never on stdout: stdout carries replies only, so ``-i > log`` or
``-i | tee log`` records the replies and the screen keeps clean prompts. History lives in
``chat_history`` under the llmbuilder home (see paths.py), readable by its owner only (it holds every
message typed); when that cannot be written, history is kept for the session only. Tab completes the
commands and their first argument (``/set`` keys). Ctrl-C raises KeyboardInterrupt and Ctrl-D ends input,
exactly as with a plain stream, so the chat loop treats both kinds of input the same way. Imported only
when a chat runs on a terminal.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Iterable, Mapping

from . import paths

__all__ = ["HISTORY_FILE", "HISTORY_MODE", "terminal_reader", "open_history"]

HISTORY_FILE = "chat_history"
HISTORY_MODE = 0o600


def open_history() -> "str | None":
    """The history file's path, created (or tightened) to owner-only; None when it cannot be."""
    try:
        home = paths.home_dir()
        home.mkdir(parents=True, exist_ok=True)
        file = home / HISTORY_FILE
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, HISTORY_MODE))
        if os.name == "posix" and os.stat(file).st_mode & 0o077:
            os.chmod(file, HISTORY_MODE)  # a file an earlier version left readable by others
        return str(file)
    except OSError:
        return None


def _completer(words: Mapping[str, Iterable[str]]):
    """Completes a command at the start of the line, then the first argument from ``words[command]``
    (case ignored), in the order given: ``/se`` offers ``/set`` before ``/seed``, as /help lists them."""
    from prompt_toolkit.completion import Completer, Completion

    table = {name: tuple(args) for name, args in words.items()}  # offered in this order

    class ChatCompleter(Completer):
        def get_completions(self, document, complete_event):
            text = document.text_before_cursor
            if not text.startswith("/"):
                return
            if " " not in text:
                for name in table:
                    if name.startswith(text.lower()):
                        yield Completion(name, start_position=-len(text))
                return
            command, _, rest = text.partition(" ")
            if " " in rest.lstrip():  # only the first argument is completed
                return
            prefix = rest.lstrip().lower()
            for word in table.get(command.lower(), ()):
                if word.startswith(prefix):
                    yield Completion(word, start_position=-len(prefix))

    return ChatCompleter()


def terminal_reader(words: Mapping[str, Iterable[str]]) -> Callable[[str], "str | None"]:
    """A ``read_line(prompt) -> line | None`` for the chat, with editing, history and completion;
    ``words``: command → the words its first argument may be (chat.completions())."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory, InMemoryHistory
    from prompt_toolkit.output import create_output

    file = open_history()
    history = FileHistory(file) if file else InMemoryHistory()
    session: PromptSession = PromptSession(
        history=history, completer=_completer(words), complete_while_typing=False,
        output=create_output(stdout=sys.stderr),  # draw on the terminal, never into redirected stdout
    )  # fmt: skip

    def read_line(prompt: str) -> "str | None":
        try:
            return session.prompt(prompt)
        except EOFError:
            return None

    return read_line
