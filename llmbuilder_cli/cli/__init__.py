"""The command-line layer (typer). Imports the engine only inside commands, never at import time."""

from .app import app, main, run

__all__ = ["app", "main", "run"]
