"""Mirror of ``llmbuilder.inference``: the same names, importable from the same kind of place."""

from .api import generate_text, interactive_cli
from .config import GenerationConfig

__all__ = ["GenerationConfig", "generate_text", "interactive_cli"]
