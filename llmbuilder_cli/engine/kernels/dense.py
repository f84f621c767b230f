"""Dense linear layers in the activation dtype: `Linear` (``F.linear``; ``torch.mv`` for one bfloat16 row on
CPU, which streams the weights faster; float32 products over float32 copies of weight blocks for several
bfloat16 rows on a CPU without bfloat16 matrix instructions), `Concat` (separate layers standing for a fused
one), `fuses_layers` (when a model should fuse parallel projections) and `float_block_product`, the blocked
float32 product the int8 and int4 layers use for a prompt as well.

Several bfloat16 rows (a batched decode step, a prompt): on a CPU whose oneDNN has no native bfloat16
path (AVX2, no AVX512-BF16/AMX: ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` false), ``F.linear``
costs about one pass over the weight per row, so batching gains nothing. Converting the weight to float32
in blocks of about 295k elements (cache-sized: 512 rows of width 576) and multiplying each with float32's
product reads the bfloat16 weight once for all rows; float32 copies are never kept (memory stays that of
bfloat16). Each block is the left operand: ``block (n, K) @ x.T (K, M)`` gives the block's output rows
transposed. MKL splits that product along the weight's rows, where ``x @ block.T`` (M small) left one of
two threads mostly idle: measured on an idle 2-vCPU AMD EPYC, 2 threads, float32 at 32 rows 28-30 vs
18-19 GFLOPS. SmolLM2's shapes there (ms, bfloat16 in and out, medians): 1536x576 at 32 rows
``F.linear`` 9.3, ``x @ block.T`` 3.5, ``block @ x.T`` 2.5; 3072x576 at 32 rows 11.2 / 6.6 / 2.9;
49152x576 (the head) at 16 rows 56 (``x @ block.T``) vs 32, at 32 rows 71 vs 52. At 8 rows the blocked
product and ``F.linear`` are even (1536x576: 2.6 vs 2.6 ms; the head 41 vs 46) and below it ``F.linear``
is faster (4 rows: 1.4 vs 1.9 ms), so blocks start at `BLOCKED_MIN_ROWS`. Other formulations measured no
better than ``F.linear`` for a few rows: a ``torch.mv`` per row, ``torch.matmul`` with the transposed
weight, a transposed copy.

Every layer object is called as ``layer(x)`` with ``x`` (..., K) → (..., N), in the activation dtype.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable, Sequence

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from . import LinearLike

__all__ = ["Linear", "Concat", "fuses_layers", "BLOCKED_MIN_ROWS", "float_block_product", "float_products_pay",
           "linear", "rows_copied"]

BLOCKED_MIN_ROWS = 8  # bfloat16 rows from which float32 products on weight blocks pay (see the module doc)
_BLOCK_ELEMENTS = 512 * 576  # weight elements converted at a time (1.2 MB of float32)


@functools.cache
def _native_bf16() -> bool:
    """Whether torch's CPU bfloat16 products have native instructions (AVX512-BF16/AMX class)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - a torch without the query
        return True


def float_products_pay(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether several rows in ``dtype`` run faster as float32 products over weight blocks
    (`float_block_product`) than as a product in ``dtype``: bfloat16 on a CPU without its instructions."""
    return device.type == "cpu" and dtype == torch.bfloat16 and not _native_bf16()


def float_block_product(x: torch.Tensor, out_features: int,
                        block: Callable[[int, int, torch.Tensor], torch.Tensor],
                        scale: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ W.T * scale + bias`` for rows x (..., K), computed in float32 and rounded to x's dtype once.

    The weight W (N, K) is never whole in float32: ``block(r, n, buf)`` returns its rows r..r+n-1 as
    float32 (n, K), written into ``buf`` (n, K) or made anew; each block multiplies all rows at once as
    ``block @ x.T`` (see the module doc). ``scale`` (N,) multiplies each output column (int8's
    per-channel scales), ``bias`` (N,) is added."""
    N, K = out_features, x.shape[-1]
    xt = x.reshape(-1, K).t().float().contiguous()  # (K, M)
    out_t = torch.empty(N, xt.shape[1], dtype=torch.float32, device=x.device)  # (N, M): the output transposed
    step = min(N, max(16, _BLOCK_ELEMENTS // K))
    buf = torch.empty(step, K, dtype=torch.float32, device=x.device)  # (step, K), reused by every block
    for r in range(0, N, step):
        n = min(step, N - r)
        torch.mm(block(r, n, buf[:n]), xt, out=out_t[r : r + n])  # (n, M)
    if scale is not None:
        out_t.mul_(scale.float().unsqueeze(1))  # (N, M) * (N, 1)
    if bias is not None:
        out_t.add_(bias.float().unsqueeze(1))  # (N, M) + (N, 1)
    y = torch.empty(xt.shape[1], N, dtype=x.dtype, device=x.device)  # (M, N)
    y.copy_(out_t.t())  # transposed back, rounded once
    return y.view(*x.shape[:-1], N)


def rows_copied(weight: torch.Tensor) -> Callable[[int, int, torch.Tensor], torch.Tensor]:
    """The ``block`` function of `float_block_product` for a weight stored (N, K) in any dtype: rows
    r..r+n-1 converted into the float32 buffer."""
    return lambda r, n, buf: buf.copy_(weight[r : r + n])


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a plain weight tensor (N, K), except several bfloat16 rows where
    `float_products_pay`: then the blocked float32 product (one row, and float32, stay ``F.linear``)."""
    if x.numel() >= BLOCKED_MIN_ROWS * x.shape[-1] and float_products_pay(weight.device, weight.dtype):
        return float_block_product(x, weight.shape[0], rows_copied(weight), bias=bias)
    return F.linear(x, weight, bias)


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
        return linear(x, self.weight, self.bias)  # F.linear, or float32 blocks for several bfloat16 rows

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows of the weight for an embedding lookup (a tied head is also the token embedding)."""
        return self.weight[ids]


def fuses_layers(dtype: torch.dtype, quantize: str | None) -> bool:
    """Whether a model should fuse parallel projections (q|k|v, gate|up) into one layer.

    Fewer, larger products pay where the per-call cost matters (16-bit and int8 decode: +8% tokens/s on
    SmolLM2, 2 cores); float32 decode is bound by memory bandwidth and gains nothing, so float32 weights
    stay as stored, which lets them be memory-mapped without a second copy (``engine/formats/weights_io.py``)."""
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
