"""Dense linear layers in the activation dtype: `Linear` (``F.linear``; ``torch.mv`` for one bfloat16 row on
CPU, which streams the weights faster), `Concat` (separate layers standing for a fused one) and
`fuses_layers` (when a model should fuse parallel projections).

Every layer object is called as ``layer(x)`` with ``x`` (..., K) → (..., N), in the activation dtype.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from . import LinearLike

__all__ = ["Linear", "Concat", "fuses_layers"]


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
