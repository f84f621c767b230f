"""llmbuilder-cli: turn a trained llmbuilder (or other small) language model into text.

    from llmbuilder_cli import generate_text, GenerationConfig
    text = generate_text(model_path="model.pt", tokenizer_path="tokenizer", prompt="Once upon a time",
                         config=GenerationConfig(do_sample=False, max_new_tokens=40))

Importing the package does not import torch; the engine loads on first use. The functions of `api` (and
`TurnFormat`) are looked up on first access too, so the command line, which imports this package for
every run (``llmbuilder --help`` included), does not pay for the API layer it does not use.
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import GenerationConfig
from .constraint import Constraint
from .errors import ConfigError, LLMBuilderError, ModelLoadError, TokenizerError, UsageError
from .types import FinishReason, GenerationResult, GenerationStats, StreamChunk

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and editors
    from .api import (
        clear_model_cache,
        generate,
        generate_text,
        interactive_cli,
        load_model,
        model_info,
        stream_text,
    )
    from .turns import TurnFormat

#: Public name → the submodule that defines it, imported on first access (PEP 562). The submodules
#: themselves stay reachable as attributes (``llmbuilder_cli.api``), as when they were imported eagerly.
_LAZY = {
    "api": "api",
    "turns": "turns",
    "inference": "inference",  # llmbuilder code reaches it as `llmbuilder.inference.TextGenerator`
    "generate_text": "api",
    "generate": "api",
    "stream_text": "api",
    "load_model": "api",
    "model_info": "api",
    "interactive_cli": "api",
    "clear_model_cache": "api",
    "TurnFormat": "turns",
}

__all__ = [
    "__version__",
    "GenerationConfig",
    "Constraint",
    "generate_text",
    "generate",
    "stream_text",
    "load_model",
    "model_info",
    "interactive_cli",
    "clear_model_cache",
    "TurnFormat",
    "FinishReason",
    "GenerationResult",
    "GenerationStats",
    "StreamChunk",
    "LLMBuilderError",
    "ConfigError",
    "ModelLoadError",
    "TokenizerError",
    "UsageError",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = import_module(f".{module}", __name__)
    if name != module:
        value = getattr(value, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
