"""Read a llama.cpp GGUF file into Hugging Face-named float tensors, an HF-style config and a tokenizer.

A GGUF file is a header (metadata key/values, then one info record per tensor) followed by aligned tensor
data, often block-quantized. This module turns it into what a transformers checkpoint would hold:

* `read_gguf_header` (in `header`) parses the header only: metadata and tensor records, every
  size and offset checked against the file size before anything large is allocated.
* `read_gguf` maps the tensors to transformers' names and checks their types and shapes, and rebuilds
  the tokenizer from ``tokenizer.ggml.*`` as a `tokenizers.Tokenizer` (`tokenizer`). The tensors
  come back as a lazy `GGUFState` (`state`): each is read when the model builder takes it,
  dequantized block by block (`quants`: our torch kernels for the common block formats, the
  ``gguf`` package's reference code for the rarer ones) with the row permutation llama.cpp's converter
  applies to Llama Q/K weights undone, so loading never holds the model twice.

Supported architectures: llama (Mistral files say llama too), qwen2, qwen3 (with its q/k norms), phi3 (fused
q|k|v and gate|up tensors, kept fused; its longrope factor tensors are refused), gpt2, gemma3 (text only;
its norm weights are stored as ``1 + weight`` and read back as transformers' ``weight``). Shapes in a GGUF are listed
fastest-varying first (ggml's ``ne`` order); here every shape is in torch/numpy order.

This module holds that entry point, the tensor-name and config mapping, and re-exports the public names
of the other three (`read_gguf_header`, `GGUFHeader`, `GGUFTensorInfo`, `dequantize`, `SUPPORTED_TYPES`).
"""

from __future__ import annotations

import math
import mmap
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ....errors import ModelLoadError, TokenizerError
from ...tokenizers.tokenizer import is_panic
from .header import (
    _CORRUPT_HINT,
    _TYPES,
    SUPPORTED_TYPES,
    GGUFHeader,
    GGUFTensorInfo,
    _type_name,
    read_gguf_header,
)
from .quants import _read_tensor, dequantize
from .state import Entry, GGUFState
from .tokenizer import _build_tokenizer

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "SUPPORTED_TYPES",
    "GGUFHeader",
    "GGUFModel",
    "GGUFTensorInfo",
    "GGUFTokenizer",
    "dequantize",
    "read_gguf",
    "read_gguf_header",
    "read_gguf_tokenizer",
]

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3", "phi3", "gpt2", "gemma3")


@dataclass
class GGUFModel:
    """Everything `read_gguf` recovers from one file, in transformers' vocabulary."""

    hf_config: dict  # config.json-style keys (model_type, hidden_size, ..., tie_word_embeddings)
    state_dict: GGUFState  # transformers tensor names and orientation, read in one dtype on lookup
    tokenizer: Any  # tokenizers.Tokenizer; encodes without BOS (see add_bos), decode can skip specials
    eos_ids: tuple[int, ...]  # eos_token_id, then eot/eom ids when the file names them
    bos_id: int | None
    add_bos: bool  # whether a prompt should start with bos_id (the file's flag, else llama.cpp's default)
    chat_template: str | None
    special_tokens: dict[str, str]  # {"bos_token": ..., "eos_token": ..., "unk_token"/"pad_token" if any}
    quantization: str  # e.g. "Q4_1 (210 tensors), F32 (61), Q8_0 (1)"
    metadata: dict = field(default_factory=dict)  # small scalar metadata (general.name, file_type, ...)


# ------------------------------------------------------------------------------------- names and config
_LLAMA_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
#: Qwen3: Llama's names plus the per-head query/key norms.
_QWEN3_BLOCK = {
    **_LLAMA_BLOCK,
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
}
#: Phi-3: q|k|v and gate|up each stored as one tensor (llama.cpp's ffn_up holds gate then up rows).
_PHI3_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_qkv.weight": "self_attn.qkv_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_up.weight": "mlp.gate_up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_LLAMA_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
_GEMMA3_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_norm.weight": "pre_feedforward_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
}
#: Gemma 3 defaults llama.cpp applies that the file does not store: every 6th layer attends globally, the
#: others through a sliding window with this rope base.
_GEMMA3_SLIDING_PATTERN = 6
_GEMMA3_LOCAL_ROPE_BASE = 10000.0
_GPT2_BLOCK = {
    "attn_norm.weight": "ln_1.weight",
    "attn_norm.bias": "ln_1.bias",
    "attn_qkv.weight": "attn.c_attn.weight",
    "attn_qkv.bias": "attn.c_attn.bias",
    "attn_output.weight": "attn.c_proj.weight",
    "attn_output.bias": "attn.c_proj.bias",
    "ffn_norm.weight": "ln_2.weight",
    "ffn_norm.bias": "ln_2.bias",
    "ffn_up.weight": "mlp.c_fc.weight",
    "ffn_up.bias": "mlp.c_fc.bias",
    "ffn_down.weight": "mlp.c_proj.weight",
    "ffn_down.bias": "mlp.c_proj.bias",
}
_GPT2_TOP = {
    "token_embd.weight": "transformer.wte.weight",
    "position_embd.weight": "transformer.wpe.weight",
    "output_norm.weight": "transformer.ln_f.weight",
    "output_norm.bias": "transformer.ln_f.bias",
}
# GGUF tensors with no transformers counterpart: llama.cpp's precomputed rope factors (read into
# rope_scaling instead) and the rotary tables of very old conversions.
_SKIPPED = re.compile(r"^(rope_freqs\.weight|blk\.\d+\.attn_rot_embd(\.weight)?)$")
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")


def _hf_name(arch: str, name: str, n_layers: int) -> str | None:
    """The transformers name of GGUF tensor ``name``, or None when it has none."""
    top, block, prefix = {
        "gpt2": (_GPT2_TOP, _GPT2_BLOCK, "transformer.h"),
        "gemma3": (_LLAMA_TOP, _GEMMA3_BLOCK, "model.layers"),
        "qwen3": (_LLAMA_TOP, _QWEN3_BLOCK, "model.layers"),
        "phi3": (_LLAMA_TOP, _PHI3_BLOCK, "model.layers"),
    }.get(arch, (_LLAMA_TOP, _LLAMA_BLOCK, "model.layers"))
    if name in top:
        return top[name]
    if name == "output.weight":
        return "lm_head.weight"
    m = _BLOCK.match(name)
    if m and int(m.group(1)) < n_layers and m.group(2) in block:
        return f"{prefix}.{m.group(1)}.{block[m.group(2)]}"
    return None


def _meta_int(meta: dict, key: str, default: int | None = None) -> int:
    value = meta.get(key, default)
    if isinstance(value, np.ndarray):  # per-layer values (some converters): fine when all equal
        if value.size == 0 or (value != value.flat[0]).any():
            raise ModelLoadError(f"{key} differs between layers", hint="models with per-layer shapes are not supported")
        value = value.flat[0]
    if value is None:
        raise ModelLoadError(f"GGUF metadata lacks {key}", hint=_CORRUPT_HINT)
    return int(value)


def _hf_config(header: GGUFHeader, arch: str) -> dict:
    meta, tensors = header.metadata, header.tensors
    key = lambda name: f"{arch}.{name}"  # noqa: E731
    embed = tensors.get("token_embd.weight")
    if embed is None:
        raise ModelLoadError(f"{header.path.name} has no token_embd.weight tensor", hint=_CORRUPT_HINT)
    hidden = _meta_int(meta, key("embedding_length"))
    n_layers = _meta_int(meta, key("block_count"))
    n_heads = _meta_int(meta, key("attention.head_count"))
    n_kv = _meta_int(meta, key("attention.head_count_kv"), n_heads)
    if n_heads <= 0 or n_kv <= 0 or n_heads % n_kv or n_layers <= 0 or hidden <= 0:
        raise ModelLoadError(
            f"{header.path.name}: impossible shape ({n_layers} layers, {n_heads} heads, {n_kv} kv heads)",
            hint=_CORRUPT_HINT,
        )
    head_dim = _meta_int(meta, key("attention.key_length"), hidden // n_heads)
    if head_dim <= 0 or (arch != "gpt2" and head_dim % 2):
        raise ModelLoadError(f"{header.path.name}: impossible head size {head_dim}", hint=_CORRUPT_HINT)
    tied = _is_tied(header)
    common = {
        "hidden_size": hidden,
        "intermediate_size": _meta_int(meta, key("feed_forward_length"), 4 * hidden),
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "max_position_embeddings": _meta_int(meta, key("context_length"), 2048),
        "vocab_size": embed.shape[0],
        "tie_word_embeddings": tied,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
    }
    if arch == "gpt2":
        return {
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            **common,
            "n_embd": hidden,
            "n_layer": n_layers,
            "n_head": n_heads,
            "n_inner": common["intermediate_size"],
            "n_positions": common["max_position_embeddings"],
            "n_ctx": common["max_position_embeddings"],
            "layer_norm_epsilon": float(meta.get(key("attention.layer_norm_epsilon"), 1e-5)),
            "activation_function": "gelu_new",
        }
    rope_dims = _meta_int(meta, key("rope.dimension_count"), head_dim)
    if rope_dims != head_dim:
        raise ModelLoadError(
            f"{header.path.name}: rotary embedding on {rope_dims} of {head_dim} head dimensions",
            hint="partial rotary embeddings are not supported for this architecture",
        )
    if arch == "gemma3":
        return _gemma3_config(header, common)
    if "rope_factors_long.weight" in tensors or "rope_factors_short.weight" in tensors:
        raise ModelLoadError(f"{header.path.name}: RoPE scaling type 'longrope' is not supported",
                             hint="supported rope scaling: none, linear, yarn, llama3")
    theta = float(meta.get(key("rope.freq_base"), 10000.0))
    has_bias = "blk.0.attn_q.bias" in tensors
    window = meta.get(key("attention.sliding_window"))
    extra = {"sliding_window": int(window)} if arch == "phi3" and window is not None else {}
    return {
        "model_type": arch,
        "architectures": [_ARCH_CLASSES.get(arch, "LlamaForCausalLM")],
        **extra,
        **common,
        "hidden_act": "silu",
        "rms_norm_eps": float(meta.get(key("attention.layer_norm_rms_epsilon"), 1e-6)),
        "rope_theta": theta,
        "rope_scaling": _rope_scaling(header, arch, theta, head_dim),
        "attention_bias": True if arch == "qwen2" else has_bias,
    }


_ARCH_CLASSES = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "phi3": "Phi3ForCausalLM"}


def _gemma3_config(header: GGUFHeader, common: dict) -> dict:
    """A ``gemma3_text`` config.json from a gemma3 GGUF header, as llama.cpp runs the file: queries scaled
    by ``head_dim ** -0.5``, sliding layers with their own rope base (``rope.freq_base_swa``, else 10000).
    (For the 27B model llama.cpp scales queries by ``(hidden / heads) ** -0.5`` instead; this reader does
    not single it out and has not been checked against it.)"""
    meta = header.metadata
    key = lambda name: f"gemma3.{name}"  # noqa: E731
    theta = float(meta.get(key("rope.freq_base"), 1_000_000.0))
    config = {
        "model_type": "gemma3_text",
        "architectures": ["Gemma3ForCausalLM"],
        **common,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": float(meta.get(key("attention.layer_norm_rms_epsilon"), 1e-6)),
        "rope_theta": theta,
        "rope_scaling": _rope_scaling(header, "gemma3", theta, common["head_dim"]),
        "rope_local_base_freq": float(meta.get(key("rope.freq_base_swa"), _GEMMA3_LOCAL_ROPE_BASE)),
        "sliding_window": _meta_int(meta, key("attention.sliding_window"), 4096),
        "sliding_window_pattern": _GEMMA3_SLIDING_PATTERN,
        "query_pre_attn_scalar": common["head_dim"],
    }
    cap = meta.get(key("final_logit_softcapping"))
    if cap is not None:
        config["final_logit_softcapping"] = float(cap)
    return config


def _expected_shape(c: dict, hf: str) -> tuple[int, ...]:
    """The shape tensor ``hf`` must have as stored in the GGUF (torch order, before any transpose)."""
    h, f, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    q, kv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    last = hf.rsplit(".", 2)
    part, kind = last[-2], last[-1]
    if c["model_type"] == "gpt2":
        matrices = {"attn.c_attn": (3 * h, h), "attn.c_proj": (h, h), "mlp.c_fc": (f, h), "mlp.c_proj": (h, f)}
        for key, (out, inp) in matrices.items():  # stored (out, in); transposed to Conv1D's (in, out) later
            if f".{key}." in hf:
                return (out, inp) if kind == "weight" else (out,)
        if part in ("wte", "lm_head"):
            return (v, h)
        return (c["max_position_embeddings"], h) if part == "wpe" else (h,)
    rows = {"q_proj": q, "k_proj": kv, "v_proj": kv, "o_proj": h, "gate_proj": f, "up_proj": f, "down_proj": h,
            "qkv_proj": q + 2 * kv, "gate_up_proj": 2 * f}
    cols = {"o_proj": q, "down_proj": f}
    if part in rows:
        return (rows[part], cols.get(part, h)) if kind == "weight" else (rows[part],)
    if part in ("embed_tokens", "lm_head"):
        return (v, h)
    if part in ("q_norm", "k_norm"):
        return (c["head_dim"],)
    return (h,)  # the norms


def _is_tied(header: GGUFHeader) -> bool:
    """Tied unless the file has its own output.weight that differs from the embedding (GPT-2 files
    repeat the embedding as output.weight, byte for byte)."""
    out, embed = header.tensors.get("output.weight"), header.tensors["token_embd.weight"]
    if out is None:
        return True
    if (out.type_id, out.shape, out.nbytes) != (embed.type_id, embed.shape, embed.nbytes) or out.nbytes < 0:
        return False
    chunk = 1 << 20
    with open(header.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for start in range(0, out.nbytes, chunk):  # stops at the first difference, usually the first chunk
            n = min(chunk, out.nbytes - start)
            if mm[out.offset + start : out.offset + start + n] != mm[embed.offset + start : embed.offset + start + n]:
                return False
    return True


def _rope_scaling(header: GGUFHeader, arch: str, theta: float, head_dim: int) -> dict | None:
    meta = header.metadata
    kind = meta.get(f"{arch}.rope.scaling.type")
    factor = meta.get(f"{arch}.rope.scaling.factor", meta.get(f"{arch}.rope.scale_linear"))
    original = meta.get(f"{arch}.rope.scaling.original_context_length")
    if kind in (None, "none"):
        if "rope_freqs.weight" in header.tensors:
            return _llama3_scaling(header, theta, head_dim)
        if kind is None and factor is not None and float(factor) != 1.0:  # old files: rope.scale_linear only
            return {"rope_type": "linear", "factor": float(factor)}
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(factor or 1.0)}
    if kind == "yarn":
        scaling: dict[str, Any] = {"rope_type": "yarn", "factor": float(factor or 1.0)}
        if original is not None:
            scaling["original_max_position_embeddings"] = int(original)
        for gguf_key, hf_key in (
            ("yarn_beta_fast", "beta_fast"),
            ("yarn_beta_slow", "beta_slow"),
            ("attn_factor", "attention_factor"),
        ):
            if f"{arch}.rope.scaling.{gguf_key}" in meta:
                scaling[hf_key] = float(meta[f"{arch}.rope.scaling.{gguf_key}"])
        return scaling
    raise ModelLoadError(
        f"{header.path.name} uses {kind!r} rope scaling", hint="supported rope scaling: none, linear, yarn, llama3"
    )


def _llama3_scaling(header: GGUFHeader, theta: float, head_dim: int) -> dict | None:
    """Recover Llama 3.1-style rope scaling from the per-frequency divisors llama.cpp stores instead.

    transformers divides each rotary frequency by 1 (short wavelengths), by ``factor`` (long ones), or
    by a blend in between whose weight is linear in 1/wavelength. Fitting that line gives the
    parameters up to one degree of freedom, fixed by ``low_freq_factor = 1`` (every Llama 3.x model);
    the result is checked by recomputing the divisors.
    """
    info = header.tensors["rope_freqs.weight"]
    if info.nbytes < 0 or math.prod(info.shape) != head_dim // 2:
        raise ModelLoadError(f"{header.path.name}: rope_freqs.weight has an unexpected shape", hint=_CORRUPT_HINT)
    with open(header.path, "rb") as f:
        divisors = _read_tensor(f, info, header.path).double().flatten()  # (head_dim/2,)
    inv_wavelen = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim) / (2 * math.pi)
    factor = float(divisors.max())
    if factor <= 1.0 + 1e-6:
        return None
    mid = (divisors > 1 + 1e-4) & (divisors < factor * (1 - 1e-4))
    params: dict[str, Any] = {"factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 8192}
    if int(mid.sum()) >= 2:
        smooth = (1 / divisors[mid] - 1 / factor) / (1 - 1 / factor)  # = a / wavelen + b
        a_mat = torch.stack([inv_wavelen[mid], torch.ones_like(smooth)], dim=1)
        a, b = torch.linalg.lstsq(a_mat, smooth[:, None]).solution.flatten().tolist()
        if b < 0:
            high = 1 - 1 / b  # low_freq_factor = 1
            params["high_freq_factor"] = round(high, 4)
            params["original_max_position_embeddings"] = round(a * (high - 1))
    if not torch.allclose(_llama3_divisors(params, inv_wavelen), divisors, rtol=1e-3, atol=1e-4):
        raise ModelLoadError(
            f"{header.path.name}: cannot express its rope_freqs as llama3 rope scaling",
            hint="this rope variant is not supported",
        )
    return {"rope_type": "llama3", **params}


def _llama3_divisors(p: dict, inv_wavelen: torch.Tensor) -> torch.Tensor:
    low_wl = p["original_max_position_embeddings"] / p["low_freq_factor"]
    high_wl = p["original_max_position_embeddings"] / p["high_freq_factor"]
    wavelen = 1 / inv_wavelen
    smooth = (p["original_max_position_embeddings"] * inv_wavelen - p["low_freq_factor"]) / (
        p["high_freq_factor"] - p["low_freq_factor"]
    )
    blended = 1 / ((1 - smooth) / p["factor"] + smooth)
    out = torch.where(wavelen < high_wl, torch.ones_like(wavelen), blended)
    return torch.where(wavelen > low_wl, torch.full_like(wavelen, p["factor"]), out)


# ----------------------------------------------------------------------------------------- read_gguf
def read_gguf(path: Path, *, dtype: torch.dtype, device: torch.device | str = "cpu") -> GGUFModel:
    """Read a GGUF model file: config, tokenizer, token ids, and its tensors with transformers' names as a
    lazy `GGUFState` (each read in ``dtype`` onto ``device`` when looked up; the header alone is checked here).

    Raises `ModelLoadError` for files that are not GGUF, damaged, of an unsupported architecture or with
    an unsupported tensor type, and `TokenizerError` for a tokenizer this module cannot rebuild.
    """
    path = Path(path)
    header = read_gguf_header(path)
    meta, name = header.metadata, path.name
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelLoadError(
            f"{name} is a {arch!r} model", hint=f"supported GGUF architectures: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    try:
        config = _hf_config(header, arch)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ModelLoadError(f"{name}: malformed model metadata ({exc})", hint=_CORRUPT_HINT) from None
    n_layers = config["num_hidden_layers"]

    plan: list[tuple[GGUFTensorInfo, str]] = []  # (GGUF tensor, transformers name)
    for info in header.tensors.values():
        if _SKIPPED.match(info.name):
            continue
        if info.name == "output.weight" and config["tie_word_embeddings"]:
            continue
        hf = _hf_name(arch, info.name, n_layers)
        if hf is None:
            raise ModelLoadError(
                f"{name}: unexpected tensor {info.name} for a {arch} model", hint="this variant is not supported"
            )
        if info.type_id not in _TYPES:
            raise ModelLoadError(
                f"{name}: tensor {info.name} has type {info.type_name}",
                hint=f"supported tensor types: {', '.join(SUPPORTED_TYPES)}",
            )
        want = _expected_shape(config, hf)
        if info.shape != want:
            raise ModelLoadError(
                f"{name}: tensor {info.name} has shape {list(info.shape)}, the metadata implies {list(want)}",
                hint=_CORRUPT_HINT,
            )
        plan.append((info, hf))
    layers = {int(m.group(1)) for t in header.tensors if (m := re.match(r"blk\.(\d+)\.", t))}
    if n_layers > len(layers):  # before any per-layer list is built: 10^8 declared layers would take GBs
        raise ModelLoadError(f"{name}: {n_layers} layers declared, but the file holds tensors of only "
                             f"{len(layers)}", hint=_CORRUPT_HINT)
    _check_complete(config, arch, {hf for _, hf in plan}, name)
    tok = read_gguf_tokenizer(meta, name)

    n_heads, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    entries: dict[str, Entry] = {}
    for info, hf in plan:
        if arch == "llama" and hf.endswith(("q_proj.weight", "q_proj.bias")):
            entries[hf] = Entry(info, "unpermute", n_heads)
        elif arch == "llama" and hf.endswith(("k_proj.weight", "k_proj.bias")):
            entries[hf] = Entry(info, "unpermute", n_kv)
        elif arch == "gpt2" and hf.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            entries[hf] = Entry(info, "transpose")  # (out, in) -> transformers' Conv1D (in, out)
        elif arch == "gemma3" and hf.endswith("norm.weight"):
            entries[hf] = Entry(info, "minus_one")  # stored 1 + w; the model adds the 1 back, as transformers
        else:
            entries[hf] = Entry(info)
    state = GGUFState(path, entries, dtype=dtype, device=device)
    return GGUFModel(
        hf_config=config,
        state_dict=state,
        tokenizer=tok.tokenizer,
        eos_ids=tok.eos_ids,
        bos_id=tok.bos_id,
        add_bos=tok.add_bos,
        chat_template=tok.chat_template,
        special_tokens=tok.special_tokens,
        quantization=_summary(t.type_id for t, _ in plan),
        metadata=_small_metadata(header),
    )


@dataclass
class GGUFTokenizer:
    """The tokenizer a GGUF file carries (``tokenizer.ggml.*``), with its special ids and chat template."""

    tokenizer: Any  # tokenizers.Tokenizer
    eos_ids: tuple[int, ...]
    bos_id: int | None
    add_bos: bool
    chat_template: str | None
    special_tokens: dict[str, str]


def read_gguf_tokenizer(meta: dict, name: str) -> GGUFTokenizer:
    """Rebuild the tokenizer of a GGUF file from its metadata alone (whatever the architecture).

    Raises `TokenizerError` for a missing vocabulary or a tokenizer model this module cannot rebuild."""
    try:
        tokenizer, adds_bos = _build_tokenizer(meta, name)
    except (ModelLoadError, TokenizerError):
        raise
    except BaseException as exc:  # tokenizers raises plain Exceptions for inconsistent vocabularies, or panics
        if not isinstance(exc, Exception) and not is_panic(exc):
            raise
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TokenizerError(f"{name}: cannot rebuild the tokenizer: {text}", hint=_CORRUPT_HINT) from None
    tokens = meta["tokenizer.ggml.tokens"]
    ids = {k: _token_id(meta, f"tokenizer.ggml.{k}_token_id", name)
           for k in ("bos", "eos", "eot", "eom", "unknown", "padding")}
    ids = {k: v for k, v in ids.items() if v is not None and 0 <= v < len(tokens)}
    special = {
        f"{label}_token": tokens[ids[k]]
        for label, k in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding"))
        if k in ids
    }
    add_bos = meta.get("tokenizer.ggml.add_bos_token")
    template = meta.get("tokenizer.chat_template")
    return GGUFTokenizer(
        tokenizer=tokenizer,
        eos_ids=tuple(dict.fromkeys(ids[k] for k in ("eos", "eot", "eom") if k in ids)),
        bos_id=ids.get("bos"),
        add_bos=bool(adds_bos if add_bos is None else add_bos) and "bos" in ids,
        chat_template=template if isinstance(template, str) else None,
        special_tokens=special,
    )


def _token_id(meta: dict, key: str, file: str) -> int | None:
    """A special token id from the metadata: a whole number, or absent."""
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ModelLoadError(f"{file}: {key} must be a whole number (got {str(value)[:40]!r})", hint=_CORRUPT_HINT)
    return int(value)


def _check_complete(config: dict, arch: str, names: set[str], file: str) -> None:
    n = config["num_hidden_layers"]
    if arch == "gpt2":
        wanted = [*_GPT2_TOP.values()] + [f"transformer.h.{i}.{v}" for i in range(n) for v in _GPT2_BLOCK.values()]
    elif arch == "gemma3":
        wanted = [*_LLAMA_TOP.values()] + [f"model.layers.{i}.{v}" for i in range(n) for v in _GEMMA3_BLOCK.values()]
    else:
        layer = {"qwen3": _QWEN3_BLOCK, "phi3": _PHI3_BLOCK}.get(arch, _LLAMA_BLOCK)
        block = [v for k, v in layer.items() if k.endswith("weight")]
        if config["attention_bias"]:
            block += [f"self_attn.{p}_proj.bias" for p in ("q", "k", "v")]
        wanted = [*_LLAMA_TOP.values()] + [f"model.layers.{i}.{v}" for i in range(n) for v in block]
    if not config["tie_word_embeddings"]:
        wanted.append("lm_head.weight")
    missing = [w for w in wanted if w not in names]
    if missing:
        raise ModelLoadError(
            f"{file} lacks tensor {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
            hint=_CORRUPT_HINT,
        )


def _summary(type_ids: Any) -> str:
    counts = Counter(_type_name(t) for t in type_ids).most_common()
    return ", ".join(
        f"{name} ({count} tensors)" if i == 0 else f"{name} ({count})" for i, (name, count) in enumerate(counts)
    )


def _small_metadata(header: GGUFHeader) -> dict:
    """Scalar metadata, short strings and short arrays only (no vocabulary, no chat template)."""
    out: dict[str, Any] = {"gguf.version": header.version, "gguf.tensor_count": len(header.tensors)}
    for key, value in header.metadata.items():
        if key == "tokenizer.chat_template":
            continue
        if isinstance(value, str) and len(value) <= 256:
            out[key] = value
        elif isinstance(value, (bool, int, float)):
            out[key] = value
        elif isinstance(value, np.ndarray) and value.size <= 16:
            out[key] = value.tolist()
        elif isinstance(value, list) and len(value) <= 16 and all(isinstance(v, str) for v in value):
            out[key] = list(value)
    return out
