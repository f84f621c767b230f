"""Weight-only 4-bit linear layers (``--quantize int4``): groups of 32 weights share a scale and a zero point.

A weight (N, K) is cut along K into groups of `GROUP` values; each group stores 4-bit codes ``q`` (0..15)
and ``w ≈ (q - 8) * scale + zero`` with ``zero = min + 8 * scale`` and ``scale = (max - min) / 15``: the
layout of torch's CPU kernel ``_weight_int4pack_mm_for_cpu``, and the same grid as GGUF's Q4_1 blocks (32
values, ``d * q + m``), so a model read from a Q4_1 file keeps its own codes (up to scale and zero rounded
to bfloat16, the kernel's type).

Decoding one token multiplies one row of activations by every weight: the kernel streams a quarter of
int8's bytes and runs about 2.5x faster than the int8 kernel on SmolLM2's shapes (2-core AVX-512 CPU;
benchmarks/README.md). Its cost grows with every row, so a prompt of `KERNEL_MAX_ROWS` rows or more
is multiplied densely instead: the codes are kept a second time in a plain layout (two per byte, low
nibble first), unpacked per call (torch's packed layout is its own). Memory is therefore about that of
int8 weights; the gain is speed.

Shapes: the kernel needs N a multiple of 16 and K of `GROUP`; `supports_int4` says whether a weight qualifies
(``kernels.make_linear`` quantizes the others to int8).
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F

__all__ = ["GROUP", "KERNEL_MAX_ROWS", "Int4Linear", "quantize_int4_blocks", "supports_int4"]

#: Weights per group (one scale and zero point each).
GROUP = 32
#: From this many rows on, a dense product beats the kernel, whose cost grows with every row (SmolLM2
#: forward, 2 threads: 64 rows 96 ms vs 163 ms dense, 128 rows 188 vs 167, 512 rows 745 vs 292).
KERNEL_MAX_ROWS = 112
_PACK_ROWS = 64  # rows packed per call to torch's converter (its output for 64 rows depends on them only)


def supports_int4(shape: tuple[int, int], device: torch.device) -> bool:
    """Whether a weight (N, K) can be stored as int4 here: torch's CPU kernel exists and accepts it."""
    n, k = shape
    return (device.type == "cpu" and n % 16 == 0 and k % GROUP == 0 and k > 0
            and hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")
            and hasattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu"))


class Int4Linear:
    """A weight as 4-bit codes with a scale and zero point per group of 32 input values (module docstring)."""

    __slots__ = ("packed", "codes", "scale_zero", "bias", "dtype")

    def __init__(self, packed: torch.Tensor, codes: torch.Tensor, scale_zero: torch.Tensor,
                 bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        self.packed = packed  # the kernel's layout, uint8 (N, K/2)
        self.codes = codes  # plain layout, uint8 (N, K/2): column 2j in the low nibble, 2j+1 in the high
        self.scale_zero = scale_zero  # bfloat16 (K/GROUP, N, 2): [..., 0] scale, [..., 1] zero point
        self.bias = bias  # (N,) in dtype, or None
        self.dtype = dtype  # the activation dtype

    @property
    def out_features(self) -> int:
        return self.codes.shape[0]

    @property
    def nbytes(self) -> int:
        b = 0 if self.bias is None else self.bias.numel() * self.bias.element_size()
        return self.packed.numel() + self.codes.numel() + self.scale_zero.numel() * 2 + b

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if x.numel() < KERNEL_MAX_ROWS * shape[-1]:
            x2 = x.reshape(-1, shape[-1])  # (M, K); no-op conversions skipped (each call costs microseconds)
            if x2.dtype != torch.bfloat16:
                x2 = x2.to(torch.bfloat16)
            if not x2.is_contiguous():
                x2 = x2.contiguous()
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.packed, GROUP, self.scale_zero)  # (M, N)
            if y.dtype != x.dtype:
                y = y.to(x.dtype)
            y = y.view(*shape[:-1], y.shape[-1])
        else:  # a prompt: one dense product with the weight unpacked for this call
            y = F.linear(x, self._dense(slice(None), x.dtype))
        if self.bias is not None:
            y = y + self.bias
        return y

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Dequantized rows (an int4 tied head is also the token embedding): (*ids.shape, K)."""
        flat = ids.reshape(-1)
        return self._dense(flat, self.dtype).view(*ids.shape, -1)

    def _dense(self, rows: slice | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Rows of the weight in ``dtype``: (n, K)."""
        codes = self.codes[rows]  # (n, K/2)
        q = torch.stack([codes & 0x0F, codes >> 4], dim=-1).view(codes.shape[0], -1, GROUP)  # (n, G, GROUP)
        sz = self.scale_zero[:, rows].to(dtype)  # (G, n, 2)
        scale, zero = sz[..., 0].t().unsqueeze(-1), sz[..., 1].t().unsqueeze(-1)  # (n, G, 1) each
        return ((q.to(dtype) - 8) * scale + zero).view(codes.shape[0], -1)  # (n, K)


def _pack(codes: torch.Tensor) -> torch.Tensor:
    """Plain-layout codes (n, K/2) of at most 64 rows → the kernel's layout (n, K/2)."""
    q = torch.stack([codes & 0x0F, codes >> 4], dim=-1).view(codes.shape[0], -1)  # (n, K)
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)


def quantize_int4_blocks(shape: tuple[int, int], blocks: Iterable[tuple[int, torch.Tensor]],
                         bias: torch.Tensor | None, dtype: torch.dtype) -> Int4Linear:
    """An `Int4Linear` for a weight of ``shape`` (N, K) given as ``(first row, rows)`` float blocks that
    cover it (each block may reuse the previous one's memory). Scale and zero point per group of 32 are
    rounded to bfloat16 first, then the codes chosen against the rounded values."""
    n, k = shape
    groups = k // GROUP
    codes = torch.empty((n, k // 2), dtype=torch.uint8)  # (N, K/2)
    scale_zero = torch.empty((groups, n, 2), dtype=torch.bfloat16)  # (G, N, 2)
    for r0, rows in blocks:
        w = rows.float().view(rows.shape[0], groups, GROUP)  # (b, G, GROUP)
        lo, hi = w.amin(dim=-1), w.amax(dim=-1)  # (b, G)
        scale = ((hi - lo) / 15).to(torch.bfloat16)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant group: any scale, q = 8
        zero = (lo + 8 * scale.float()).to(torch.bfloat16)
        s, z = scale.float().unsqueeze(-1), zero.float().unsqueeze(-1)  # (b, G, 1)
        q = torch.round((w - z) / s + 8).clamp_(0, 15).to(torch.uint8).view(rows.shape[0], k)  # (b, K)
        r1 = r0 + rows.shape[0]
        codes[r0:r1] = q[:, 0::2] | (q[:, 1::2] << 4)
        scale_zero[:, r0:r1, 0] = scale.t()
        scale_zero[:, r0:r1, 1] = zero.t()
    packed = torch.cat([_pack(codes[i : i + _PACK_ROWS]) for i in range(0, n, _PACK_ROWS)])  # (N, K/2)
    return Int4Linear(packed, codes, scale_zero, None if bias is None else bias.to(dtype), dtype)
