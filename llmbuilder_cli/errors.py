"""Domain errors and the exit codes they map to.

Every error the user can cause is one of these. Each carries a message (what went wrong) and a hint (how
to fix it); the CLI turns it into a single line ``Error: <message> — <hint>`` at one translation point and
exits with the class's documented code. Standard library only.

Exit codes (documented in the README):
  0    success
  1    runtime failure during generation (e.g. out of memory, a device error)
  2    usage error: bad option value, missing or empty prompt, invalid configuration
  3    the model or tokenizer could not be found, read or understood
  4    a batch run (--prompts-file) finished, but some of its prompts failed (each has an error line)
  130  interrupted (Ctrl-C)
  143  terminated (SIGTERM), after restoring the terminal
"""

from __future__ import annotations

__all__ = [
    "EXIT_OK",
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "EXIT_LOAD",
    "EXIT_PARTIAL",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "MODEL_PATH_HINT",
    "LLMBuilderError",
    "ConfigError",
    "UsageError",
    "ModelLoadError",
    "TokenizerError",
    "GenerationError",
    "OutOfMemoryError",
]

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_LOAD = 3
EXIT_PARTIAL = 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a process Ctrl-C ended
EXIT_TERMINATED = 143  # 128 + SIGTERM

# The hint of a model path that does not exist. Commands that take the path as an option name it there
# (``generate text`` says "check the --model path"); ``info`` takes it as an argument.
MODEL_PATH_HINT = "check the model path"


class LLMBuilderError(Exception):
    """Base class: a problem explained to the user in one line, with a fix."""

    exit_code: int = EXIT_RUNTIME

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """``<message> — <hint>`` on a single line (newlines in paths or values are escaped)."""
        text = self.message if not self.hint else f"{self.message} — {self.hint}"
        return text.replace("\r", "\\r").replace("\n", "\\n")

    def __str__(self) -> str:
        return self.one_line()


class ConfigError(LLMBuilderError, ValueError):
    """An invalid generation setting. Subclasses ValueError so plain Python callers can catch either."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str = "", field: str | None = None) -> None:
        super().__init__(message, hint)
        self.field = field


class UsageError(LLMBuilderError):
    """The request cannot be run as given (no prompt, an empty prompt, conflicting options)."""

    exit_code = EXIT_USAGE


class ModelLoadError(LLMBuilderError):
    """The model file or directory is missing, unreadable, or of an unsupported kind."""

    exit_code = EXIT_LOAD


class TokenizerError(LLMBuilderError):
    """The tokenizer is missing, unreadable, or does not fit the model."""

    exit_code = EXIT_LOAD


class GenerationError(LLMBuilderError):
    """Generation failed while running (device errors, out of memory)."""

    exit_code = EXIT_RUNTIME


class OutOfMemoryError(LLMBuilderError):
    """What a model (or a file inside it) needs exceeds the memory this process may use; refused before
    allocating it."""

    exit_code = EXIT_RUNTIME
