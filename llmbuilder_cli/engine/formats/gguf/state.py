"""A GGUF file's tensors as a lazy state dict: read and dequantized when the model builder asks for them.

`read_gguf` (``file.py``) checks names and shapes from the header alone and hands the builder a
`GGUFState`. Each lookup then reads that one tensor, a block of rows at a time, dequantizes the block
(``quants.dequantize``), puts it in transformers' layout and writes it into the final tensor in the
final dtype. Nothing else is ever held: no float32 copy of the whole model, no full-size temporaries of
the dequantization kernels (a block is at most `BLOCK_ELEMENTS` values), and no memory-mapped file pages
counted in the process's memory. A builder that fuses layers reads them in place (`stacked`); one that
quantizes takes float32 blocks (`row_blocks`) and never sees a whole float weight. An int4 layer takes a
weight stored in 4-bit groups of 32 (Q4_0, Q4_1, Q4_K) as it is stored (`int4_row_blocks`): its codes,
with each group's scale and zero point, never dequantized nor quantized again.

Layouts (``Entry.layout``): ``"plain"``; ``"unpermute"``, Llama Q/K weights and biases whose rows
llama.cpp's converter interleaved per head (undone head by head, so blocks are aligned to whole heads);
``"transpose"``, GPT-2's (out, in) matrices turned into transformers' Conv1D (in, out); ``"minus_one"``,
Gemma norm weights, which llama.cpp's converter stores as ``1 + weight`` (transformers' value is the stored
one minus 1, computed in float32).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ....errors import ModelLoadError
from ...limits import check_finite
from ..weights_io import stack_rows
from .header import _CORRUPT_HINT, _TYPES, GGUFTensorInfo
from .quants import INT4_GROUP_TYPES, _few_threads, dequantize, int4_groups

__all__ = ["BLOCK_ELEMENTS", "Entry", "GGUFState", "unpermute_rows"]

#: Values dequantized per step (256 KiB as float32). The kernels' temporaries must stay small: glibc's
#: malloc raises its mmap threshold to the size of the largest block freed, so 4 MiB temporaries made the
#: model's own tensors land in the heap between them, and the fragmented heap kept up to 500 MiB more
#: resident (SmolLM2, int8). Smaller blocks also stay in cache: 64Ki values loaded fastest of 16Ki..1Mi.
BLOCK_ELEMENTS = 1 << 16

_FLOAT_TYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def unpermute_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row order. Its converter stores each head's rotary pairs interleaved
    (rows 0, d/2, 1, d/2+1, ...) where transformers keeps the two halves apart (rows 0..d/2-1, then d/2..).
    w: (n_heads * head_dim, ...) weight or bias of whole heads."""
    rows = w.shape[0]
    rest = w.shape[1:]
    # (heads, head_dim/2, 2, ...) -> (heads, 2, head_dim/2, ...)
    return w.reshape(n_heads, rows // n_heads // 2, 2, *rest).transpose(1, 2).reshape(rows, *rest).contiguous()


@dataclass(frozen=True)
class Entry:
    """Where one state tensor comes from and how its stored layout becomes transformers' layout."""

    info: GGUFTensorInfo
    layout: str = "plain"  # "plain" | "unpermute" | "transpose" | "minus_one"
    heads: int = 1  # for "unpermute": the number of heads the rows hold

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape in the state (after the layout change)."""
        s = self.info.shape
        return (s[1], s[0]) if self.layout == "transpose" else s


class GGUFState(Mapping[str, torch.Tensor]):
    """``{transformers name: tensor}`` over one GGUF file, every tensor read on lookup (each lookup reads
    again: a model builder takes each tensor once) into ``dtype`` on ``device``."""

    def __init__(self, path: Path, entries: Mapping[str, Entry], *, dtype: torch.dtype,
                 device: torch.device | str = "cpu") -> None:
        self.path = Path(path)
        self._entries = dict(entries)
        self.dtype = dtype
        self.device = torch.device(device)

    # -------------------------------------------------------------------------------- mapping protocol
    def __getitem__(self, key: str) -> torch.Tensor:
        entry = self._entries[key]
        out = torch.empty(entry.shape, dtype=self.dtype, device=self.device)
        self._read_into(entry, out)
        check_finite(out, entry.info.name, self.path.name)
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    # ------------------------------------------------------------------------------------------- views
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape, from the header (nothing is read)."""
        return {k: e.shape for k, e in self._entries.items()}

    def renamed(self, names: Mapping[str, str], *, device: torch.device | str | None = None) -> "GGUFState":
        """The same tensors under new names, ``names`` = {new name: current name} (others are dropped),
        optionally read onto another device."""
        entries = {new: self._entries[old] for new, old in names.items()}
        return GGUFState(self.path, entries, dtype=self.dtype, device=self.device if device is None else device)

    def stacked(self, keys: list[str]) -> torch.Tensor:
        """The tensors ``keys`` concatenated along their first dimension, each read in place."""
        def read_into(key: str, rows: torch.Tensor) -> None:
            self._read_into(self._entries[key], rows)
            check_finite(rows, self._entries[key].info.name, self.path.name)

        return stack_rows(keys, [self._entries[k].shape for k in keys], read_into, dtype=self.dtype,
                          device=self.device)

    def row_blocks(self, key: str, max_elements: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """``(first row, rows)`` blocks of the matrix ``key`` as float32 on the CPU, in the state's row
        order, each valid until the next one is produced (to quantize a weight without holding it whole)."""
        entry = self._entries[key]
        if len(entry.shape) != 2 or entry.layout == "transpose":
            raise ValueError(f"{key!r} cannot be read by rows: shape {entry.shape}, layout {entry.layout}")
        with open(self.path, "rb") as f, _few_threads():
            for r0, block in self._blocks(f, entry, max_elements or BLOCK_ELEMENTS):
                block = block.float()
                check_finite(block, entry.info.name, self.path.name)
                yield r0, block

    def int4_row_blocks(self, key: str, max_elements: int | None = None
                        ) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] | None:
        """The matrix ``key`` as it is stored when that is 4-bit groups of 32 values along its rows (else
        None): ``(first row, (codes, scale, zero))`` blocks in the state's row order, codes (n, cols) uint8
        in 0..15 and scale, zero (n, cols/32) float32, the weight being ``(q - 8) * scale + zero``."""
        entry = self._entries[key]
        if (_TYPES[entry.info.type_id][0] not in INT4_GROUP_TYPES or len(entry.shape) != 2
                or entry.layout not in ("plain", "unpermute")):
            return None
        return self._int4_row_blocks(entry, max_elements or BLOCK_ELEMENTS)

    def _int4_row_blocks(self, entry: Entry, max_elements: int
                         ) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        with open(self.path, "rb") as f, _few_threads():
            for r0, (codes, scale, zero) in self._blocks(f, entry, max_elements, decode=int4_groups):
                check_finite(scale, entry.info.name, self.path.name)  # a NaN or infinite d / dmin
                check_finite(zero, entry.info.name, self.path.name)
                yield r0, (codes, scale, zero)

    # ----------------------------------------------------------------------------------------- reading
    def _read_into(self, entry: Entry, out: torch.Tensor) -> None:
        """Fill ``out`` (contiguous, ``entry.shape``) with the tensor, block by block."""
        info = entry.info
        name = _TYPES[info.type_id][0]
        with open(self.path, "rb") as f, _few_threads():
            if (entry.layout == "plain" and _FLOAT_TYPES.get(name) == out.dtype and out.device.type == "cpu"
                    and out.is_contiguous()):
                _read_exact(f, info, info.offset, out.view(-1).view(torch.uint8), self.path)  # stored as is
                return
            if entry.layout == "transpose":
                for r0, block in self._blocks(f, entry, BLOCK_ELEMENTS):  # block: (n, in) source rows
                    out[:, r0 : r0 + block.shape[0]].copy_(block.t())  # out: (in, out)
                return
            flat = out.view(out.shape[0], -1) if out.dim() > 1 else out.view(-1, 1)
            for r0, block in self._blocks(f, entry, BLOCK_ELEMENTS):
                flat[r0 : r0 + block.shape[0]].copy_(block.view(block.shape[0], -1))

    def _blocks(self, f, entry: Entry, max_elements: int, decode=dequantize) -> Iterator[tuple[int, Any]]:
        """``(first row, rows)`` of the stored tensor in row blocks (whole heads for "unpermute"), each
        dequantized (float32, or the stored float type) and un-permuted; a vector comes whole. With
        ``decode=int4_groups`` (a matrix), rows are the tuple of tensors it returns, each un-permuted."""
        info = entry.info
        _, per_block, block_bytes = _TYPES[info.type_id]
        if len(info.shape) == 1:  # a vector (a norm or a bias) is small: read it whole
            raw = torch.empty(info.nbytes, dtype=torch.uint8)
            _read_exact(f, info, info.offset, raw, self.path)
            vec = dequantize(raw, info.type_id, info.shape)  # (rows,)
            if entry.layout == "unpermute":
                vec = unpermute_rows(vec, entry.heads)
            elif entry.layout == "minus_one":
                vec = vec.float() - 1.0
            yield 0, vec
            return
        rows, cols = info.shape[0], math.prod(info.shape[1:])
        row_bytes = cols // per_block * block_bytes
        align = rows // entry.heads if entry.layout == "unpermute" else 1
        step = max(align, max_elements // max(1, cols) // align * align)
        raw = torch.empty(min(rows, step) * row_bytes, dtype=torch.uint8)  # reused for every block
        for r0 in range(0, rows, step):
            n = min(step, rows - r0)
            buf = raw[: n * row_bytes]
            _read_exact(f, info, info.offset + r0 * row_bytes, buf, self.path)
            block = decode(buf, info.type_id, (n, cols))  # (n, cols), or tensors of n rows
            if entry.layout == "unpermute":
                block = (unpermute_rows(block, n // align) if isinstance(block, torch.Tensor)
                         else tuple(unpermute_rows(t, n // align) for t in block))
            yield r0, block


def _read_exact(f, info: GGUFTensorInfo, offset: int, buf: torch.Tensor, path: Path) -> None:
    """Read ``buf.numel()`` bytes at ``offset`` into the uint8 tensor ``buf``."""
    view = memoryview(buf.numpy())
    f.seek(offset)
    got = 0
    while got < len(view):
        k = f.readinto(view[got:])
        if not k:
            raise ModelLoadError(f"{path.name}: tensor {info.name} is cut short", hint=_CORRUPT_HINT)
        got += k
