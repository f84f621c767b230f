"""Dense linear layers in the activation dtype: `Linear` (``F.linear``; ``torch.mv`` for one bfloat16 row on
CPU, which streams the weights faster; float32 products on float32 copies of weight blocks for several
bfloat16 rows on a CPU without bfloat16 matrix instructions), `Concat` (separate layers standing for a fused
one) and `fuses_layers` (when a model should fuse parallel projections).

Several bfloat16 rows (a batched decode step, a prompt): on a CPU whose oneDNN has no native bfloat16
path (AVX2, no AVX512-BF16/AMX: ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` false), ``F.linear``
costs about one pass over the weight per row, so batching gains nothing. Converting the weight to float32
in blocks of about 147k elements (cache-sized: 256 rows of width 576) and multiplying each with float32's
product reads the bfloat16 weight once for all rows; float32 copies are never kept (memory stays that of
bfloat16). Measured on SmolLM2's shapes (1 thread, median of noisy runs on a shared 2-core AMD EPYC,
ms): 576x576 at 8 rows 2.46 -> 1.09, at 32 rows 10.1 -> 2.6; 1536x576 at 32 rows 26.0 -> 7.0;
49152x576 (the head) at 4 rows 113 -> 75, at 32 rows 899 -> 228. At 2 rows it is mixed (576x1536:
0.64 -> 1.00), so it starts at `BLOCKED_MIN_ROWS`. Other formulations measured no better than
``F.linear``: a ``torch.mv`` per row, ``torch.matmul`` with the transposed weight, a transposed copy.

Every layer object is called as ``layer(x)`` with ``x`` (..., K) → (..., N), in the activation dtype.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from . import LinearLike

__all__ = ["Linear", "Concat", "fuses_layers", "BLOCKED_MIN_ROWS"]

BLOCKED_MIN_ROWS = 4  # bfloat16 rows from which float32 products on weight blocks pay (see the module doc)
_BLOCK_ELEMENTS = 256 * 576  # weight elements converted at a time


def _native_bf16() -> bool:
    """Whether torch's CPU bfloat16 products have native instructions (AVX512-BF16/AMX class)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - a torch without the query
        return True


class Linear:
    """A dense weight (N, K) and optional bias (N,), in the activation dtype."""

    __slots__ = ("weight", "bias", "_mv", "_blocked")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        self.weight = weight  # (N, K)
        self.bias = bias  # (N,) or None
        # One-row bfloat16 products on CPU: torch.mv streams the weights faster than F.linear (in float16
        # it is slower: 6.8 vs 13.3 GB/s, so float16 keeps F.linear).
        self._mv = weight.device.type == "cpu" and weight.dtype == torch.bfloat16
        self._blocked = self._mv and weight.dim() == 2 and not _native_bf16()

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
        if self._blocked and x.numel() >= BLOCKED_MIN_ROWS * x.shape[-1]:
            return self._float_blocks(x)
        return F.linear(x, self.weight, self.bias)

    def _float_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear`` for several bfloat16 rows x (..., K): float32 products of the rows with float32
        copies of blocks of the weight's rows, one block at a time (see the module doc)."""
        N, K = self.weight.shape
        rows = x.reshape(-1, K).float()  # (M, K)
        out = torch.empty(rows.shape[0], N, dtype=torch.float32, device=x.device)  # (M, N)
        step = max(16, _BLOCK_ELEMENTS // K)
        for r in range(0, N, step):
            torch.mm(rows, self.weight[r : r + step].float().t(), out=out[:, r : r + step])  # (M, step)
        if self.bias is not None:
            out += self.bias
        return out.to(x.dtype).view(*x.shape[:-1], N)

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
