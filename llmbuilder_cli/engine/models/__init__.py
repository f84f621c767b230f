"""Model architectures, one file each, all with the same forward(ids, start, cache) interface."""

from .llmbuilder_gpt import GPTConfig, KVCache, LLMBuilderGPT

__all__ = ["GPTConfig", "KVCache", "LLMBuilderGPT"]
