"""Read a Hugging Face model directory: ``config.json``, safetensors weights, generation defaults, tokenizer.

A directory is recognised by a ``config.json`` naming a ``model_type`` or ``architectures``. The model
type picks the architecture (`SUPPORTED`); the rest of the config is validated by that architecture's
config class (``engine/models/llama.py``, ``gpt2.py``, ``gemma3.py``), which also lists every tensor it
needs with its shape. Weights come from ``model.safetensors`` or the shards named by
``model.safetensors.index.json``, read with ``safetensors.safe_open`` (memory-mapped; no pickle is ever
loaded): headers first, so names, shapes and dtypes are checked before any data is read, then each tensor
is converted to the dtype and device it will run in. ``pytorch_model.bin`` files are refused (unpickling
can run code). The same validation (`validate_shapes`) and builder (`build_model`) serve GGUF files, whose
reader produces the same config keys and tensor names.

``generation_config.json`` gives extra end-of-sequence ids and sampling defaults (`generation_defaults`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import torch

from ...config import GenerationConfig
from ...errors import ConfigError, ModelLoadError
from ..models.gemma3 import Gemma3, Gemma3Config
from ..models.gpt2 import GPT2, GPT2Config
from ..models.llama import Llama, LlamaConfig

__all__ = [
    "SUPPORTED",
    "ModelConfig",
    "HFDir",
    "DTYPE_NAMES",
    "is_hf_dir",
    "read_config",
    "inspect_hf_dir",
    "model_config",
    "validate_shapes",
    "check_layer_count",
    "build_model",
    "eos_token_ids",
    "generation_defaults",
]

ModelConfig = Union[LlamaConfig, GPT2Config, Gemma3Config]

#: model_type → (config class, model class, what it covers).
SUPPORTED: dict[str, tuple[type, type, str]] = {
    "llama": (LlamaConfig, Llama, "Llama, SmolLM/SmolLM2, TinyLlama"),
    "mistral": (LlamaConfig, Llama, "Mistral"),
    "qwen2": (LlamaConfig, Llama, "Qwen2/Qwen2.5"),
    "qwen3": (LlamaConfig, Llama, "Qwen3"),
    "phi3": (LlamaConfig, Llama, "Phi-3, 4k-context variants"),
    "gpt2": (GPT2Config, GPT2, "GPT-2"),
    "gemma3_text": (Gemma3Config, Gemma3, "Gemma 3, text only"),
}
_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Phi3ForCausalLM": "phi3",
    "GPT2LMHeadModel": "gpt2",
    "Gemma3ForCausalLM": "gemma3_text",
}
_INDEX = "model.safetensors.index.json"
#: safetensors dtype → the name we show, for the dtypes a model can run from.
DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
_GENERATION_FIELDS = ("temperature", "top_k", "top_p", "repetition_penalty", "do_sample", "max_new_tokens")


def supported_list() -> str:
    return "; ".join(f"{mt} ({what})" for mt, (_, _, what) in SUPPORTED.items())


# ------------------------------------------------------------------------------------------- config
def _read_json(file: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"{file}: unreadable {what} ({str(exc).splitlines()[0] if str(exc) else exc!r})",
                             hint="the model directory is damaged; download it again") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{file}: {what} is not a JSON object", hint="the model directory is damaged")
    return data


def is_hf_dir(path: Path) -> bool:
    """A directory whose config.json names a model type or architectures (llmbuilder never writes one)."""
    cfg = path / "config.json"
    if not (path.is_dir() and cfg.is_file()):
        return False
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        # A damaged config.json still means a Hugging Face model when weights of that kind are beside it.
        return any((path / n).is_file() for n in ("model.safetensors", _INDEX, "pytorch_model.bin"))
    return isinstance(data, dict) and ("model_type" in data or "architectures" in data)


def read_config(directory: Path) -> dict[str, Any]:
    """A model directory's config.json as a dict (`ModelLoadError` when it is unreadable or not an object)."""
    return _read_json(directory / "config.json", "config.json")


def model_config(hf_config: Mapping[str, Any], source: str = "config.json") -> ModelConfig:
    """The validated config of a supported architecture, from config.json keys."""
    archs = hf_config.get("architectures") or []
    archs = [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []
    mt = hf_config.get("model_type")
    if not isinstance(mt, str):
        mt = None if mt is None else repr(mt)
    if mt is None:
        mt = next((_ARCHITECTURES[a] for a in archs if a in _ARCHITECTURES), None)
    if mt not in SUPPORTED:
        named = f"model type {mt!r}" + (f" ({', '.join(archs)})" if archs else "")
        raise ModelLoadError(f"{source}: {named} is not supported", hint=f"supported model types: {supported_list()}")
    if archs and not any(a in _ARCHITECTURES or a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise ModelLoadError(f"{source}: {', '.join(archs)} is not a text-generation model",
                             hint=f"use a *ForCausalLM checkpoint; supported model types: {supported_list()}")
    quant = hf_config.get("quantization_config")
    if isinstance(quant, Mapping) and quant.get("quant_method") not in (None, "gguf"):
        raise ModelLoadError(
            f"{source}: the weights are quantized with {quant.get('quant_method')!r}, which is not supported",
            hint="use the unquantized (float16/bfloat16/float32) model, or a GGUF file",
        )
    return SUPPORTED[mt][0].from_hf(hf_config, source)


# ------------------------------------------------------------------------------------------ weights
def _canonical(name: str, config: ModelConfig) -> str | None:
    """transformers' name for a stored tensor (base-model saves lack the prefix); None = not a weight."""
    if isinstance(config, GPT2Config):
        if name.endswith((".attn.bias", ".attn.masked_bias")):  # old causal-mask buffers
            return None
        return name if name.startswith(("transformer.", "lm_head.")) else "transformer." + name
    if name.endswith(".rotary_emb.inv_freq"):  # old saved buffer, recomputed
        return None
    return name if name.startswith(("model.", "lm_head.")) else "model." + name


_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)\.")


def check_layer_count(config: ModelConfig, stored: Iterable[str], source: str) -> None:
    """Refuse a config that declares more layers than the weights hold, before anything is built per layer
    (a config declaring ten million layers would otherwise take gigabytes just to list their names)."""
    layers = {m.group(1) for name in stored if (m := _LAYER_INDEX.search(name))}
    if config.n_layer > len(layers):
        raise ModelLoadError(
            f"{source}: {config.n_layer} layers declared, but the weights hold tensors of only {len(layers)}",
            hint="the config does not belong to these weights, or the file is damaged; download it again",
        )


def validate_shapes(config: ModelConfig, found: Mapping[str, tuple[int, ...]], source: str) -> dict[str, str]:
    """Check stored tensor names and shapes against the config → {transformers name: stored name}.

    Raises ModelLoadError naming the missing, unexpected or misshapen tensors.
    """
    check_layer_count(config, found, source)
    expected = config.tensor_shapes()
    names: dict[str, str] = {}
    unexpected = []
    for stored in found:
        canon = _canonical(stored, config)
        if canon is None:
            continue
        if canon == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied: the embedding is the head (as in transformers)
        if canon not in expected:
            unexpected.append(stored)
        else:
            names[canon] = stored
    missing = [k for k in expected if k not in names]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}" + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}"
                         + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else ""))
        hint = "the weights do not belong to this config.json, or the download is incomplete"
        if missing == ["lm_head.weight"] and not unexpected:
            hint = "the output head is missing: set tie_word_embeddings to true only if the model ties it"
        raise ModelLoadError(f"{source}: the weights do not match the config ({'; '.join(parts)})", hint=hint)
    for canon, stored in names.items():
        shape = tuple(found[stored])
        if shape != expected[canon]:
            raise ModelLoadError(
                f"{source}: tensor '{stored}' has shape {shape}, expected {expected[canon]} from the config",
                hint="the weights do not belong to this config.json (or the file is damaged)",
            )
    return names


def build_model(config: ModelConfig, state: Mapping[str, torch.Tensor]) -> Llama | GPT2 | Gemma3:
    """The inference model for a validated config and a state dict with transformers' names."""
    return SUPPORTED[config.model_type][1](config, state)


@dataclass
class HFDir:
    """What a Hugging Face model directory holds, read from its headers (no tensor data)."""

    directory: Path
    hf_config: dict[str, Any]
    config: ModelConfig
    files: tuple[Path, ...]  # the safetensors files, in file-name order
    names: dict[str, str]  # transformers name → stored name
    where: dict[str, Path]  # stored name → file
    stored_dtype: str  # e.g. "bfloat16", or "float32 (3 tensors), bfloat16 (290)" when mixed
    generation_config: dict[str, Any] = field(default_factory=dict)

    @property
    def file_size(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def _weight_files(directory: Path) -> list[Path]:
    index = directory / _INDEX
    single = directory / "model.safetensors"
    if index.is_file():
        data = _read_json(index, "safetensors index")
        weight_map = data.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelLoadError(f"{index}: no weight_map", hint="the model directory is damaged; download it again")
        files = sorted({str(v) for v in weight_map.values()})
        missing = [f for f in files if not (directory / f).is_file()]
        if missing:
            raise ModelLoadError(
                f"{directory}: shard {missing[0]} listed in {_INDEX} is missing"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                hint="the download is incomplete; fetch every model-*.safetensors file",
            )
        return [directory / f for f in files]
    if single.is_file():
        return [single]
    if (directory / "pytorch_model.bin").is_file() or (directory / "pytorch_model.bin.index.json").is_file():
        raise ModelLoadError(
            f"{directory} holds only pytorch_model.bin weights, which are not loaded: unpickling them can run code",
            hint="convert them once to safetensors, e.g. with transformers: "
            "AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)",
        )
    raise ModelLoadError(f"{directory} has a config.json but no model.safetensors or {_INDEX}",
                         hint="download the model's safetensors weights into that directory")


def _headers(files: list[Path]) -> tuple[dict[str, tuple[int, ...]], dict[str, str], dict[str, Path]]:
    """Shapes, dtypes and files of every stored tensor, from the safetensors headers only."""
    from safetensors import SafetensorError, safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    where: dict[str, Path] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for name in f.keys():
                    sl = f.get_slice(name)
                    shapes[name] = tuple(int(n) for n in sl.get_shape())
                    dtypes[name] = str(sl.get_dtype())
                    where[name] = file
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{file} is not a readable safetensors file ({str(exc).splitlines()[0]})",
                                 hint="the file is damaged or incomplete; download it again") from None
    return shapes, dtypes, where


def _dtype_summary(counts: Mapping[str, int]) -> str:
    if len(counts) == 1:
        return next(iter(counts))
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} ({n} tensor{'s' if n != 1 else ''})" for name, n in ranked)


def inspect_hf_dir(directory: Path) -> HFDir:
    """Read and validate everything but the tensor data."""
    hf_config = read_config(directory)
    config = model_config(hf_config, str(directory / "config.json"))
    files = _weight_files(directory)
    shapes, dtypes, where = _headers(files)
    names = validate_shapes(config, shapes, str(directory))
    counts: dict[str, int] = {}
    for canon, stored in names.items():
        dt = dtypes[stored]
        if dt not in DTYPE_NAMES:
            raise ModelLoadError(
                f"{where[stored]}: tensor '{stored}' is stored as {dt}, which cannot be run",
                hint="use a float16/bfloat16/float32 export of the model (or a GGUF file for quantized weights)",
            )
        counts[DTYPE_NAMES[dt]] = counts.get(DTYPE_NAMES[dt], 0) + 1
    gen_file = directory / "generation_config.json"
    gen = _read_json(gen_file, "generation_config.json") if gen_file.is_file() else {}
    return HFDir(directory=directory, hf_config=hf_config, config=config, files=tuple(files), names=names,
                 where=where, stored_dtype=_dtype_summary(counts), generation_config=gen)


# ------------------------------------------------------------------------------ generation defaults
def _ids(value: Any) -> list[int]:
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 0]


def eos_token_ids(generation_config: Mapping[str, Any], hf_config: Mapping[str, Any]) -> list[int]:
    """End-of-sequence ids the model declares: generation_config.json's ``eos_token_id`` (an int or a
    list), or config.json's when there is no generation config (transformers derives one from it)."""
    source = generation_config if "eos_token_id" in generation_config else hf_config
    return _ids(source.get("eos_token_id"))


def generation_defaults(generation_config: Mapping[str, Any]) -> dict[str, Any]:
    """Sampling defaults a model ships, as `GenerationConfig` field values: only the fields we share with
    transformers (temperature, top_k, top_p, repetition_penalty, do_sample, max_new_tokens), and only
    values that pass our validation (an invalid one is dropped, not fatal)."""
    out: dict[str, Any] = {}
    for name in _GENERATION_FIELDS:
        value = generation_config.get(name)
        if value is None:
            continue
        try:
            checked = GenerationConfig(**{name: value})
        except (ConfigError, TypeError, ValueError):
            continue
        out[name] = getattr(checked, name)
    return out
