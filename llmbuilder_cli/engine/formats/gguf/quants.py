"""Dequantize GGUF tensor data: ggml's block formats (Q4_0 ... Q6_K) to float tensors, and read one tensor's bytes.

The common block formats have small torch kernels here (a block is unpacked as rows of a uint8 tensor);
the rarer ones (Q2_K, Q3_K, IQ4_NL, IQ4_XS) go to the ``gguf`` package's reference numpy code. Block
layouts are noted beside each kernel; shapes are in torch order.

The 4-bit formats whose groups of 32 values share one scale and one offset (Q4_0, Q4_1, and Q4_K's
sub-blocks) can also be read without dequantizing (`int4_groups`): their codes as they are, with the
scale and zero point of ``w = (q - 8) * scale + zero`` per group, the form an int4 layer keeps.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ....errors import ModelLoadError
from .header import _CORRUPT_HINT, _TYPES, GGUFTensorInfo

__all__ = ["INT4_GROUP_TYPES", "dequantize", "int4_groups"]


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


# ------------------------------------------------------------------------- 4-bit groups of 32, as stored
# Each returns (codes (N, n*32) uint8 in 0..15, scale (N, n), zero (N, n) float32) for N blocks of n
# groups, with every value (q - 8) * scale + zero: the dequantized value, up to float32 rounding.
def _q4_0_groups(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # d * (q - 8)
    d = _f16(raw, 0)  # (N, 1)
    return _nibbles(raw[:, 2:18]), d, torch.zeros_like(d)


def _q4_1_groups(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # d * q + m
    d = _f16(raw, 0)  # (N, 1)
    return _nibbles(raw[:, 4:20]), d, _f16(raw, 2) + 8 * d


def _q4_k_groups(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # d*sc * q - dmin*m
    sc, mn = _k_scales(raw[:, 4:16])  # (N, 8) each
    scale = _f16(raw, 0) * sc  # (N, 8)
    return _k_low_nibbles(raw[:, 16:144]).reshape(-1, 256), scale, 8 * scale - _f16(raw, 2) * mn


_GROUP_KERNELS: dict[str, Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {
    "Q4_0": _q4_0_groups,
    "Q4_1": _q4_1_groups,
    "Q4_K": _q4_k_groups,
}
#: The types `int4_groups` reads.
INT4_GROUP_TYPES = frozenset(_GROUP_KERNELS)


def int4_groups(raw: torch.Tensor, type_id: int, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bytes of a matrix (rows, cols) stored in one of `INT4_GROUP_TYPES` -> its codes (rows, cols) uint8
    in 0..15, and per group of 32 consecutive values of a row the scale and zero point (rows, cols/32)
    float32 of ``w = (q - 8) * scale + zero``."""
    name, _, block_bytes = _TYPES[type_id]
    rows, cols = shape
    codes, scale, zero = _GROUP_KERNELS[name](raw.reshape(-1, block_bytes))
    return codes.reshape(rows, cols), scale.reshape(rows, cols // 32), zero.reshape(rows, cols // 32)


def _read_tensor(f: Any, info: GGUFTensorInfo, path: Path) -> torch.Tensor:
    raw = torch.empty(info.nbytes, dtype=torch.uint8)
    f.seek(info.offset)
    if f.readinto(raw.numpy()) != info.nbytes:
        raise ModelLoadError(f"{path.name}: tensor {info.name} is cut short", hint=_CORRUPT_HINT)
    return dequantize(raw, info.type_id, info.shape)


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
