"""llmbuilder-cli: turn a trained llmbuilder (or other small) language model into text.

    from llmbuilder_cli import generate_text, GenerationConfig
    text = generate_text(model_path="model.pt", tokenizer_path="tokenizer", prompt="Once upon a time",
                         config=GenerationConfig(do_sample=False, max_new_tokens=40))

Importing the package does not import torch; the engine loads on first use.
"""

from ._version import __version__
from .api import (
    clear_model_cache,
    generate,
    generate_text,
    interactive_cli,
    load_model,
    model_info,
    stream_text,
)
from .config import GenerationConfig
from .errors import ConfigError, LLMBuilderError, ModelLoadError, TokenizerError, UsageError
from .turns import TurnFormat
from .types import FinishReason, GenerationResult, GenerationStats, StreamChunk

__all__ = [
    "__version__",
    "GenerationConfig",
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
