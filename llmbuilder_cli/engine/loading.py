"""Load a model: a path in, a ready `LoadedModel` out. This module only dispatches and assembles; the
parts live elsewhere:

* which file a path names and its format: ``formats/locate.py`` (``llmbuilder``, ``huggingface``, ``gguf``);
* reading each format: ``formats/llmbuilder.py`` (llmbuilder checkpoints), ``formats/hf_dir.py`` with
  ``formats/weights_io.py`` (Hugging Face directories, safetensors read one tensor at a time), and
  ``formats/gguf/`` (GGUF files, tensors dequantized one block of rows at a time as the builder takes them);
* the architectures built from them: ``models/``; the linear layers they run on: ``kernels/``;
* tokenizers: ``tokenizers/``; device, dtype and threads: ``runtime.py``; the result: ``loaded.py``.

Every format runs in the dtype chosen by `resolve_dtype` (``auto``: float32 on CPU and MPS, bfloat16 on
CUDA when supported, else float16), optionally with weight-only int8/int4 layers (Llama family).

The names other code and tests import from here (`load`, `read_checkpoint`, `resolve_device`, ...) stay
importable from this module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .. import cpu_load
from ..cpu_load import AutoThreads
from ..errors import ModelLoadError, TokenizerError, UsageError
from .formats import hf_dir
from .formats.llmbuilder import head_is_tied, read_checkpoint
from .formats.locate import (
    default_tokenizer_path,
    hf_tokenizer_path,
    is_gguf,
    model_format,
    resolve_model_file,
    tokenizer_path_for,
)
from .formats.weights_io import LazyState, SafetensorsFile
from .kernels import QUANTIZATIONS, fuses_layers
from .limits import check_memory
from .loaded import LoadedModel, ModelInfo
from .models.gemma3 import Gemma3
from .models.llama import Llama
from .models.llmbuilder_gpt import LLMBuilderGPT
from .runtime import DTYPES, choose_threads, max_threads, resolve_device, resolve_dtype
from .tokenizers.tokenizer import HFTokenizer, Tokenizer, load_tokenizer

__all__ = [
    "ModelInfo",
    "LoadedModel",
    "DTYPES",
    "resolve_device",
    "resolve_dtype",
    "model_format",
    "is_gguf",
    "resolve_model_file",
    "default_tokenizer_path",
    "tokenizer_path_for",
    "hf_tokenizer_path",
    "read_checkpoint",
    "read_gguf_model",
    "choose_threads",
    "max_threads",
    "head_is_tied",
    "Prepared",
    "prepare",
    "quantizable",
    "load",
]


def _check_num_heads(num_heads: int | None, config: Any, path: Path) -> None:
    if num_heads is not None and num_heads != config.n_head:
        raise ModelLoadError(
            f"--num-heads {num_heads} contradicts {path}'s {config.n_head} attention heads",
            hint="leave --num-heads out: it is only for old llmbuilder checkpoints",
        )


def _check_vocab(tokenizer: Tokenizer, config: Any) -> None:
    if tokenizer.vocab_size > config.vocab_size:
        raise TokenizerError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model's embedding has only "
            f"{config.vocab_size} rows",
            hint="use the tokenizer the model was trained with",
        )



def quantizable(config: Any) -> bool:
    """Whether weight-only int8/int4 quantization (``engine/kernels/``) is available for this architecture."""
    supported = hf_dir.SUPPORTED.get(getattr(config, "model_type", None))
    return supported is not None and supported[1] in (Llama, Gemma3)


def _build_hf_model(config: Any, state: Mapping[str, torch.Tensor], quantize: str | None) -> Any:
    """The inference model for a validated config; a dict state is consumed (emptied as it is used)."""
    if quantizable(config):
        return hf_dir.SUPPORTED[config.model_type][1](config, state, quantize=quantize, consume=True)
    _no_quantization(quantize, config.model_type)
    return hf_dir.build_model(config, state)


def _no_quantization(quantize: str | None, architecture: str) -> None:
    if quantize is not None:
        raise UsageError(f"{quantize} quantization is not available for {architecture} models",
                         hint="it runs Llama-family models (llama, mistral, qwen2, qwen3, phi3) and Gemma 3; "
                              "leave the quantization off")


def _check_fits(config: Any, dtype: torch.dtype, quantize: str | None, source: Path) -> None:
    """Refuse a model whose weights, in the dtype (or quantization) they will run in, exceed the memory
    available, before any of them is read."""
    per_parameter = {"int8": 1.0, "int4": 0.5}.get(quantize or "", torch.empty((), dtype=dtype).element_size())
    needed = int(config.num_parameters * per_parameter)
    check_memory(needed, f"{source.name} ({config.num_parameters:,} parameters as "
                         f"{quantize or str(dtype).replace('torch.', '')})")


@dataclass
class Prepared:
    """A model read and checked as far as it can be before its weights are: the file's header or config,
    its tensor names, shapes and types, the tokenizer and that the two agree (`prepare`). `check` adds what
    depends on how it will run (quantization, memory); `build` then reads the weights. `load` runs the
    three in turn; ``llmbuilder info`` (``describe.py``) runs the first two to say whether a model runs here.
    """

    path: Path
    config: Any
    tokenizer: Tokenizer
    info: ModelInfo
    tied: bool  # the output head is the embedding
    generation_defaults: dict[str, Any]
    #: (device, dtype, quantize) -> the inference model, its weights read
    builder: Callable[[torch.device, torch.dtype, str | None], Any] = field(repr=False)
    #: whether loading checks that the weights fit in memory before reading them (llmbuilder checkpoints
    #: are read whole by `prepare` already)
    checks_memory: bool = True

    def check(self, dtype: torch.dtype, quantize: str | None) -> None:
        """Refuse what loading refuses for this dtype and quantization: a quantization the architecture does
        not have, weights that do not fit in the memory available (`limits.check_memory`)."""
        if quantize is not None and not quantizable(self.config):
            _no_quantization(quantize, self.info.architecture)
        if self.checks_memory:
            _check_fits(self.config, dtype, quantize, self.path)

    def build(self, device: torch.device, dtype: torch.dtype, quantize: str | None) -> Any:
        return self.builder(device, dtype, quantize)


def _prepare_llmbuilder(file: Path, tokenizer_path: Any, dtype: torch.dtype, num_heads: int | None) -> Prepared:
    tokenizer_path = tokenizer_path_for(file, tokenizer_path)
    config, state, fmt, stored_dtype = read_checkpoint(file, num_heads=num_heads)
    tokenizer = load_tokenizer(tokenizer_path, add_bos=False)  # llmbuilder never starts with BOS
    _check_vocab(tokenizer, config)
    tied = head_is_tied(state)

    def build(dev: torch.device, dt: torch.dtype, quantize: str | None) -> Any:
        nonlocal state
        weights = {k: v.to(device=dev, dtype=dt) for k, v in state.items() if not (tied and k == "lm_head.weight")}
        state = {}
        if tied:
            weights["lm_head.weight"] = weights["token_embedding.weight"]
        return LLMBuilderGPT(config, weights)

    return Prepared(file, config, tokenizer, ModelInfo.for_file(file, config, fmt, stored_dtype), tied, {}, build,
                    checks_memory=False)


def _build_hf_dir_model(d: hf_dir.HFDir, dtype: torch.dtype, device: torch.device, quantize: str | None) -> Any:
    """Build the model of an inspected directory, its tensors read one at a time as the builder takes
    them (``engine/formats/weights_io.py``): memory-mapped when every tensor is kept as stored (float32 on CPU,
    nothing fused or quantized), else read into their final dtype, so the peak stays near the weights."""
    files = {f: SafetensorsFile(f) for f in d.files}
    try:
        names = {canon: (files[d.where[stored]], stored) for canon, stored in d.names.items()}
        mmap_ok = device.type == "cpu" and not fuses_layers(dtype, quantize)
        return _build_hf_model(d.config, LazyState(names, dtype=dtype, device=device, mmap_ok=mmap_ok), quantize)
    finally:
        for f in files.values():
            f.close()


def _prepare_hf(directory: Path, tokenizer_path: Any, dtype: torch.dtype, num_heads: int | None) -> Prepared:
    d = hf_dir.inspect_hf_dir(directory)
    _check_num_heads(num_heads, d.config, directory)
    eos = hf_dir.eos_token_ids(d.generation_config, d.hf_config)
    explicit = tokenizer_path not in (None, "")
    tokenizer = load_tokenizer(tokenizer_path if explicit else hf_tokenizer_path(directory), extra_eos_ids=eos)
    _check_vocab(tokenizer, d.config)
    return Prepared(directory, d.config, tokenizer, ModelInfo.for_hf_dir(d), d.config.tie_word_embeddings,
                    hf_dir.generation_defaults(d.generation_config),
                    lambda dev, dt, quantize: _build_hf_dir_model(d, dt, dev, quantize))


def read_gguf_model(file: Path, dtype: torch.dtype) -> tuple[Any, Any, dict[str, str]]:
    """Read a GGUF file's header → (the reader's GGUFModel, validated config, {canonical name: its name in
    the model's lazy state}). No tensor data is read: the state reads each tensor when it is looked up."""
    try:
        from .formats.gguf.file import read_gguf
    except ImportError:  # pragma: no cover - the reader ships with the package
        raise ModelLoadError(f"{file} is a GGUF file, which this installation cannot read",
                             hint="install llmbuilder-cli with its GGUF support (the gguf package)") from None
    g = read_gguf(file, dtype=dtype)
    config = hf_dir.model_config(g.hf_config, str(file))
    names = hf_dir.validate_shapes(config, g.state_dict.shapes(), str(file))
    return g, config, names


def _prepare_gguf(file: Path, tokenizer_path: Any, dtype: torch.dtype, num_heads: int | None) -> Prepared:
    g, config, names = read_gguf_model(file, dtype)
    _check_num_heads(num_heads, config, file)
    if tokenizer_path not in (None, ""):
        tokenizer = load_tokenizer(tokenizer_path, extra_eos_ids=g.eos_ids)
    else:
        tokenizer = HFTokenizer.from_tokenizer(
            g.tokenizer, path=file, eos_ids=g.eos_ids, bos_id=g.bos_id, add_bos=g.add_bos,
            chat_template=g.chat_template, special_tokens=g.special_tokens,
        )
    _check_vocab(tokenizer, config)
    info = ModelInfo(path=file.resolve(), format="GGUF", architecture=config.model_type, config=config,
                     file_size=file.stat().st_size, stored_dtype=g.quantization, files=(file.resolve(),),
                     quantization=g.quantization)
    # Each tensor is read and dequantized when the builder takes it (fused in place, or quantized block by
    # block), so the peak stays near the built model's own weights.
    return Prepared(file, config, tokenizer, info, config.tie_word_embeddings, {},
                    lambda dev, dt, quantize: _build_hf_model(config, g.state_dict.renamed(names, device=dev),
                                                              quantize))


def prepare(model_path: str | Path, tokenizer_path: str | Path | None = None, *, dtype: torch.dtype,
            num_heads: int | None = None) -> Prepared:
    """Read and check the model at ``model_path`` and its tokenizer as loading does, up to its weights
    (a GGUF file's tensors are read later in ``dtype``). Raises the loader's errors: `ModelLoadError`,
    `TokenizerError`."""
    path = resolve_model_file(model_path)
    preparer = {"huggingface": _prepare_hf, "gguf": _prepare_gguf, "llmbuilder": _prepare_llmbuilder}
    return preparer[model_format(path)](path, tokenizer_path, dtype, num_heads)


def load(
    model_path: str | Path,
    tokenizer_path: str | Path | None = None,
    *,
    device: str | None = "auto",
    num_heads: int | None = None,
    threads: int | str | None = None,
    dtype: str = "auto",
    quantize: str | None = None,
) -> LoadedModel:
    """Read a model and its tokenizer. Default tokenizer: llmbuilder's ``tokenizer/`` directory beside the
    model; a Hugging Face directory's own ``tokenizer.json``; the vocabulary inside a GGUF file.

    ``dtype``: ``auto`` (see `resolve_dtype`), ``float32``, ``bfloat16`` or ``float16``, for every format.
    ``threads``: None leaves torch's CPU thread count alone; a number sets it (process-wide); "auto"
    picks one from the model size and the free CPUs (`choose_threads`). ``num_heads`` is only for old llmbuilder checkpoints.
    ``quantize``: None, ``"int8"`` or ``"int4"``: weight-only quantization for Llama-family and Gemma 3 models
    (``engine/kernels/``);
    activations, norms and attention stay in ``dtype``.
    """
    t0 = time.perf_counter()
    if quantize not in QUANTIZATIONS:
        raise UsageError(f"unknown quantization {quantize!r}",
                         hint="use int8 or int4 (weight-only, Llama-family and Gemma 3 models) or leave it off")
    if threads == "auto":  # how busy the CPUs are is measured while the files are read
        threads = AutoThreads(cpu_load.CpuUse.now())
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    prepared = prepare(model_path, tokenizer_path, dtype=dt, num_heads=num_heads)
    if threads is not None:
        torch.set_num_threads(choose_threads(threads, prepared.config.num_parameters))
    prepared.check(dt, quantize)
    model = prepared.build(dev, dt, quantize)
    return LoadedModel(model=model, tokenizer=prepared.tokenizer, info=prepared.info, device=dev,
                       load_s=time.perf_counter() - t0, generation_defaults=prepared.generation_defaults)
