"""Where and how a model runs: the device (`resolve_device`), the dtype of weights and activations
(`resolve_dtype`, `DTYPES`) and the CPU thread count (`choose_threads`, `max_threads`).

Every format's loader asks these; the CLI's ``doctor`` command asks them too, without loading a model.
"""

from __future__ import annotations

import os

import torch

from .. import cpu_load
from ..cpu_load import SMALL_MODEL_PARAMETERS, AutoThreads
from ..errors import UsageError

__all__ = ["DTYPES", "resolve_device", "resolve_dtype", "choose_threads", "max_threads"]

#: torch's own thread count before any run changed it: the physical cores, or OMP_NUM_THREADS.
_TORCH_THREADS = torch.get_num_threads()
#: --dtype values; "auto" is resolved per device by `resolve_dtype`.
DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(spec: str | None = "auto") -> torch.device:
    """``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` → a usable device."""
    text = (spec or "auto").strip().lower()
    hint = "use --device auto, cpu, cuda, cuda:N or mps"
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device {spec!r}", hint=hint) from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("CUDA is not available on this machine", hint="use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(
                f"there is no CUDA device {dev.index} (this machine has {torch.cuda.device_count()})",
                hint="use --device cuda:0 or auto",
            )
        return dev
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError("MPS (Apple GPU) is not available on this machine", hint="use --device cpu (or auto)")
        return dev
    raise UsageError(f"device type {dev.type!r} is not supported", hint=hint)


def resolve_dtype(spec: str | None, device: torch.device) -> torch.dtype:
    """``auto`` (float32 on CPU and MPS; on CUDA bfloat16 where supported, else float16), ``float32``,
    ``bfloat16`` or ``float16`` → the dtype every weight and activation runs in."""
    text = (spec or "auto").strip().lower() if isinstance(spec, str) or spec is None else spec
    if text not in DTYPES:
        raise UsageError(f"unknown dtype {spec!r}", hint="use --dtype auto, float32, bfloat16 or float16")
    if text == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, text)


def choose_threads(requested: int | str | AutoThreads, num_parameters: int) -> int:
    """CPU threads for generation: a requested count, or for "auto" what `cpu_load.auto_thread_count`
    picks from the model's size, the CPUs this process may use and how busy they are now."""
    if requested == "auto" or isinstance(requested, AutoThreads):
        small = num_parameters < SMALL_MODEL_PARAMETERS
        busy = None if small else cpu_load.busy_now(requested.since if isinstance(requested, AutoThreads) else None)
        return cpu_load.auto_thread_count(num_parameters, cpus=cpu_load.usable_cpus(), ceiling=_TORCH_THREADS,
                                          busy=busy)
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
        raise UsageError(f"threads must be 'auto' or a whole number >= 1 (got {requested!r})", hint="use threads=1")
    limit = max_threads()
    if requested > limit:
        raise UsageError(
            f"{requested} threads is more than this machine can use (at most {limit}: 4 per CPU core)",
            hint=f"use --threads {os.cpu_count() or 1} (one per core) or leave it out",
        )
    return requested


def max_threads() -> int:
    """The most CPU threads a run may ask for: 4 per core (far more only costs memory, or crashes torch)."""
    return 4 * (os.cpu_count() or 1)
