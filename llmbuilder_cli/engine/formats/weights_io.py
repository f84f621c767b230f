"""Read safetensors tensors into the memory they will run from: mapped when kept as stored, else read.

``hf_dir.inspect_hf_dir`` validates a directory from the headers (names, shapes, dtypes); this module then
gets the data, one tensor at a time, when the model builder asks for it (`LazyState`), so a builder that
fuses or converts layers never holds the whole model twice:

* **memory-mapped** (``mmap=True``, CPU, stored dtype == target dtype): the tensor is a view of the file
  mapping, no copy at all. Only for models that keep every tensor as stored: a mapped file's pages count
  in the process's resident memory for as long as the mapping lives, so a tensor that is fused or
  quantized after mapping would be held twice;
* **read** (otherwise): the bytes are read straight into the destination tensor, or, when the dtype
  changes or the tensor goes to a GPU, through a temporary buffer of at most ``CHUNK_BYTES`` of rows
  (a float32 file loaded as bfloat16 never holds a float32 tensor).

The safetensors format: an 8-byte little-endian header length, a JSON header
``{name: {"dtype", "shape", "data_offsets": [begin, end]}}`` (offsets relative to the end of the header),
then the data, little-endian (used as is: this module refuses to run on a big-endian machine).
"""

from __future__ import annotations

import json
import math
import mmap
import struct
import sys
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch

from ...errors import ModelLoadError
from ..limits import check_finite

__all__ = ["SafetensorsFile", "LazyState", "CHUNK_BYTES", "stack_rows"]

#: Largest temporary buffer used for a conversion (bytes of stored data).
CHUNK_BYTES = 4 << 20
#: Byte alignment a tensor's data must have in the file to be used as a view of the mapping (see `get`).
MAP_ALIGN = 64

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_HINT = "the file is damaged or incomplete; download it again"


class SafetensorsFile:
    """One open safetensors file: its header, and its tensors on request (`get`)."""

    def __init__(self, file: Path) -> None:
        self.file = Path(file)
        if sys.byteorder != "little":  # pragma: no cover - x86 and ARM machines are little-endian
            raise ModelLoadError(f"{self.file}: safetensors data is little-endian and this machine is not",
                                 hint="run on a little-endian machine (x86-64, ARM64)")
        self._f = open(self.file, "rb", buffering=0)
        self._map: mmap.mmap | None = None
        try:
            self.size = self.file.stat().st_size
            self.header, self.data_start = self._read_header()
        except BaseException:
            self._f.close()
            raise

    def _read_header(self) -> tuple[dict, int]:
        head = self._f.read(8)
        if len(head) != 8:
            raise ModelLoadError(f"{self.file} is not a safetensors file (too short)", hint=_HINT)
        (n,) = struct.unpack("<Q", head)
        if n > self.size - 8:
            raise ModelLoadError(f"{self.file}: header length {n} exceeds the file", hint=_HINT)
        try:
            header = json.loads(self._f.read(n))
        except ValueError as exc:
            raise ModelLoadError(f"{self.file}: unreadable safetensors header ({exc})", hint=_HINT) from None
        if not isinstance(header, dict):
            raise ModelLoadError(f"{self.file}: the safetensors header is not an object", hint=_HINT)
        return header, 8 + n

    def close(self) -> None:
        """Close the file; tensors already mapped keep the mapping alive as long as they live."""
        self._f.close()
        self._map = None

    def __enter__(self) -> "SafetensorsFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def entry(self, name: str) -> tuple[torch.dtype, tuple[int, ...], int]:
        """(stored dtype, shape, absolute byte offset) of ``name``, checked against the file size."""
        info = self.header.get(name)
        if not isinstance(info, dict):
            raise ModelLoadError(f"{self.file}: no tensor named {name!r}", hint=_HINT)
        dtype = _DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise ModelLoadError(f"{self.file}: tensor {name!r} is stored as {info.get('dtype')!r}, "
                                 "which cannot be run", hint="use a float16/bfloat16/float32 export of the model")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        ok = (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
              and isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets))
        itemsize = torch.empty((), dtype=dtype).element_size()
        if (not ok or offsets[0] < 0 or offsets[1] - offsets[0] != math.prod(shape) * itemsize
                or self.data_start + offsets[1] > self.size):
            raise ModelLoadError(f"{self.file}: tensor {name!r} has inconsistent offsets or lies past the end",
                                 hint=_HINT)
        return dtype, tuple(shape), self.data_start + offsets[0]

    def get(self, name: str, *, dtype: torch.dtype, device: torch.device, mmap_ok: bool = False,
            out: torch.Tensor | None = None, scratch: torch.Tensor | None = None) -> torch.Tensor:
        """The tensor ``name`` in ``dtype`` on ``device``: a view of the file mapping when ``mmap_ok`` and
        nothing needs converting or moving (and the data starts on a MAP_ALIGN boundary), else read into ``out``
        (a contiguous tensor of that shape: e.g. rows of a fused weight) or a new tensor. Conversions go
        through ``scratch`` (bytes, at least CHUNK_BYTES) when given, so repeated reads reuse one buffer."""
        stored, shape, offset = self.entry(name)
        itemsize = torch.empty((), dtype=stored).element_size()
        n = math.prod(shape)
        # Mapped only where the data sits on a 64-byte boundary (the mapping starts on a page): torch's own
        # allocations are 64-byte aligned, and MKL's float32 products round differently on a misaligned
        # operand on some CPUs (measured on AMD EPYC: 5e-7 apart), so an unaligned view would break the
        # bit-for-bit equality with the same weights read into memory. safetensors aligns only to 8.
        if out is None and mmap_ok and stored == dtype and device.type == "cpu" and n and offset % MAP_ALIGN == 0:
            if self._map is None:
                # Private (copy-on-write) so torch gets a writable buffer; nothing ever writes to it.
                self._map = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_COPY)
            return torch.frombuffer(self._map, dtype=stored, count=n, offset=offset).view(shape)
        if out is None:
            out = torch.empty(shape, dtype=dtype, device=device)
        elif tuple(out.shape) != shape or not out.is_contiguous():
            raise ValueError(f"cannot read {name!r} {shape} into a tensor of shape {tuple(out.shape)}")
        if n == 0:
            return out
        self._f.seek(offset)
        if stored == out.dtype and out.device.type == "cpu":
            self._read_into(out, name)
            return out
        rows = shape[0] if shape else 1
        flat = out.view(rows, -1)  # (rows, elements per row)
        step = max(1, CHUNK_BYTES // (flat.shape[1] * itemsize))
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            count = (r1 - r0) * flat.shape[1]
            if scratch is not None and count * itemsize <= scratch.numel():
                buf = scratch[: count * itemsize].view(stored).view(r1 - r0, -1)
            else:
                buf = torch.empty((r1 - r0, flat.shape[1]), dtype=stored)
            self._read_into(buf, name)
            flat[r0:r1].copy_(buf)  # converts the dtype and/or moves to the device
        return out

    def get_rows(self, name: str, r0: int, r1: int, *, out: torch.Tensor, scratch: torch.Tensor) -> None:
        """Rows ``r0..r1-1`` of the 2-D tensor ``name`` into ``out`` (converted to its dtype), through
        ``scratch`` (bytes, room for the rows as stored) when the dtype differs."""
        stored, shape, offset = self.entry(name)
        itemsize = torch.empty((), dtype=stored).element_size()
        cols = shape[1]
        self._f.seek(offset + r0 * cols * itemsize)
        if stored == out.dtype:
            self._read_into(out, name)
            return
        buf = scratch[: (r1 - r0) * cols * itemsize].view(stored).view(r1 - r0, cols)
        self._read_into(buf, name)
        out.copy_(buf)

    def _read_into(self, buf: torch.Tensor, name: str) -> None:
        view = memoryview(buf.view(-1).view(torch.uint8).numpy())
        got = 0
        while got < len(view):  # raw reads may return less than asked
            k = self._f.readinto(view[got:])
            if not k:
                raise ModelLoadError(f"{self.file}: tensor {name!r} is cut short", hint=_HINT)
            got += k


def stack_rows(keys: list[str], shapes: list[tuple[int, ...]], read_into: Callable[[str, torch.Tensor], object],
               *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """One new tensor holding the tensors ``keys`` (of ``shapes``) one after the other along the first
    dimension, each written in place by ``read_into(key, rows)``: a fused layer without temporary copies."""
    if any(s[1:] != shapes[0][1:] for s in shapes):
        raise ValueError(f"cannot stack tensors of shapes {shapes}")
    out = torch.empty((sum(s[0] for s in shapes), *shapes[0][1:]), dtype=dtype, device=device)
    row = 0
    for key, shape in zip(keys, shapes):
        read_into(key, out[row : row + shape[0]])
        row += shape[0]
    return out


class LazyState(Mapping[str, torch.Tensor]):
    """A state dict whose tensors are read from safetensors files when looked up (each lookup reads
    again: a model builder takes each tensor once). ``names``: {state name: (file, stored name)}.

    `stacked` reads several tensors straight into the rows of one new tensor (a fused layer), and every
    conversion goes through one scratch buffer: no temporary tensors, so the heap does not fragment."""

    def __init__(self, names: Mapping[str, tuple[SafetensorsFile, str]], *, dtype: torch.dtype,
                 device: torch.device, mmap_ok: bool = False) -> None:
        self._names = dict(names)
        self.dtype, self.device, self.mmap_ok = dtype, device, mmap_ok
        self._scratch: torch.Tensor | None = None

    def _get(self, key: str, out: torch.Tensor | None = None) -> torch.Tensor:
        f, stored = self._names[key]
        if self._scratch is None and (f.entry(stored)[0] != self.dtype or self.device.type != "cpu"):
            self._scratch = torch.empty(CHUNK_BYTES, dtype=torch.uint8)
        t = f.get(stored, dtype=self.dtype, device=self.device, mmap_ok=self.mmap_ok, out=out,
                  scratch=self._scratch)
        check_finite(t, stored, str(f.file))
        return t

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._get(key)

    def row_blocks(self, key: str, max_elements: int = 1 << 16) -> Iterator[tuple[int, torch.Tensor]]:
        """``(first row, rows)`` blocks of the 2-D tensor ``key`` as float32, at most ``max_elements``
        each, read one block at a time into one reused buffer (valid until the next block): to quantize
        a large weight without ever holding it whole."""
        f, stored = self._names[key]
        shape = f.entry(stored)[1]
        if len(shape) != 2:
            raise ValueError(f"{key!r} is not a matrix: {shape}")
        rows, cols = shape
        step = max(1, max_elements // max(1, cols))
        block = torch.empty(step * cols, dtype=torch.float32)
        scratch = torch.empty(step * cols * 8, dtype=torch.uint8)  # room for the rows in any stored dtype
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            out = block[: (r1 - r0) * cols].view(r1 - r0, cols)
            f.get_rows(stored, r0, r1, out=out, scratch=scratch)
            check_finite(out, stored, str(f.file))
            yield r0, out

    def stacked(self, keys: list[str]) -> torch.Tensor:
        """The tensors ``keys`` concatenated along their first dimension, read in place."""
        shapes = [self._names[k][0].entry(self._names[k][1])[1] for k in keys]
        return stack_rows(keys, shapes, lambda key, rows: self._get(key, out=rows), dtype=self.dtype,
                          device=self.device)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, key: object) -> bool:
        return key in self._names
