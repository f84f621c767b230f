"""Weights of the linear layers and the products that run them, chosen once per weight at load time.

Decoding one token multiplies one row of activations by every weight matrix: the speed is set by how
fast the kernel streams the weights from memory, and the fastest eager torch call for that differs by
dtype (measured on a 2-core AVX-512 CPU, SmolLM2-135M shapes; see benchmarks/README.md):

* float32: ``F.linear`` (MKL); other one-row formulations were not faster and would change the
  float32 results, which must stay equal to the reference implementations.
* bfloat16 on CPU: ``torch.mv`` for a single row streams the weights about 1.5x faster than
  ``F.linear``; several rows (a prompt) still go through ``F.linear`` (float16: ``F.linear`` always).
* int8 weight-only (`Int8Linear`, `quantize_int8`): symmetric per-output-channel scales, weights stored
  as int8 (a quarter of float32's bytes) and multiplied by ``torch.ops.aten._weight_int8pack_mm`` on CPU
  with 16-bit activations (float32 activations are rounded to bfloat16 for the product: that kernel is
  ~10x slower in float32); for 16 rows or more (a prompt), elsewhere, or without that kernel, the int8
  weight is converted once per call and multiplied densely, the scales applied to the output.
* int4 weight-only (``engine/int4.py``): groups of 32 with a scale and zero point, torch's CPU int4
  kernel (about 2.5x faster than the int8 one per token); the output head, and any layer whose shape
  that kernel refuses, stay int8.

Every layer object is called as ``layer(x)`` with ``x`` (..., K) → (..., N), in the activation dtype.
"""

from __future__ import annotations

from typing import Iterable, Sequence, Union

import torch
import torch.nn.functional as F

from .int4 import Int4Linear, quantize_int4_blocks, supports_int4

__all__ = [
    "Linear",
    "Int8Linear",
    "Int4Linear",
    "Concat",
    "LinearLike",
    "make_linear",
    "quantize_int8",
    "quantize_int8_blocks",
    "quantize_blocks",
    "has_int8_kernel",
    "fuses_layers",
    "QUANTIZATIONS",
]

#: Values of ``load(..., quantize=...)``: None (weights in the model dtype), "int8" or "int4" (weight-only).
QUANTIZATIONS = (None, "int8", "int4")

_INT8_MAX = 127.0
#: From this many rows on, dequantizing the weight once and using a dense product beats torch's int8 kernel,
#: whose cost grows with every row (measured: 16 rows 0.73 ms vs 0.61 ms, 512 rows 22 ms vs 2.3 ms).
_KERNEL_MAX_ROWS = 16
_QUANT_BLOCK = 1 << 16  # elements of float32 temporaries while quantizing (256 KiB: reused, never fragmenting)


class Linear:
    """A dense weight (N, K) and optional bias (N,), in the activation dtype."""

    __slots__ = ("weight", "bias", "_mv")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        self.weight = weight  # (N, K)
        self.bias = bias  # (N,) or None
        # One-row bfloat16 products on CPU: torch.mv streams the weights faster than F.linear (in float16
        # it is slower: 6.8 vs 13.3 GB/s, so float16 keeps F.linear).
        self._mv = weight.device.type == "cpu" and weight.dtype == torch.bfloat16

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @property
    def nbytes(self) -> int:
        b = 0 if self.bias is None else self.bias.numel() * self.bias.element_size()
        return self.weight.numel() * self.weight.element_size() + b

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._mv and x.numel() == x.shape[-1]:
            y = torch.mv(self.weight, x.reshape(-1))  # (N,)
            if self.bias is not None:
                y = y + self.bias
            return y.view(*x.shape[:-1], y.shape[0])
        return F.linear(x, self.weight, self.bias)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows of the weight for an embedding lookup (a tied head is also the token embedding)."""
        return self.weight[ids]


class Int8Linear:
    """A weight stored as int8 (N, K) with one scale per output row: ``w ≈ qweight * scale[:, None]``."""

    __slots__ = ("qweight", "scale", "bias", "dtype", "_kernel", "_kernel_scale")

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
        self.qweight = qweight  # (N, K) int8
        self.dtype = dtype  # the activation dtype
        self.scale = scale.to(dtype)  # (N,)
        self.bias = bias  # (N,) in dtype, or None
        # The CPU kernel, in bfloat16 for float32 activations (there it is much faster than in float32).
        kdtype = torch.bfloat16 if dtype == torch.float32 else dtype
        self._kernel = has_int8_kernel(qweight.device, kdtype, qweight.shape[1])
        self._kernel_scale = scale.to(kdtype) if self._kernel else None  # (N,)

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
            x2 = x.reshape(-1, shape[-1]).to(scale.dtype).contiguous()  # (M, K)
            y = torch.ops.aten._weight_int8pack_mm(x2, self.qweight, scale).to(x.dtype)  # (M, N)
            y = y.view(*shape[:-1], y.shape[-1])
        else:  # many rows (a prompt) or no kernel: one dense product, scaled per output channel
            y = F.linear(x, self.qweight.to(x.dtype)) * self.scale
        if self.bias is not None:
            y = y + self.bias
        return y

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Dequantized rows (an int8 tied head is also the token embedding): (*ids.shape, K)."""
        return self.qweight[ids].to(self.dtype) * self.scale[ids].unsqueeze(-1)


LinearLike = Union[Linear, Int8Linear, Int4Linear]


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


def fuses_layers(dtype: torch.dtype, quantize: str | None) -> bool:
    """Whether a model should fuse parallel projections (q|k|v, gate|up) into one layer.

    Fewer, larger products pay where the per-call cost matters (16-bit and int8 decode: +8% tokens/s on
    SmolLM2, 2 cores); float32 decode is bound by memory bandwidth and gains nothing, so float32 weights
    stay as stored, which lets them be memory-mapped without a second copy (``engine/weights_io.py``)."""
    return dtype != torch.float32 or quantize is not None


class Concat:
    """Several layers applied to the same input, outputs concatenated: (..., K) → (..., ΣN).

    Stands for a fused layer when the weights stay separate (see `fuses_layers`)."""

    __slots__ = ("layers",)

    def __init__(self, layers: Sequence[LinearLike]) -> None:
        self.layers = tuple(layers)

    @property
    def nbytes(self) -> int:
        return sum(lin.nbytes for lin in self.layers)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([lin(x) for lin in self.layers], dim=-1)


def make_linear(weight: torch.Tensor, bias: torch.Tensor | None = None, *, quantize: str | None = None,
                dtype: torch.dtype | None = None) -> LinearLike:
    """A layer for ``weight`` (N, K): dense in its own dtype, or weight-only int8 / int4 with ``quantize``
    (activations in ``dtype``, default the weight's dtype)."""
    if quantize is None:
        return Linear(weight, bias)
    return quantize_blocks(quantize, tuple(weight.shape), _row_blocks(weight), bias, dtype or weight.dtype,
                           device=weight.device)


def quantize_blocks(quantize: str, shape: tuple[int, int], blocks: Iterable[tuple[int, torch.Tensor]],
                    bias: torch.Tensor | None, dtype: torch.dtype, *,
                    device: torch.device | None = None) -> LinearLike:
    """A quantized layer for a weight of ``shape`` given as ``(first row, rows)`` blocks: int8, or int4
    where torch's int4 kernel takes the shape (`int4.supports_int4`; the other layers of an int4 model
    are int8, the nearest format that runs everywhere)."""
    if quantize == "int4" and supports_int4(shape, torch.device("cpu") if device is None else torch.device(device)):
        return quantize_int4_blocks(shape, blocks, bias, dtype)
    if quantize in ("int8", "int4"):
        return quantize_int8_blocks(shape, blocks, bias, dtype, device=device)
    raise ValueError(f"unknown quantization {quantize!r}; expected one of {QUANTIZATIONS}")
