"""The GGUF header: tensor-type table, value types, and a bounds-checked parser for metadata and tensor records.

`read_gguf_header` parses the header only: metadata key/values and one record per tensor, every size and
offset checked against the file size before anything large is allocated. (Our own parser: the ``gguf``
package's reader builds one numpy view per vocabulary string, ~2 s for a 49k vocabulary; this takes
~0.05 s.) It reads no tensor data; `quants` turns a record's bytes into floats and `file`
builds a model from the whole. Shapes are in torch/numpy order (GGUF lists them fastest-varying first).
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ....errors import ModelLoadError

__all__ = ["SUPPORTED_TYPES", "GGUFHeader", "GGUFTensorInfo", "read_gguf_header"]

# ---------------------------------------------------------------------------------------- tensor types
# ggml type id -> (name, elements per block, bytes per block) for the types this module can read.
_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    20: ("IQ4_NL", 32, 18),
    23: ("IQ4_XS", 256, 136),
    30: ("BF16", 1, 2),
}
SUPPORTED_TYPES = tuple(name for name, _, _ in _TYPES.values())

# ------------------------------------------------------------------------------------ header constants
_MAGIC = b"GGUF"
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_STRING, _ARRAY = 8, 9
# GGUF value type id -> (struct format, numpy dtype) for fixed-size scalars.
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("<B", "<u1"),
    1: ("<b", "<i1"),
    2: ("<H", "<u2"),
    3: ("<h", "<i2"),
    4: ("<I", "<u4"),
    5: ("<i", "<i4"),
    6: ("<f", "<f4"),
    7: ("<?", "<u1"),
    10: ("<Q", "<u8"),
    11: ("<q", "<i8"),
    12: ("<d", "<f8"),
}
_MAX_DIMS = 4  # ggml tensors have at most four dimensions
_DEFAULT_ALIGNMENT = 32
_CORRUPT_HINT = "the file is damaged or incomplete; download it again"


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    shape: tuple[int, ...]  # torch order (slowest-varying first), i.e. the GGUF dims reversed
    type_id: int  # ggml type id
    offset: int  # absolute byte offset of the data in the file
    nbytes: int  # -1 when the type is unknown to this module

    @property
    def type_name(self) -> str:
        return _type_name(self.type_id)


@dataclass
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]  # every key/value; string arrays as lists, numeric arrays as numpy arrays
    tensors: dict[str, GGUFTensorInfo]  # in file order
    file_size: int
    #: Why the tensor data does not fit in the file (a download cut short), when the header was read with
    #: ``cut_short_ok``; `read_gguf` refuses such a file with it. None: every tensor lies inside the file.
    damage: str | None = None

    def tensor_bytes(self, info: GGUFTensorInfo) -> int | None:
        """Bytes of one tensor's data, also for types this module cannot read (from the ``gguf`` package's
        table of block sizes); None for a type id neither knows."""
        if info.nbytes >= 0:
            return info.nbytes
        try:
            from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

            block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(info.type_id)]
        except (ImportError, ValueError, KeyError):
            return None
        return math.prod(info.shape) // block * block_bytes



class _Corrupt(Exception):
    """Internal: the header contradicts itself or the file size (turned into a ModelLoadError)."""


def _type_name(type_id: int) -> str:
    if type_id in _TYPES:
        return _TYPES[type_id][0]
    try:
        from gguf import GGMLQuantizationType

        return GGMLQuantizationType(type_id).name
    except (ImportError, ValueError):  # gguf missing, or an id newer than it knows
        return f"type {type_id}"


# ------------------------------------------------------------------------------------------- the header
class _Cursor:
    """Bounds-checked little-endian reads from a buffer (an mmap of the file)."""

    def __init__(self, buf: Any, size: int) -> None:
        self.buf, self.size, self.pos = buf, size, 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or n > self.size - self.pos:
            raise _Corrupt(f"{what} runs past the end of the file (needs {n} bytes at offset {self.pos})")

    def u32(self) -> int:
        self.need(4, "a 32-bit field")
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self) -> int:
        self.need(8, "a 64-bit field")
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def string(self) -> str:
        n = self.u64()
        self.need(n, "a string")
        text = bytes(self.buf[self.pos : self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return text

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            fmt = _SCALARS[vtype][0]
            size = struct.calcsize(fmt)
            self.need(size, "a value")
            (v,) = struct.unpack_from(fmt, self.buf, self.pos)
            self.pos += size
            return v
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            if depth > 2:
                raise _Corrupt("arrays nested too deeply")
            etype = self.u32()
            count = self.u64()
            if etype in _SCALARS:
                dtype = np.dtype(_SCALARS[etype][1])
                self.need(count * dtype.itemsize, "an array")
                arr = np.frombuffer(bytes(self.buf[self.pos : self.pos + count * dtype.itemsize]), dtype=dtype)
                self.pos += count * dtype.itemsize
                return arr.astype(bool) if etype == 7 else arr
            if etype == _STRING:
                self.need(count * 8, "a string array")  # every string costs at least its 8-byte length
                return self._strings(count)
            if etype == _ARRAY:
                self.need(count * 12, "an array of arrays")
                return [self.value(_ARRAY, depth + 1) for _ in range(count)]
            raise _Corrupt(f"unknown array element type {etype}")
        raise _Corrupt(f"unknown value type {vtype}")

    def _strings(self, count: int) -> list[str]:
        buf, size, pos, out = self.buf, self.size, self.pos, []
        unpack = _U64.unpack_from
        for _ in range(count):
            if pos + 8 > size:
                raise _Corrupt("a string array runs past the end of the file")
            (n,) = unpack(buf, pos)
            pos += 8
            if n > size - pos:
                raise _Corrupt("a string array runs past the end of the file")
            out.append(buf[pos : pos + n].decode("utf-8", errors="replace"))
            pos += n
        self.pos = pos
        return out


def read_gguf_header(path: str | Path, *, cut_short_ok: bool = False) -> GGUFHeader:
    """Parse a GGUF header: metadata and tensor records, each checked against the file size.

    Raises `ModelLoadError` (one line) for a file that is not GGUF, is truncated, or whose sizes and
    offsets point outside the file. Reads no tensor data. With ``cut_short_ok`` a header that is whole but
    whose tensor data runs past the end of the file (a download cut short) is returned with the reason
    in ``damage`` instead (``llmbuilder info`` describes such a file).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            if size < 24:
                raise ModelLoadError(
                    f"{path.name} is not a GGUF file (only {size} bytes)", hint="pass a .gguf model file"
                )
            head = f.read(4)
            if head != _MAGIC:
                raise ModelLoadError(
                    f"{path.name} is not a GGUF file (it does not start with 'GGUF')", hint="pass a .gguf model file"
                )
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return _parse_header(path, mm, size, cut_short_ok)
    except OSError as exc:
        hint = "check the path and its permissions"
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}", hint=hint) from None
    except _Corrupt as exc:
        raise ModelLoadError(f"{path.name}: corrupt GGUF header: {exc}", hint=_CORRUPT_HINT) from None
    except (struct.error, ValueError, OverflowError, MemoryError) as exc:
        raise ModelLoadError(f"{path.name}: corrupt GGUF header: {exc}", hint=_CORRUPT_HINT) from None


def _parse_header(path: Path, mm: Any, size: int, cut_short_ok: bool = False) -> GGUFHeader:
    cur = _Cursor(mm, size)
    cur.pos = 4
    version = cur.u32()
    if version not in (2, 3):
        if version & 0xFFFF == 0 and (version >> 24) in (2, 3):
            raise ModelLoadError(
                f"{path.name} is a big-endian GGUF file", hint="use the little-endian version of the model"
            )
        if version == 1:
            hint = "convert the model again with a recent llama.cpp"
            raise ModelLoadError(f"{path.name} is a GGUF version 1 file (too old)", hint=hint)
        raise _Corrupt(f"unknown GGUF version {version}")
    n_tensors, n_kv = cur.u64(), cur.u64()
    cur.need(n_kv * 13, f"{n_kv} metadata entries")  # key length 8 + at least 1 byte + type 4
    cur.need(n_tensors * 24, f"{n_tensors} tensor records")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        if key in metadata:
            raise _Corrupt(f"metadata key {key!r} appears twice")
        metadata[key] = cur.value(cur.u32())

    records = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.u32()
        if not 1 <= n_dims <= _MAX_DIMS:
            raise _Corrupt(f"tensor {name!r} has {n_dims} dimensions")
        dims = [cur.u64() for _ in range(n_dims)]
        type_id, offset = cur.u32(), cur.u64()
        records.append((name, dims, type_id, offset))

    alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise _Corrupt(f"general.alignment is {alignment!r}, not a power of two")
    data_start = -(-cur.pos // alignment) * alignment

    tensors: dict[str, GGUFTensorInfo] = {}
    damage: list[str] = []  # data past the end of the file: fatal unless cut_short_ok
    for name, dims, type_id, offset in records:
        if name in tensors:
            raise _Corrupt(f"tensor {name!r} appears twice")
        n = math.prod(dims)
        nbytes = -1
        if type_id in _TYPES:
            _, block, block_bytes = _TYPES[type_id]
            if dims[0] % block:
                raise _Corrupt(f"tensor {name!r}: row length {dims[0]} is not a multiple of the block size {block}")
            nbytes = n // block * block_bytes
            if data_start + offset + nbytes > size:
                damage.append(
                    f"tensor {name!r} ({nbytes} bytes at offset {offset}) lies past the end of the file "
                    f"({size} bytes)"
                )
        elif data_start + offset > size:
            damage.append(f"tensor {name!r} starts past the end of the file")
        tensors[name] = GGUFTensorInfo(name, tuple(reversed(dims)), type_id, data_start + offset, nbytes)
    total = sum(t.nbytes for t in tensors.values() if t.nbytes > 0)
    if not damage and total > size - data_start:  # tensors may not share bytes: together they must fit
        damage.append(f"its tensors declare {total} bytes but the file holds only {size - data_start} bytes of data")
    if damage and not cut_short_ok:
        raise _Corrupt(damage[0])
    return GGUFHeader(path=path, version=version, metadata=metadata, tensors=tensors, file_size=size,
                      damage=f"{path.name}: corrupt GGUF header: {damage[0]}" if damage else None)
