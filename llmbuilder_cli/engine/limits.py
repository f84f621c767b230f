"""What a model file may ask of this machine, checked before anything large is allocated.

A model file declares sizes (layer counts, tensor shapes, a zip member's uncompressed size) and the
loaders build lists, tables and tensors from them. A hostile or damaged file can declare far more than it
holds, so every loader checks a declaration against two facts before acting on it:

* the file itself: the tensors a config implies must be in the file (`check_tensor_count`; tensor byte
  ranges are checked against the file size by each format's header reader);
* this machine: the bytes the weights take once loaded must fit in the memory that is available
  (`check_memory`): ``MemAvailable`` from ``/proc/meminfo`` (plus free swap), and the process's own
  address-space limit (``ulimit -v``) less what it already uses. Where neither can be read (not Linux),
  only the file checks apply.

`check_finite` refuses weights that hold NaN or infinity (a damaged file without checksums: they would
only ever produce NaN scores).
"""

from __future__ import annotations

import os
from typing import Any

try:
    import resource
except ImportError:  # pragma: no cover - Windows has no resource module (nor ulimit -v)
    resource = None  # type: ignore[assignment]

from ..errors import ModelLoadError, OutOfMemoryError

__all__ = ["available_memory", "check_memory", "check_cache", "check_finite", "human_bytes"]


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def _address_space_used() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def available_memory() -> int | None:
    """Bytes this process can still allocate, or None when this machine does not say."""
    limits = []
    info = _meminfo()
    if "MemAvailable" in info:
        limits.append(info["MemAvailable"] + info.get("SwapFree", 0))
    if resource is not None:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        used = _address_space_used()
        if soft != resource.RLIM_INFINITY and used is not None:
            limits.append(max(0, soft - used))
    return min(limits) if limits else None


def check_memory(needed: int, what: str, hint: str = "") -> None:
    """Refuse (`OutOfMemoryError`) when ``needed`` bytes for ``what`` exceed the available memory."""
    free = available_memory()
    if free is not None and needed > free:
        raise OutOfMemoryError(
            f"{what} needs {human_bytes(needed)} of memory but only {human_bytes(free)} is available",
            hint=hint or "free memory, use a smaller model or quantization (--quantize int8/int4, --dtype bfloat16)",
        )


_FINITE_CHUNK = 1 << 18  # elements checked at a time: torch.isfinite makes temporaries of its input's size


def check_finite(tensor: Any, name: str, source: str) -> None:
    """Refuse a floating-point weight that holds NaN or infinity.

    Checked a chunk at a time: ``torch.isfinite`` of a whole tensor allocates temporaries as large as the
    tensor (Gemma 3's 671 MB float32 embedding raised the load's peak memory by 770 MB)."""
    import torch

    if not tensor.is_floating_point() or not tensor.numel():
        return
    flat = tensor.view(-1) if tensor.is_contiguous() else tensor.reshape(-1)
    for start in range(0, flat.numel(), _FINITE_CHUNK):
        chunk = flat[start : start + _FINITE_CHUNK]
        if not bool(torch.isfinite(chunk).all()):
            bad = "NaN" if bool(torch.isnan(chunk).any()) else "infinite"
            raise ModelLoadError(f"{source}: weight {name!r} holds {bad} values",
                                 hint="the file is damaged; download or export it again")


def check_cache(shape: tuple[int, ...], dtype: Any) -> None:
    """Refuse a key/value cache (keys and values, each of ``shape``) that does not fit in memory: its
    length follows the prompt and --max-tokens up to the model's context, which a file may declare huge."""
    import math

    import torch

    needed = 2 * math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    check_memory(needed, f"the key/value cache for {shape[-2]:,} positions",
                 hint="use a smaller --max-tokens or a shorter prompt")
