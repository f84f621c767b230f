"""Weight-only 4-bit linear layers (``--quantize int4``): groups of 32 weights share a scale and a zero point.

A weight (N, K) is cut along K into groups of `GROUP` values; each group stores 4-bit codes ``q`` (0..15)
and ``w ≈ (q - 8) * scale + zero`` with ``zero = min + 8 * scale`` and ``scale = (max - min) / 15``: the
layout of torch's CPU kernel ``_weight_int4pack_mm_for_cpu``. GGUF's 4-bit formats are the same grid:
Q4_0 (``d * (q - 8)``), Q4_1 (``d * q + m``) and Q4_K's sub-blocks of 32 (``d·sc * q - dmin·m``), so
`quantize_int4_blocks` also takes a weight as such codes with each group's scale and zero point (read by
``formats/gguf/state.py``, never dequantized) and keeps them, up to scale and zero rounded to bfloat16,
the kernel's type. Other weights come as float rows and are quantized here.

Decoding one token multiplies one row of activations by every weight: the kernel streams a quarter of
int8's bytes and runs about 2.5x faster than the int8 kernel on SmolLM2's shapes (2-core AVX-512 CPU;
benchmarks/README.md). Its cost grows with every row, so a prompt of `KERNEL_MAX_ROWS` rows or more
is multiplied densely instead: the codes are kept a second time in a plain layout (two per byte, low
nibble first), unpacked per call (torch's packed layout is its own); with bfloat16 activations on a CPU
without bfloat16 products, unpacked block by block into float32 products (``dense.float_block_product``).
Memory is therefore about that of int8 weights; the gain is speed.

Shapes: the kernel needs N a multiple of 16 and K of `GROUP`; `supports_int4` says whether a weight qualifies
(``kernels.make_linear`` quantizes the others to int8).
"""

from __future__ import annotations

from typing import Iterable, Union

import torch
import torch.nn.functional as F

from .dense import float_block_product, float_products_pay

__all__ = ["GROUP", "KERNEL_MAX_ROWS", "Int4Linear", "Int4Rows", "quantize_int4_blocks", "supports_int4"]

#: Weights per group (one scale and zero point each).
GROUP = 32
#: From this many rows on, a dense product beats the kernel, whose cost grows with every row (SmolLM2
#: forward, 2 threads: 64 rows 96 ms vs 163 ms dense, 128 rows 188 vs 167, 512 rows 745 vs 292).
KERNEL_MAX_ROWS = 112
_PACK_ROWS = 64  # rows packed per call to torch's converter (its output for 64 rows depends on them only)

#: Rows of a weight for `quantize_int4_blocks`: float (b, K), or already 4-bit ``(codes, scale, zero)``.
Int4Rows = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


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
        elif float_products_pay(x.device, x.dtype):  # a bfloat16 prompt: float32 products over unpacked blocks
            return float_block_product(x, self.codes.shape[0], self._float_rows, bias=self.bias)
        else:  # a prompt: one dense product with the weight unpacked for this call
            y = F.linear(x, self._dense(slice(None), x.dtype))
        if self.bias is not None:
            y = y + self.bias
        return y

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Dequantized rows (an int4 tied head is also the token embedding): (*ids.shape, K)."""
        flat = ids.reshape(-1)
        return self._dense(flat, self.dtype).view(*ids.shape, -1)

    def _float_rows(self, r: int, n: int, buf: torch.Tensor) -> torch.Tensor:
        """Rows r..r+n-1 of the weight in float32 (n, K) (``buf`` unused: unpacking makes its own)."""
        return self._dense(slice(r, r + n), torch.float32)

    def _dense(self, rows: slice | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Rows of the weight in ``dtype``: (n, K)."""
        codes = self.codes[rows]  # (n, K/2)
        q = torch.stack([codes & 0x0F, codes >> 4], dim=-1).view(codes.shape[0], -1, GROUP)  # (n, G, GROUP)
        sz = self.scale_zero[:, rows].to(dtype)  # (G, n, 2)
        scale, zero = sz[..., 0].t().unsqueeze(-1), sz[..., 1].t().unsqueeze(-1)  # (n, G, 1) each
        return ((q.to(dtype) - 8) * scale + zero).view(codes.shape[0], -1)  # (n, K)


def _pack(codes: torch.Tensor) -> torch.Tensor:
    """Plain-layout codes (n, K/2) → the kernel's layout (n, K/2)."""
    q = torch.stack([codes & 0x0F, codes >> 4], dim=-1).view(codes.shape[0], -1)  # (n, K)
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)


def _quantize(rows: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float rows (b, K) → codes (b, K) uint8 and bfloat16 scale, zero (b, G): scale and zero rounded to
    bfloat16 first, then the codes chosen against the rounded values."""
    b = rows.shape[0]
    w = rows.float().view(b, groups, GROUP)  # (b, G, GROUP)
    lo, hi = w.amin(dim=-1), w.amax(dim=-1)  # (b, G) each, new tensors
    scale = hi.sub_(lo).div_(15).to(torch.bfloat16)  # (b, G)
    scale.masked_fill_(scale <= 0, 1)  # a constant group: any scale, q = 8
    zero = scale.float().mul_(8).add_(lo).to(torch.bfloat16)  # (b, G)
    s, z = scale.float().unsqueeze(-1), zero.float().unsqueeze(-1)  # (b, G, 1)
    q = torch.sub(w, z).div_(s).add_(8).round_().clamp_(0, 15).to(torch.uint8)  # (b, G, GROUP)
    return q.view(b, -1), scale, zero


def quantize_int4_blocks(shape: tuple[int, int], blocks: Iterable[tuple[int, Int4Rows]],
                         bias: torch.Tensor | None, dtype: torch.dtype) -> Int4Linear:
    """An `Int4Linear` for a weight of ``shape`` (N, K) given as ``(first row, rows)`` blocks that cover
    it in row order. ``rows`` is either float (b, K), quantized here (each block may reuse the previous
    one's memory), or a weight already in 4-bit groups of 32, ``(codes, scale, zero)``: codes (b, K)
    integers in 0..15 and scale, zero (b, K/32) float of ``w = (q - 8) * scale + zero`` (GGUF's Q4_0,
    Q4_1 and Q4_K), kept as they are with scale and zero rounded to bfloat16. Each 64 rows are packed
    for the kernel as soon as they are complete."""
    n, k = shape
    groups = k // GROUP
    codes = torch.empty((n, k // 2), dtype=torch.uint8)  # (N, K/2)
    scale_zero = torch.empty((groups, n, 2), dtype=torch.bfloat16)  # (G, N, 2)
    packed = torch.empty((n, k // 2), dtype=torch.uint8)  # (N, K/2)
    pending = torch.empty((min(n, _PACK_ROWS), k), dtype=torch.int32)  # codes of the rows not packed yet
    done = 0  # rows received so far
    for r0, rows in blocks:
        if r0 != done:
            raise ValueError(f"int4 blocks must come in row order: rows from {r0} after {done}")
        if isinstance(rows, torch.Tensor):
            q, scale, zero = _quantize(rows, groups)
        else:
            q, scale, zero = rows[0], rows[1].to(torch.bfloat16), rows[2].to(torch.bfloat16)
        r1 = r0 + q.shape[0]
        codes[r0:r1] = q[:, 0::2] | (q[:, 1::2] << 4)
        scale_zero[:, r0:r1, 0] = scale.t()
        scale_zero[:, r0:r1, 1] = zero.t()
        start = r0
        while start < r1:  # fill the pending chunk; pack it once complete (or at the last row)
            p0 = start - start % _PACK_ROWS  # the chunk's first row
            stop = min(r1, p0 + _PACK_ROWS)
            pending[start - p0 : stop - p0] = q[start - r0 : stop - r0]
            if stop == min(n, p0 + _PACK_ROWS):
                packed[p0:stop] = torch.ops.aten._convert_weight_to_int4pack_for_cpu(pending[: stop - p0], 1)
            start = stop
        done = r1
    if done != n:
        raise ValueError(f"int4 blocks cover {done} of {n} rows")
    return Int4Linear(packed, codes, scale_zero, None if bias is None else bias.to(dtype), dtype)
