"""What loading produces: `ModelInfo` (what a model file or directory is) and `LoadedModel` (a model,
its tokenizer and where it runs, ready to generate). Every format's loader returns these.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .models.llmbuilder_gpt import GPTConfig, LLMBuilderGPT
from .tokenizers.tokenizer import Tokenizer

if TYPE_CHECKING:
    from .formats import hf_dir

__all__ = ["ModelInfo", "LoadedModel", "sha256_of"]


def sha256_of(files: tuple[Path, ...] | list[Path]) -> str:
    """sha256 of the files' bytes concatenated in the order given (a model's weights: one file, or its shards)."""
    h = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


@dataclass
class ModelInfo:
    """What a model file or directory is: shown by the CLI, recorded in JSON output."""

    path: Path  # the model file, or the Hugging Face directory
    format: str  # e.g. "llmbuilder model (save_model)", "Hugging Face safetensors", "GGUF"
    architecture: str  # "llmbuilder-gpt", "llama", "mistral", "qwen2", "qwen3", "phi3", "gpt2", "gemma3_text"
    config: Any  # GPTConfig | LlamaConfig | GPT2Config: vocab_size, n_layer, n_head, n_embd, block_size, ...
    file_size: int  # bytes of the weights file(s)
    stored_dtype: str  # dtype of the weights in the file(s), or the GGUF quantization summary
    files: tuple[Path, ...] = ()  # the weights file(s) the sha256 covers; default: (path,)
    quantization: str | None = None  # GGUF: e.g. "Q4_1 (210 tensors), F32 (61), Q8_0 (1)"
    _sha256: str | None = field(default=None, repr=False)

    @classmethod
    def for_file(cls, file: Path, config: GPTConfig, fmt: str, stored_dtype: str) -> "ModelInfo":
        """The description of a checkpoint file just read by `read_checkpoint`."""
        return cls(
            path=file.resolve(),
            format=fmt,
            architecture=LLMBuilderGPT.architecture,
            config=config,
            file_size=file.stat().st_size,
            stored_dtype=stored_dtype,
            files=(file.resolve(),),
        )

    @classmethod
    def for_hf_dir(cls, d: hf_dir.HFDir) -> "ModelInfo":
        shards = len(d.files)
        return cls(
            path=d.directory.resolve(),
            format="Hugging Face safetensors" + (f" ({shards} shards)" if shards > 1 else ""),
            architecture=d.config.model_type,
            config=d.config,
            file_size=d.file_size,
            stored_dtype=d.stored_dtype,
            files=tuple(f.resolve() for f in d.files),
        )

    @property
    def num_parameters(self) -> int:
        return self.config.num_parameters

    def sha256(self) -> str:
        """Hash of the weights, computed on first use (large files take a moment): of the model file; for
        a Hugging Face directory of its safetensors file, or of its shards' bytes concatenated in file-name
        order (config and tokenizer files are not included)."""
        if self._sha256 is None:
            self._sha256 = sha256_of(self.files or (self.path,))
        return self._sha256


@dataclass
class LoadedModel:
    """A model and its tokenizer, ready to generate; keep it to avoid reloading between calls."""

    model: Any  # LLMBuilderGPT | Llama | GPT2: the interface of engine/models
    tokenizer: Tokenizer
    info: ModelInfo
    device: torch.device
    load_s: float
    #: Sampling defaults the model ships (generation_config.json), as GenerationConfig field values.
    generation_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def block_size(self) -> int:
        return self.model.config.block_size

    def identity(self) -> dict[str, Any]:
        """Which model produced a text: JSON-ready, with the weights' sha256 (computed once)."""
        cfg = self.info.config
        return {
            "path": str(self.info.path),
            "format": self.info.format,
            "architecture": self.info.architecture,
            "parameters": self.info.num_parameters,
            "context_length": cfg.block_size,
            "vocab_size": cfg.vocab_size,
            "stored_dtype": self.info.stored_dtype,
            "quantization": self.info.quantization,
            "sha256": self.info.sha256(),
            "tokenizer": {"kind": self.tokenizer.kind, "path": str(Path(self.tokenizer.path).resolve())},
            "device": str(self.device),
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "weights": getattr(self.model, "quantization", None) or "dtype",  # "int8" with --quantize int8
        }

