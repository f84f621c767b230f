"""Read a llama.cpp GGUF file into Hugging Face-named float tensors, an HF-style config and a tokenizer.

A GGUF file is a header (metadata key/values, then one info record per tensor) followed by aligned tensor
data, often block-quantized. This module turns it into what a transformers checkpoint would hold:

* `read_gguf_header` parses the header only: metadata and tensor records, every size and offset checked
  against the file size before anything large is allocated. (Our own parser: the ``gguf`` package's
  reader builds one numpy view per vocabulary string, ~2 s for a 49k vocabulary; this takes ~0.05 s.)
* `read_gguf` reads the tensors, dequantizes them (our torch kernels for the common block formats, the
  ``gguf`` package's reference code for the rarer ones), renames them to transformers' names, undoes
  the row permutation llama.cpp's converter applies to Llama Q/K weights, and rebuilds the tokenizer
  from ``tokenizer.ggml.*`` as a `tokenizers.Tokenizer`.

Supported architectures: llama (Mistral files say llama too), qwen2, gpt2. Shapes in a GGUF are listed
fastest-varying first (ggml's ``ne`` order); here every shape is in torch/numpy order.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import re
import struct
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelLoadError, TokenizerError

__all__ = ["SUPPORTED_TYPES", "GGUFHeader", "GGUFModel", "GGUFTensorInfo", "read_gguf", "read_gguf_header"]

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "gpt2")

# ---------------------------------------------------------------------------------------- tensor types
# ggml type id -> (name, elements per block, bytes per block) for the types this module can read.
_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    20: ("IQ4_NL", 32, 18),
    23: ("IQ4_XS", 256, 136),
    30: ("BF16", 1, 2),
}
SUPPORTED_TYPES = tuple(name for name, _, _ in _TYPES.values())

# ------------------------------------------------------------------------------------ header constants
_MAGIC = b"GGUF"
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_STRING, _ARRAY = 8, 9
# GGUF value type id -> (struct format, numpy dtype) for fixed-size scalars.
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("<B", "<u1"),
    1: ("<b", "<i1"),
    2: ("<H", "<u2"),
    3: ("<h", "<i2"),
    4: ("<I", "<u4"),
    5: ("<i", "<i4"),
    6: ("<f", "<f4"),
    7: ("<?", "<u1"),
    10: ("<Q", "<u8"),
    11: ("<q", "<i8"),
    12: ("<d", "<f8"),
}
_MAX_DIMS = 4  # ggml tensors have at most four dimensions
_DEFAULT_ALIGNMENT = 32
_CORRUPT_HINT = "the file is damaged or incomplete; download it again"


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    shape: tuple[int, ...]  # torch order (slowest-varying first), i.e. the GGUF dims reversed
    type_id: int  # ggml type id
    offset: int  # absolute byte offset of the data in the file
    nbytes: int  # -1 when the type is unknown to this module

    @property
    def type_name(self) -> str:
        return _type_name(self.type_id)


@dataclass
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]  # every key/value; string arrays as lists, numeric arrays as numpy arrays
    tensors: dict[str, GGUFTensorInfo]  # in file order
    file_size: int


@dataclass
class GGUFModel:
    """Everything `read_gguf` recovers from one file, in transformers' vocabulary."""

    hf_config: dict  # config.json-style keys (model_type, hidden_size, ..., tie_word_embeddings)
    state_dict: dict[str, torch.Tensor]  # transformers tensor names and orientation, all in one dtype
    tokenizer: Any  # tokenizers.Tokenizer; encodes without BOS (see add_bos), decode can skip specials
    eos_ids: tuple[int, ...]  # eos_token_id, then eot/eom ids when the file names them
    bos_id: int | None
    add_bos: bool  # whether a prompt should start with bos_id (the file's flag, else llama.cpp's default)
    chat_template: str | None
    special_tokens: dict[str, str]  # {"bos_token": ..., "eos_token": ..., "unk_token"/"pad_token" if any}
    quantization: str  # e.g. "Q4_1 (210 tensors), F32 (61), Q8_0 (1)"
    metadata: dict = field(default_factory=dict)  # small scalar metadata (general.name, file_type, ...)


class _Corrupt(Exception):
    """Internal: the header contradicts itself or the file size (turned into a ModelLoadError)."""


def _type_name(type_id: int) -> str:
    if type_id in _TYPES:
        return _TYPES[type_id][0]
    try:
        from gguf import GGMLQuantizationType

        return GGMLQuantizationType(type_id).name
    except (ImportError, ValueError):  # gguf missing, or an id newer than it knows
        return f"type {type_id}"


# ------------------------------------------------------------------------------------------- the header
class _Cursor:
    """Bounds-checked little-endian reads from a buffer (an mmap of the file)."""

    def __init__(self, buf: Any, size: int) -> None:
        self.buf, self.size, self.pos = buf, size, 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or n > self.size - self.pos:
            raise _Corrupt(f"{what} runs past the end of the file (needs {n} bytes at offset {self.pos})")

    def u32(self) -> int:
        self.need(4, "a 32-bit field")
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self) -> int:
        self.need(8, "a 64-bit field")
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def string(self) -> str:
        n = self.u64()
        self.need(n, "a string")
        text = bytes(self.buf[self.pos : self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return text

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            fmt = _SCALARS[vtype][0]
            size = struct.calcsize(fmt)
            self.need(size, "a value")
            (v,) = struct.unpack_from(fmt, self.buf, self.pos)
            self.pos += size
            return v
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            if depth > 2:
                raise _Corrupt("arrays nested too deeply")
            etype = self.u32()
            count = self.u64()
            if etype in _SCALARS:
                dtype = np.dtype(_SCALARS[etype][1])
                self.need(count * dtype.itemsize, "an array")
                arr = np.frombuffer(bytes(self.buf[self.pos : self.pos + count * dtype.itemsize]), dtype=dtype)
                self.pos += count * dtype.itemsize
                return arr.astype(bool) if etype == 7 else arr
            if etype == _STRING:
                self.need(count * 8, "a string array")  # every string costs at least its 8-byte length
                return self._strings(count)
            if etype == _ARRAY:
                self.need(count * 12, "an array of arrays")
                return [self.value(_ARRAY, depth + 1) for _ in range(count)]
            raise _Corrupt(f"unknown array element type {etype}")
        raise _Corrupt(f"unknown value type {vtype}")

    def _strings(self, count: int) -> list[str]:
        buf, size, pos, out = self.buf, self.size, self.pos, []
        unpack = _U64.unpack_from
        for _ in range(count):
            if pos + 8 > size:
                raise _Corrupt("a string array runs past the end of the file")
            (n,) = unpack(buf, pos)
            pos += 8
            if n > size - pos:
                raise _Corrupt("a string array runs past the end of the file")
            out.append(buf[pos : pos + n].decode("utf-8", errors="replace"))
            pos += n
        self.pos = pos
        return out


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """Parse a GGUF header: metadata and tensor records, each checked against the file size.

    Raises `ModelLoadError` (one line) for a file that is not GGUF, is truncated, or whose sizes and
    offsets point outside the file. Reads no tensor data.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            if size < 24:
                raise ModelLoadError(
                    f"{path.name} is not a GGUF file (only {size} bytes)", hint="pass a .gguf model file"
                )
            head = f.read(4)
            if head != _MAGIC:
                raise ModelLoadError(
                    f"{path.name} is not a GGUF file (it does not start with 'GGUF')", hint="pass a .gguf model file"
                )
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return _parse_header(path, mm, size)
    except OSError as exc:
        hint = "check the path and its permissions"
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}", hint=hint) from None
    except _Corrupt as exc:
        raise ModelLoadError(f"{path.name}: corrupt GGUF header: {exc}", hint=_CORRUPT_HINT) from None
    except (struct.error, ValueError, OverflowError, MemoryError) as exc:
        raise ModelLoadError(f"{path.name}: corrupt GGUF header: {exc}", hint=_CORRUPT_HINT) from None


def _parse_header(path: Path, mm: Any, size: int) -> GGUFHeader:
    cur = _Cursor(mm, size)
    cur.pos = 4
    version = cur.u32()
    if version not in (2, 3):
        if version & 0xFFFF == 0 and (version >> 24) in (2, 3):
            raise ModelLoadError(
                f"{path.name} is a big-endian GGUF file", hint="use the little-endian version of the model"
            )
        if version == 1:
            hint = "convert the model again with a recent llama.cpp"
            raise ModelLoadError(f"{path.name} is a GGUF version 1 file (too old)", hint=hint)
        raise _Corrupt(f"unknown GGUF version {version}")
    n_tensors, n_kv = cur.u64(), cur.u64()
    cur.need(n_kv * 13, f"{n_kv} metadata entries")  # key length 8 + at least 1 byte + type 4
    cur.need(n_tensors * 24, f"{n_tensors} tensor records")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        if key in metadata:
            raise _Corrupt(f"metadata key {key!r} appears twice")
        metadata[key] = cur.value(cur.u32())

    records = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.u32()
        if not 1 <= n_dims <= _MAX_DIMS:
            raise _Corrupt(f"tensor {name!r} has {n_dims} dimensions")
        dims = [cur.u64() for _ in range(n_dims)]
        type_id, offset = cur.u32(), cur.u64()
        records.append((name, dims, type_id, offset))

    alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise _Corrupt(f"general.alignment is {alignment!r}, not a power of two")
    data_start = -(-cur.pos // alignment) * alignment

    tensors: dict[str, GGUFTensorInfo] = {}
    for name, dims, type_id, offset in records:
        if name in tensors:
            raise _Corrupt(f"tensor {name!r} appears twice")
        n = math.prod(dims)
        nbytes = -1
        if type_id in _TYPES:
            _, block, block_bytes = _TYPES[type_id]
            if dims[0] % block:
                raise _Corrupt(f"tensor {name!r}: row length {dims[0]} is not a multiple of the block size {block}")
            nbytes = n // block * block_bytes
            if data_start + offset + nbytes > size:
                raise _Corrupt(
                    f"tensor {name!r} ({nbytes} bytes at offset {offset}) lies past the end of the file "
                    f"({size} bytes)"
                )
        elif data_start + offset > size:
            raise _Corrupt(f"tensor {name!r} starts past the end of the file")
        tensors[name] = GGUFTensorInfo(name, tuple(reversed(dims)), type_id, data_start + offset, nbytes)
    return GGUFHeader(path=path, version=version, metadata=metadata, tensors=tensors, file_size=size)


# ------------------------------------------------------------------------------------- dequantization
def _f16(raw: torch.Tensor, start: int) -> torch.Tensor:
    """The float16 at byte ``start`` of every block, as float32. raw: (N, block_bytes) uint8 -> (N, 1)"""
    return raw[:, start : start + 2].contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """(N, 16) packed bytes -> (N, 32) values: the low nibbles are elements 0..15, the high ones 16..31."""
    return torch.cat([qs & 0x0F, qs >> 4], dim=1)


def _bits32(qh: torch.Tensor) -> torch.Tensor:
    """(N, 4) bytes of a little-endian uint32 -> (N, 32) bits, bit i for element i."""
    shifts = torch.arange(8, dtype=torch.uint8)
    return ((qh[:, :, None] >> shifts) & 1).reshape(qh.shape[0], 32)


def _q8_0(raw: torch.Tensor) -> torch.Tensor:  # block: f16 d, int8 q[32]; x = d * q
    return _f16(raw, 0) * raw[:, 2:].contiguous().view(torch.int8).float()


def _q4_0(raw: torch.Tensor) -> torch.Tensor:  # block: f16 d, 16 bytes of nibbles; x = d * (q - 8)
    return _f16(raw, 0) * (_nibbles(raw[:, 2:18]).float() - 8)


def _q4_1(raw: torch.Tensor) -> torch.Tensor:  # block: f16 d, f16 m, 16 bytes of nibbles; x = d * q + m
    return _f16(raw, 0) * _nibbles(raw[:, 4:20]).float() + _f16(raw, 2)


def _q5_0(raw: torch.Tensor) -> torch.Tensor:  # block: f16 d, u32 high bits, nibbles; x = d * (q - 16)
    q = _nibbles(raw[:, 6:22]) | (_bits32(raw[:, 2:6]) << 4)
    return _f16(raw, 0) * (q.float() - 16)


def _q5_1(raw: torch.Tensor) -> torch.Tensor:  # block: f16 d, f16 m, u32 high bits, nibbles; x = d * q + m
    q = _nibbles(raw[:, 8:24]) | (_bits32(raw[:, 4:8]) << 4)
    return _f16(raw, 0) * q.float() + _f16(raw, 2)


def _k_scales(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 six-bit scales and 8 six-bit mins packed in 12 bytes (Q4_K, Q5_K). s: (N, 12) -> 2 x (N, 8)"""
    sc = torch.cat([s[:, 0:4] & 63, (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)], dim=1)
    mn = torch.cat([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], dim=1)
    return sc.float(), mn.float()


def _k_low_nibbles(qs: torch.Tensor) -> torch.Tensor:
    """(N, 128) bytes -> (N, 8, 32): byte chunk c holds sub-block 2c in its low and 2c+1 in its high nibbles."""
    chunks = qs.reshape(-1, 4, 32)  # (N, 4, 32)
    return torch.stack([chunks & 0x0F, chunks >> 4], dim=2).reshape(-1, 8, 32)


def _q4_k(raw: torch.Tensor) -> torch.Tensor:  # f16 d, f16 dmin, 12 bytes scales/mins, 128 bytes nibbles
    sc, mn = _k_scales(raw[:, 4:16])  # (N, 8) each
    q = _k_low_nibbles(raw[:, 16:144]).float()  # (N, 8, 32)
    x = (_f16(raw, 0) * sc)[:, :, None] * q - (_f16(raw, 2) * mn)[:, :, None]
    return x.reshape(-1, 256)


def _q5_k(raw: torch.Tensor) -> torch.Tensor:  # like Q4_K plus 32 bytes of fifth bits (bit k: sub-block k)
    sc, mn = _k_scales(raw[:, 4:16])
    qh = raw[:, 16:48]  # (N, 32)
    high = (qh[:, None, :] >> torch.arange(8, dtype=torch.uint8)[None, :, None]) & 1  # (N, 8, 32)
    q = (_k_low_nibbles(raw[:, 48:176]) | (high << 4)).float()
    x = (_f16(raw, 0) * sc)[:, :, None] * q - (_f16(raw, 2) * mn)[:, :, None]
    return x.reshape(-1, 256)


def _q6_k(raw: torch.Tensor) -> torch.Tensor:  # 128 bytes low nibbles, 64 bytes 2-bit highs, int8 scales[16], f16 d
    ql = raw[:, 0:128].reshape(-1, 2, 2, 32)  # (N, half, 2, 32)
    qh = raw[:, 128:192].reshape(-1, 2, 32)  # (N, half, 32)
    low = torch.stack([ql[:, :, 0] & 0x0F, ql[:, :, 1] & 0x0F, ql[:, :, 0] >> 4, ql[:, :, 1] >> 4], dim=2)
    high = torch.stack([qh & 3, (qh >> 2) & 3, (qh >> 4) & 3, (qh >> 6) & 3], dim=2)  # (N, half, 4, 32)
    q = ((low | (high << 4)).to(torch.int16) - 32).reshape(-1, 16, 16).float()  # 16 groups of 16 elements
    scales = raw[:, 192:208].contiguous().view(torch.int8).float()  # (N, 16)
    return (_f16(raw, 208) * scales)[:, :, None].mul(q).reshape(-1, 256)


_KERNELS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Q8_0": _q8_0,
    "Q4_0": _q4_0,
    "Q4_1": _q4_1,
    "Q5_0": _q5_0,
    "Q5_1": _q5_1,
    "Q4_K": _q4_k,
    "Q5_K": _q5_k,
    "Q6_K": _q6_k,
}


def dequantize(raw: torch.Tensor, type_id: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Bytes of one tensor -> float32 (or its stored float type for F16/BF16) of ``shape``."""
    name, _, block_bytes = _TYPES[type_id]
    if name == "F32":
        return raw.view(torch.float32).reshape(shape)
    if name == "F16":
        return raw.view(torch.float16).reshape(shape)
    if name == "BF16":
        return raw.view(torch.bfloat16).reshape(shape)
    blocks = raw.reshape(-1, block_bytes)  # (n_blocks, block_bytes)
    kernel = _KERNELS.get(name)
    if kernel is not None:
        return kernel(blocks).reshape(shape)
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as reference

    values = reference(blocks.numpy(), GGMLQuantizationType(type_id))  # (n_blocks, block) float32
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(shape)


def _read_tensor(f: Any, info: GGUFTensorInfo, path: Path) -> torch.Tensor:
    raw = torch.empty(info.nbytes, dtype=torch.uint8)
    f.seek(info.offset)
    if f.readinto(raw.numpy()) != info.nbytes:
        raise ModelLoadError(f"{path.name}: tensor {info.name} is cut short", hint=_CORRUPT_HINT)
    return dequantize(raw, info.type_id, info.shape)


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
_LLAMA_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
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
    top, block, prefix = (
        (_GPT2_TOP, _GPT2_BLOCK, "transformer.h") if arch == "gpt2" else (_LLAMA_TOP, _LLAMA_BLOCK, "model.layers")
    )
    if name in top:
        return top[name]
    if name == "output.weight":
        return "lm_head.weight"
    m = _BLOCK.match(name)
    if m and int(m.group(1)) < n_layers and m.group(2) in block:
        return f"{prefix}.{m.group(1)}.{block[m.group(2)]}"
    return None


def _unpermute_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row order. Its converter stores each head's rotary pairs interleaved
    (rows 0, d/2, 1, d/2+1, ...) where transformers keeps the two halves apart (rows 0..d/2-1, then d/2..).
    w: (n_heads * head_dim, ...) weight or bias."""
    rows = w.shape[0]
    rest = w.shape[1:]
    # (heads, head_dim/2, 2, ...) -> (heads, 2, head_dim/2, ...)
    return w.reshape(n_heads, rows // n_heads // 2, 2, *rest).transpose(1, 2).reshape(rows, *rest).contiguous()


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
    theta = float(meta.get(key("rope.freq_base"), 10000.0))
    has_bias = "blk.0.attn_q.bias" in tensors
    return {
        "model_type": arch,
        "architectures": ["Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM"],
        **common,
        "hidden_act": "silu",
        "rms_norm_eps": float(meta.get(key("attention.layer_norm_rms_epsilon"), 1e-6)),
        "rope_theta": theta,
        "rope_scaling": _rope_scaling(header, arch, theta, head_dim),
        "attention_bias": True if arch == "qwen2" else has_bias,
    }


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
    rows = {"q_proj": q, "k_proj": kv, "v_proj": kv, "o_proj": h, "gate_proj": f, "up_proj": f, "down_proj": h}
    cols = {"o_proj": q, "down_proj": f}
    if part in rows:
        return (rows[part], cols.get(part, h)) if kind == "weight" else (rows[part],)
    if part in ("embed_tokens", "lm_head"):
        return (v, h)
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


# ------------------------------------------------------------------------------------------ tokenizer
# GPT-2's own split is built into tokenizers' ByteLevel(use_regex=True); these are the others.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> (how to split text before BPE, whether whole-vocabulary words skip the merges)
_PRE: dict[str, tuple[str, bool]] = {
    "default": ("gpt2", False),
    "gpt-2": ("gpt2", False),
    "smollm": ("digits+gpt2", False),
    "llama3": ("llama3", True),
    "llama-v3": ("llama3", True),
    "llama-bpe": ("llama3", True),
    "qwen2": ("qwen2", False),
    "deepseek-r1-qwen": ("qwen2", False),
}
_PRE_ADDS_BOS = {"llama3", "llama-v3", "llama-bpe"}  # llama.cpp adds BOS for these when the file is silent
_CONTROL, _USER_DEFINED, _BYTE = 3, 4, 6
_SPACE = "\u2581"  # SentencePiece's visible space


def _byte_alphabet() -> list[str]:
    """The 256 printable characters byte-level BPE spells bytes with: printable Latin-1 bytes stand for
    themselves, the others are shifted to U+0100 and up, in byte order."""
    keep = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    shifted = iter(range(0x100, 0x200))
    return [chr(b) if b in keep else chr(next(shifted)) for b in range(256)]


def _build_tokenizer(meta: dict, name: str) -> tuple[Any, bool]:
    """The `tokenizers.Tokenizer` a GGUF describes, and llama.cpp's default for adding BOS."""
    model = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise TokenizerError(
            f"{name} has no tokenizer vocabulary (tokenizer.ggml.tokens)", hint="use a GGUF that includes its tokenizer"
        )
    types = meta.get("tokenizer.ggml.token_type")
    types = [1] * len(tokens) if types is None else [int(t) for t in types]
    if len(types) < len(tokens):
        raise TokenizerError(f"{name}: fewer token types than tokens", hint=_CORRUPT_HINT)
    if model == "gpt2":
        tok, adds_bos = _byte_level_bpe(meta, tokens, types, name)
    elif model == "llama":
        tok, adds_bos = _sentencepiece_bpe(meta, tokens, types, name)
    else:
        raise TokenizerError(
            f"{name} uses a {model!r} tokenizer",
            hint="supported tokenizer models: gpt2 (byte-level BPE) and llama (SentencePiece)",
        )
    _add_special(tok, tokens, types)
    return tok, adds_bos


def _add_special(tok: Any, tokens: list[str], types: list[int]) -> None:
    """Control tokens become special added tokens (matched whole, skipped when decoding with
    skip_special_tokens); user-defined ones (like ``<think>``) are matched whole but still shown."""
    from tokenizers import AddedToken

    special = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == _CONTROL and t]
    user = [AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == _USER_DEFINED and t]
    if special:
        tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)


def _byte_level_bpe(meta: dict, tokens: list[str], types: list[int], name: str) -> tuple[Any, bool]:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    merges_text = meta.get("tokenizer.ggml.merges")
    if not isinstance(merges_text, list):
        raise TokenizerError(f"{name} has a BPE tokenizer without merges", hint=_CORRUPT_HINT)
    alphabet = _byte_alphabet()
    letters = set(alphabet)
    vocab: dict[str, int] = {}
    for i, (t, kind) in enumerate(zip(tokens, types)):
        if kind not in (_CONTROL, _USER_DEFINED) and not set(t) <= letters:
            t = "".join(alphabet[b] for b in t.encode("utf-8"))  # a token stored as plain UTF-8
        vocab.setdefault(t, i)
    merges = []
    for m in merges_text:
        cut = m.find(" ", 1)
        if cut > 0:
            merges.append((m[:cut], m[cut + 1 :]))
    pre = meta.get("tokenizer.ggml.pre") or "default"
    if pre not in _PRE:
        warnings.warn(
            f"{name}: unknown pre-tokenizer {pre!r}; splitting text like GPT-2 (tokens may differ from llama.cpp)",
            stacklevel=4,
        )
    split, ignore_merges = _PRE.get(pre, ("gpt2", False))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split in ("gpt2", "digits+gpt2"))
    if split == "gpt2":
        tok.pre_tokenizer = byte_level
    elif split == "digits+gpt2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        pattern = _LLAMA3_SPLIT if split == "llama3" else _QWEN2_SPLIT
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(pattern), behavior="isolated"), byte_level]
        )
    tok.decoder = decoders.ByteLevel()
    return tok, pre in _PRE_ADDS_BOS


def _sentencepiece_bpe(meta: dict, tokens: list[str], types: list[int], name: str) -> tuple[Any, bool]:
    """llama.cpp's SentencePiece tokenizer: start from characters, repeatedly merge the adjacent pair
    whose concatenation is the highest-scoring vocabulary piece, fall back to <0xNN> byte pieces.
    Expressed as BPE: every split of a normal piece into two pieces is a merge, ranked by its score."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = meta.get("tokenizer.ggml.scores")
    scores = np.zeros(len(tokens), dtype=np.float32) if scores is None else np.asarray(scores, dtype=np.float64)
    if len(scores) < len(tokens):
        raise TokenizerError(f"{name}: fewer token scores than tokens", hint=_CORRUPT_HINT)
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    ranked = []
    for i, (t, kind) in enumerate(zip(tokens, types)):
        if kind != 1 or len(t) < 2:
            continue
        for cut in range(1, len(t)):
            left, right = t[:cut], t[cut:]
            if left in vocab and right in vocab:
                ranked.append((-float(scores[i]), i, cut, left, right))
    ranked.sort()
    merges = [(left, right) for _, _, _, left, right in ranked]
    unk_ids = [i for i, k in enumerate(types) if k == 2]
    unk = tokens[unk_ids[0]] if unk_ids else None
    has_bytes = any(k == _BYTE for k in types)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, byte_fallback=has_bytes, fuse_unk=True))
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    steps = [normalizers.Replace(" ", _SPACE)]
    tok.normalizer = normalizers.Sequence(([normalizers.Prepend(_SPACE)] if prefix else []) + steps)
    parts = [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(parts + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return tok, True


# ----------------------------------------------------------------------------------------- read_gguf
def read_gguf(path: Path, *, dtype: torch.dtype) -> GGUFModel:
    """Read a GGUF model file: transformers-named tensors in ``dtype``, config, tokenizer, token ids.

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
    _check_complete(config, arch, {hf for _, hf in plan}, name)
    try:
        tokenizer, adds_bos = _build_tokenizer(meta, name)
    except (ModelLoadError, TokenizerError):
        raise
    except Exception as exc:  # tokenizers raises plain Exceptions for inconsistent vocabularies
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TokenizerError(f"{name}: cannot rebuild the tokenizer: {text}", hint=_CORRUPT_HINT) from None

    n_heads, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    state: dict[str, torch.Tensor] = {}
    with open(path, "rb") as f, _few_threads():
        for info, hf in plan:
            t = _read_tensor(f, info, path)
            if arch == "llama" and hf.endswith(("q_proj.weight", "q_proj.bias")):
                t = _unpermute_rows(t, n_heads)
            elif arch == "llama" and hf.endswith(("k_proj.weight", "k_proj.bias")):
                t = _unpermute_rows(t, n_kv)
            elif arch == "gpt2" and hf.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
                t = t.t()  # (out, in) -> transformers' Conv1D (in, out)
            state[hf] = t.to(dtype).contiguous()

    tokens = meta["tokenizer.ggml.tokens"]
    ids = {k: meta.get(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "eot", "eom", "unknown", "padding")}
    ids = {k: int(v) for k, v in ids.items() if v is not None and 0 <= int(v) < len(tokens)}
    eos_ids = tuple(dict.fromkeys(ids[k] for k in ("eos", "eot", "eom") if k in ids))
    special = {
        f"{label}_token": tokens[ids[k]]
        for label, k in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding"))
        if k in ids
    }
    add_bos = meta.get("tokenizer.ggml.add_bos_token")
    template = meta.get("tokenizer.chat_template")
    return GGUFModel(
        hf_config=config,
        state_dict=state,
        tokenizer=tokenizer,
        eos_ids=eos_ids,
        bos_id=ids.get("bos"),
        add_bos=bool(adds_bos if add_bos is None else add_bos) and "bos" in ids,
        chat_template=template if isinstance(template, str) else None,
        special_tokens=special,
        quantization=_summary(t.type_id for t, _ in plan),
        metadata=_small_metadata(header),
    )


@contextlib.contextmanager
def _few_threads():
    """One torch thread while dequantizing on a machine with at most 2 CPUs. The kernels are thousands of
    small element-wise ops; when another process shares the 2 CPUs, every op waits for the descheduled
    second thread (measured: SmolLM2 loads in 0.8-1.5 s with 1 thread, 6-18 s with 2)."""
    before = torch.get_num_threads()
    if (os.cpu_count() or 1) <= 2 and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _check_complete(config: dict, arch: str, names: set[str], file: str) -> None:
    n = config["num_hidden_layers"]
    if arch == "gpt2":
        wanted = [*_GPT2_TOP.values()] + [f"transformer.h.{i}.{v}" for i in range(n) for v in _GPT2_BLOCK.values()]
    else:
        block = [v for k, v in _LLAMA_BLOCK.items() if k.endswith("weight")]
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
