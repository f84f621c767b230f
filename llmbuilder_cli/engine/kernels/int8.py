"""Weight-only int8 layers: `Int8Linear` (symmetric per-output-channel scales, weights stored as int8) and
the quantizers that make them (`quantize_int8`, `quantize_int8_blocks`).

On CPU with 16-bit activations the product runs in ``torch.ops.aten._weight_int8pack_mm`` (float32
activations are rounded to bfloat16 for it: that kernel is ~10x slower in float32); for 16 rows or more
(a prompt), elsewhere, or without that kernel, the int8 weight is converted once per call and multiplied
densely, the scales applied to the output: with bfloat16 activations on a CPU without bfloat16 products,
in float32 over blocks of the weight (``dense.float_block_product``; a 512-token prompt of SmolLM2 ran
16 s with bfloat16 ``F.linear`` on a 2-vCPU AMD EPYC).
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F

from .dense import BLOCKED_MIN_ROWS, float_block_product, float_products_pay, rows_copied

__all__ = ["Int8Linear", "has_int8_kernel", "quantize_int8", "quantize_int8_blocks"]

_INT8_MAX = 127.0
#: From this many rows on, dequantizing the weight once and using a dense product beats torch's int8 kernel,
#: whose cost grows with every row (measured: 16 rows 0.73 ms vs 0.61 ms, 512 rows 22 ms vs 2.3 ms).
_KERNEL_MAX_ROWS = 16
_QUANT_BLOCK = 1 << 16  # elements of float32 temporaries while quantizing (256 KiB: reused, never fragmenting)


class Int8Linear:
    """A weight stored as int8 (N, K) with one scale per output row: ``w ≈ qweight * scale[:, None]``."""

    __slots__ = ("qweight", "scale", "bias", "dtype", "_kernel", "_kernel_scale", "_float_blocks")

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
        self.qweight = qweight  # (N, K) int8
        self.dtype = dtype  # the activation dtype
        self.scale = scale.to(dtype)  # (N,)
        self.bias = bias  # (N,) in dtype, or None
        # The CPU kernel, in bfloat16 for float32 activations (there it is much faster than in float32).
        kdtype = torch.bfloat16 if dtype == torch.float32 else dtype
        self._kernel = has_int8_kernel(qweight.device, kdtype, qweight.shape[1])
        self._kernel_scale = scale.to(kdtype) if self._kernel else None  # (N,)
        self._float_blocks = float_products_pay(qweight.device, dtype)  # see kernels/dense.py

    @property
    def out_features(self) -> int:
        return self.qweight.shape[0]

    @property
    def nbytes(self) -> int:
        b = 0 if self.bias is None else self.bias.numel() * self.bias.element_size()
        return self.qweight.numel() + self.scale.numel() * self.scale.element_size() + b

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if self._kernel and x.numel() < _KERNEL_MAX_ROWS * shape[-1]:
            scale = self._kernel_scale
            x2 = x.reshape(-1, shape[-1])  # (M, K)
            if x2.dtype != scale.dtype:  # float32 activations: the kernel runs in bfloat16
                x2 = x2.to(scale.dtype)
            if not x2.is_contiguous():
                x2 = x2.contiguous()
            y = torch.ops.aten._weight_int8pack_mm(x2, self.qweight, scale)  # (M, N)
            if y.dtype != x.dtype:
                y = y.to(x.dtype)
            y = y.view(*shape[:-1], y.shape[-1])
        elif self._float_blocks and x.numel() >= BLOCKED_MIN_ROWS * shape[-1]:  # bfloat16 rows: float32 blocks
            return float_block_product(x, self.qweight.shape[0], rows_copied(self.qweight), scale=self.scale,
                                       bias=self.bias)  # the codes converted, the scales applied to the output
        else:  # many rows (a prompt) or no kernel: one dense product, scaled per output channel
            y = F.linear(x, self.qweight.to(x.dtype)) * self.scale
        if self.bias is not None:
            y = y + self.bias
        return y

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Dequantized rows (an int8 tied head is also the token embedding): (*ids.shape, K)."""
        return self.qweight[ids].to(self.dtype) * self.scale[ids].unsqueeze(-1)


def has_int8_kernel(device: torch.device, dtype: torch.dtype, in_features: int) -> bool:
    """Whether torch's weight-only int8 kernel is used: on CPU, with 16-bit activations (with float32 ones
    it is slower than dequantizing) and ``in_features`` a multiple of 16 (torch 2.13's vectorised kernel
    reads past the end of shorter rows: wrong results or a crash)."""
    return (device.type == "cpu" and dtype in (torch.bfloat16, torch.float16) and in_features % 16 == 0
            and hasattr(torch.ops.aten, "_weight_int8pack_mm"))


def quantize_int8(weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> Int8Linear:
    """Symmetric per-output-channel int8 quantization of ``weight`` (N, K): ``q = round(w / s)`` with
    ``s = max|w| / 127`` per row, computed in float32 (in blocks of rows, so temporaries stay small)."""
    return quantize_int8_blocks(tuple(weight.shape), _row_blocks(weight), bias, dtype, device=weight.device)


def _row_blocks(weight: torch.Tensor) -> Iterable[tuple[int, torch.Tensor]]:
    """``(first row, rows)`` views of ``weight`` (N, K), about `_QUANT_BLOCK` elements each."""
    step = max(1, _QUANT_BLOCK // max(1, weight.shape[1]))
    return ((r0, weight[r0 : r0 + step]) for r0 in range(0, weight.shape[0], step))


def quantize_int8_blocks(shape: tuple[int, int], blocks: Iterable[tuple[int, torch.Tensor]],
                         bias: torch.Tensor | None, dtype: torch.dtype, *,
                         device: torch.device | None = None) -> Int8Linear:
    """`quantize_int8` of a weight of ``shape`` (N, K) given as ``(first row, rows)`` blocks that cover
    it (each block may reuse the previous one's memory: it is consumed before the next is produced)."""
    q = torch.empty(shape, dtype=torch.int8, device=device)  # (N, K)
    scale = torch.empty(shape[0], dtype=torch.float32, device=device)  # (N,)
    for r0, rows in blocks:
        w = rows.to(device=q.device, dtype=torch.float32)  # (n, K)
        s = w.abs().amax(dim=1).clamp(min=1e-12) / _INT8_MAX  # (n,)
        q[r0 : r0 + w.shape[0]] = torch.round(w / s[:, None]).clamp_(-_INT8_MAX, _INT8_MAX)
        scale[r0 : r0 + w.shape[0]] = s
    return Int8Linear(q, scale, None if bias is None else bias.to(dtype), dtype)
