"""Which prompts a packed prefill (``model.prefill``, see ``engine/batching.py``) computes exactly as alone.

A packed prefill runs the linear layers once on the rows of several prompts together. A matrix product's
row does not always come out bit-identical when the product has a different number of rows: the BLAS
picks its kernel by the row count. Measured with torch 2.13's CPU float32 products (MKL, 2 threads): a
product of 4, 8 or 12 and more rows gives each row exactly what any larger product gives, while 1-3, 5-7
and 9-11 rows take other kernels whose last bits differ; bfloat16 products agree at every count except one
row (which `kernels.dense.Linear` runs through ``torch.mv``); weight-only int8 switches kernels at 16 rows.
That is a property of the machine's libraries, so it is measured, not assumed: `exact_row_counts` runs
the model's own layers (`row_products`) on random rows once per model and lists the counts up to
`PROBE_ROWS` whose rows match the product of `2·PROBE_ROWS` rows. A prompt whose token count is among
them (or larger than `PROBE_ROWS`) gets, packed, bit-identical keys, values and logits to its own
prefill; the others prefill alone (one product of a few rows costs about one decode step).
"""

from __future__ import annotations

import weakref
from typing import Any, NamedTuple

import torch

__all__ = ["PROBE_ROWS", "PackedLayout", "exact_row_counts", "packed_layout", "packs_exactly"]


class PackedLayout(NamedTuple):
    """Where each of S sequences sits in a packed prefill of N = ΣT_s rows."""

    lengths: list[int]  # T_s: new tokens of sequence s
    ends: list[int]  # its positions run starts[s] .. ends[s]-1
    offsets: list[int]  # its first row among the N packed rows
    positions: torch.Tensor  # (N,) the absolute position of every packed row


def packed_layout(ids: list[torch.Tensor], starts: list[int], context: int, what: str,
                  device: torch.device) -> PackedLayout:
    """The layout of the sequences ``ids[s]`` (T_s,) starting at ``starts[s]``, for a model's ``prefill``;
    a ValueError naming ``what`` (the model's word for its ``context``) when a position passes it."""
    lengths = [int(t.shape[0]) for t in ids]
    ends = [s + n for s, n in zip(starts, lengths)]
    if max(ends) > context:
        raise ValueError(f"position {max(ends) - 1} exceeds the {what} {context}")
    offsets = [sum(lengths[:j]) for j in range(len(lengths))]
    positions = torch.cat([torch.arange(s, e, device=device) for s, e in zip(starts, ends)])  # (N,)
    return PackedLayout(lengths, ends, offsets, positions)


PROBE_ROWS = 32  # row counts above this are taken to compute every row as any larger product does

_measured: "weakref.WeakKeyDictionary[Any, frozenset[int]]" = weakref.WeakKeyDictionary()


@torch.inference_mode()
def exact_row_counts(model: Any) -> frozenset[int]:
    """Row counts 1..PROBE_ROWS for which each of the model's linear layers gives every row exactly what a
    product of more rows gives it (measured once per model, on random inputs in the model's dtype)."""
    found = _measured.get(model)
    if found is None:
        g = torch.Generator().manual_seed(0)
        counts = set(range(1, PROBE_ROWS + 1))
        for product, width in model.row_products():
            x = torch.randn(2 * PROBE_ROWS, width, generator=g).to(device=model.device, dtype=model.dtype)
            whole = product(x)  # (2·PROBE_ROWS, N)
            counts = {m for m in counts if torch.equal(product(x[:m]), whole[:m])}
        found = _measured[model] = frozenset(counts)
    return found


def packs_exactly(model: Any, rows: int) -> bool:
    """Whether a prefill of ``rows`` new tokens computes, packed with others, what it computes alone."""
    return rows > PROBE_ROWS or rows in exact_row_counts(model)
