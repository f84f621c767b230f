"""Mirror of ``llmbuilder.inference``: code written against it runs here by changing the import.

    from llmbuilder_cli.inference import TextGenerator, GenerationConfig, generate_text

    gen = TextGenerator("run/model.pt", "run/tokenizer", config=GenerationConfig(max_new_tokens=40))
    text = gen.generate("Once upon a time")                   # decoded prompt + continuation
    text = gen.generate("The fox", temperature=0.5)           # fields for this call only
    texts = gen.generate_batch(["a", "b"], do_sample=False)

`TextGenerator` has llmbuilder's constructor, ``generate``, ``generate_batch`` and ``update_config``, on
this package's loader and engine: the model loads once, in the constructor, and every call reuses it
(with its KV cache). The differences, on purpose:

  * a `GenerationConfig` is immutable: ``update_config(...)`` (or ``cfg.replace(...)``) makes the
    changed, validated copy where llmbuilder assigned attributes;
  * the passed config is never mutated: ``eos_token_id=None`` means "the tokenizer's end-of-sequence
    id(s)" at every call, where llmbuilder fills the id in when the generator is built (so its fresh
    ``config=`` per call lost the EOS stop). ``early_stopping=False`` turns the stop off;
  * errors raise (`llmbuilder_cli.errors`): ``generate_batch`` does not turn a failed prompt into "";
  * nothing is logged to stdout, and sampling uses its own seeded generator (``seed=``) rather than
    torch's global one, so ``torch.manual_seed`` does not make it repeatable: ``seed`` does.

Every keyword is explicit (no ``**kwargs``): an unknown name is a ``TypeError`` at the call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .api import UNSET, generate, generate_text, interactive_cli, load_model, merge_config
from .api import generate_batch as api_generate_batch
from .batch import DEFAULT_BATCH_SIZE, BatchSize
from .config import GenerationConfig
from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .engine.loading import LoadedModel

__all__ = ["GenerationConfig", "TextGenerator", "generate_text", "interactive_cli"]


class TextGenerator:
    """llmbuilder's ``TextGenerator``: load a model and its tokenizer once, then generate many times.

    ``model_path``: ``model.pt``, a trainer checkpoint or a run directory (any model `load_model`
    reads). ``tokenizer_path``: the tokenizer directory or file; None takes the one beside the model.
    ``device``: None (CUDA, else MPS, else CPU), "cpu", "cuda", "cuda:N" or "mps". ``config``: the
    default `GenerationConfig` of every call (llmbuilder's defaults when None). ``num_heads`` and
    ``dtype`` are `load_model`'s.

    Attributes, as in llmbuilder: ``model_path`` and ``tokenizer_path`` (the files loaded), ``device``
    (a ``torch.device``), ``config``, ``model`` and ``tokenizer`` (this package's objects; the tokenizer
    has ``encode(text) -> ids`` and ``decode(ids) -> text``), and ``loaded``, the `load_model` handle
    that the other API functions take as ``model_path``.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        tokenizer_path: str | os.PathLike[str] | None = None,
        device: str | None = None,
        config: GenerationConfig | None = None,
        *,
        num_heads: int | None = None,
        dtype: str = "auto",
    ) -> None:
        self.config = GenerationConfig() if config is None else config
        self.loaded: LoadedModel = load_model(model_path, tokenizer_path, device=device, num_heads=num_heads,
                                              dtype=dtype)
        self.model_path: Path = self.loaded.info.path
        self.tokenizer_path: Path = Path(self.loaded.tokenizer.path).resolve()
        self.device: torch.device = self.loaded.device
        self.model: Any = self.loaded.model
        self.tokenizer: Any = self.loaded.tokenizer

    @property
    def config(self) -> GenerationConfig:
        """The default settings of every call; assign a new `GenerationConfig` or use `update_config`."""
        return self._config

    @config.setter
    def config(self, value: GenerationConfig) -> None:
        if not isinstance(value, GenerationConfig):
            raise ConfigError(
                f"config must be a GenerationConfig, not {type(value).__name__}",
                hint="build it with llmbuilder_cli.inference.GenerationConfig(...)",
            )
        self._config = value

    def generate(
        self,
        prompt: str,
        config: GenerationConfig | None = None,
        *,
        max_new_tokens: int = UNSET,
        min_new_tokens: int = UNSET,
        temperature: float = UNSET,
        top_k: int | None = UNSET,
        top_p: float | None = UNSET,
        repetition_penalty: float = UNSET,
        do_sample: bool = UNSET,
        seed: int | None = UNSET,
        stop: Any = UNSET,
        ignore_eos: bool = UNSET,
        early_stopping: bool = UNSET,
        eos_token_id: int | None = UNSET,
        pad_token_id: int | None = UNSET,
        length_penalty: float = UNSET,
    ) -> str:
        """The decoded prompt followed by the continuation, as llmbuilder returns it. ``config``
        replaces the generator's config for this call; the keywords change single fields of it."""
        cfg = merge_config(
            self.config if config is None else config,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            do_sample=do_sample,
            seed=seed,
            stop=stop,
            ignore_eos=ignore_eos,
            early_stopping=early_stopping,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            length_penalty=length_penalty,
        )
        return generate(self.loaded, prompt=prompt, config=cfg).full_text

    def generate_batch(
        self,
        prompts: Sequence[str],
        config: GenerationConfig | None = None,
        *,
        max_new_tokens: int = UNSET,
        min_new_tokens: int = UNSET,
        temperature: float = UNSET,
        top_k: int | None = UNSET,
        top_p: float | None = UNSET,
        repetition_penalty: float = UNSET,
        do_sample: bool = UNSET,
        seed: int | None = UNSET,
        stop: Any = UNSET,
        ignore_eos: bool = UNSET,
        early_stopping: bool = UNSET,
        eos_token_id: int | None = UNSET,
        pad_token_id: int | None = UNSET,
        length_penalty: float = UNSET,
        batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    ) -> list[str]:
        """`generate` for every prompt with the same settings, decoded ``batch_size`` at a time
        (`api.generate_batch`; 1 = one after another). A failing prompt raises (llmbuilder returned ""
        for it); a ``seed`` gives every prompt the same seed."""
        if isinstance(prompts, str):
            raise ConfigError("prompts must be a list of texts, not one text", hint="use generate(prompt) for one")
        cfg = merge_config(
            self.config if config is None else config,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            do_sample=do_sample,
            seed=seed,
            stop=stop,
            ignore_eos=ignore_eos,
            early_stopping=early_stopping,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            length_penalty=length_penalty,
        )
        return [r.full_text for r in api_generate_batch(self.loaded, prompts=prompts, config=cfg, batch_size=batch_size)]

    def update_config(
        self,
        *,
        max_new_tokens: int = UNSET,
        min_new_tokens: int = UNSET,
        temperature: float = UNSET,
        top_k: int | None = UNSET,
        top_p: float | None = UNSET,
        repetition_penalty: float = UNSET,
        do_sample: bool = UNSET,
        seed: int | None = UNSET,
        stop: Any = UNSET,
        ignore_eos: bool = UNSET,
        early_stopping: bool = UNSET,
        eos_token_id: int | None = UNSET,
        pad_token_id: int | None = UNSET,
        length_penalty: float = UNSET,
    ) -> None:
        """Change fields of the generator's config for the calls that follow (validated; an unknown
        name is a ``TypeError``, where llmbuilder only logged a warning)."""
        self.config = merge_config(
            self.config,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            do_sample=do_sample,
            seed=seed,
            stop=stop,
            ignore_eos=ignore_eos,
            early_stopping=early_stopping,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            length_penalty=length_penalty,
        )
