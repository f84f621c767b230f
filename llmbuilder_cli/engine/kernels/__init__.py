"""Weights of the linear layers and the products that run them, chosen once per weight at load time.
Dense layers live in ``dense.py``, weight-only int8 in ``int8.py``, int4 in ``int4.py``; this module
chooses between them (`make_linear`, `quantize_blocks`).

Decoding one token multiplies one row of activations by every weight matrix: the speed is set by how
fast the kernel streams the weights from memory, and the fastest eager torch call for that differs by
dtype (measured on a 2-core AVX-512 CPU, SmolLM2-135M shapes; see benchmarks/README.md):

* float32: ``F.linear`` (MKL); other one-row formulations were not faster and would change the
  float32 results, which must stay equal to the reference implementations.
* bfloat16 on CPU: ``torch.mv`` for a single row streams the weights about 1.5x faster than
  ``F.linear``; from 8 rows (a batched step, a prompt), on a CPU without native bfloat16 products,
  float32 products on float32 copies of weight blocks (``dense.py``: 3-4x faster than ``F.linear``
  at 16-32 rows); else ``F.linear`` (float16: ``F.linear`` always).
* int8 weight-only (`Int8Linear`, `quantize_int8`): symmetric per-output-channel scales, weights stored
  as int8 (a quarter of float32's bytes) and multiplied by ``torch.ops.aten._weight_int8pack_mm`` on CPU
  with 16-bit activations (float32 activations are rounded to bfloat16 for the product: that kernel is
  ~10x slower in float32); for 16 rows or more (a prompt), elsewhere, or without that kernel, the int8
  weight is converted once per call and multiplied densely, the scales applied to the output (bfloat16
  rows on a CPU without its instructions: the float32 block products of ``dense.py``, as int4's prompts).
* int4 weight-only (``int4.py``): groups of 32 with a scale and zero point, torch's CPU int4
  kernel (about 2.5x faster than the int8 one per token); the output head, and any layer whose shape
  that kernel refuses, stay int8.

Every layer object is called as ``layer(x)`` with ``x`` (..., K) → (..., N), in the activation dtype.
"""

from __future__ import annotations

from typing import Iterable, Union

import torch

from .dense import Concat, Linear, fuses_layers
from .int4 import Int4Linear, Int4Rows, quantize_int4_blocks, supports_int4
from .int8 import Int8Linear, _row_blocks, has_int8_kernel, quantize_int8, quantize_int8_blocks

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
    "is_int4",
    "has_int8_kernel",
    "fuses_layers",
    "QUANTIZATIONS",
]

#: Values of ``load(..., quantize=...)``: None (weights in the model dtype), "int8" or "int4" (weight-only).
QUANTIZATIONS = (None, "int8", "int4")

LinearLike = Union[Linear, Int8Linear, Int4Linear]


def make_linear(weight: torch.Tensor, bias: torch.Tensor | None = None, *, quantize: str | None = None,
                dtype: torch.dtype | None = None) -> LinearLike:
    """A layer for ``weight`` (N, K): dense in its own dtype, or weight-only int8 / int4 with ``quantize``
    (activations in ``dtype``, default the weight's dtype)."""
    if quantize is None:
        return Linear(weight, bias)
    return quantize_blocks(quantize, tuple(weight.shape), _row_blocks(weight), bias, dtype or weight.dtype,
                           device=weight.device)


def is_int4(quantize: str | None, shape: tuple[int, int], device: torch.device | str | None = None) -> bool:
    """Whether `quantize_blocks` makes a weight of ``shape`` an int4 layer: with ``quantize="int4"``
    where torch's int4 kernel takes the shape (`int4.supports_int4`; the other layers of an int4 model
    are int8, the nearest format that runs everywhere)."""
    return quantize == "int4" and supports_int4(shape, torch.device("cpu" if device is None else device))


def quantize_blocks(quantize: str, shape: tuple[int, int], blocks: Iterable[tuple[int, Int4Rows]],
                    bias: torch.Tensor | None, dtype: torch.dtype, *,
                    device: torch.device | None = None) -> LinearLike:
    """A quantized layer for a weight of ``shape`` given as ``(first row, rows)`` float blocks: int8, or
    int4 where `is_int4` (whose blocks may also be 4-bit groups as stored: `int4.quantize_int4_blocks`)."""
    if is_int4(quantize, shape, device):
        return quantize_int4_blocks(shape, blocks, bias, dtype)
    if quantize in ("int8", "int4"):
        return quantize_int8_blocks(shape, blocks, bias, dtype, device=device)
    raise ValueError(f"unknown quantization {quantize!r}; expected one of {QUANTIZATIONS}")
