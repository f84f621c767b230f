"""``llmbuilder doctor``: what this installation is and whether it works, for bug reports.

It reports Python and the platform, torch's version and build (CUDA, ROCm or CPU), its threads, the
devices and which dtypes work on each (a tiny matmul checked against float64, timed against float32),
the versions of the libraries llmbuilder-cli uses, the settings file and its profiles, and whether the
built-in demo model (and optionally ``--model``) loads and generates a few tokens.

Plain aligned text by default, one JSON object with ``--json``; both on stdout (the report is what was
asked for). Exit code 0 when every check passed, 1 when one failed; the report names the failed checks.
Informational findings (bfloat16 unusable on this CPU, no GPU) are not failures: only what breaks normal
use is — torch or a required library missing, a damaged settings file or setting, a demo model that is
missing, altered or does not generate, the automatic device/dtype not computing correctly, a ``llmbuilder``
on PATH that is another program (llmbuilder 2.0.0 installs a command of the same name; `_command_name`).
Torch is imported when the command runs, never when the CLI starts; so are importlib.metadata and
hashlib (``llmbuilder --help`` imports this module to list the command's options).
"""

# No `from __future__ import annotations`: with it Typer compiles every option's annotation from a
# string, several times, on each start of the program (see app.py).

import json
import math
import os
import platform
import sys
import time
from typing import Annotated, Any, Optional

import typer

from .._version import __version__
from ..errors import EXIT_OK, EXIT_RUNTIME, LLMBuilderError
from .completion import complete_device, complete_dtype, complete_model

__all__ = ["doctor_command", "collect", "format_report", "PACKAGES"]

#: Distribution → module for the libraries llmbuilder-cli needs (torch is reported on its own).
PACKAGES: dict[str, str] = {
    "tokenizers": "tokenizers",
    "sentencepiece": "sentencepiece",
    "safetensors": "safetensors",
    "gguf": "gguf",
    "numpy": "numpy",
    "jinja2": "jinja2",
    "typer": "typer",
    "rich": "rich",
    "questionary": "questionary",
    "prompt_toolkit": "prompt_toolkit",
    "tomlkit": "tomlkit",
    "huggingface_hub": "huggingface_hub",
    "llguidance": "llguidance",
}
CHECK_PROMPT = "Once upon a time"
CHECK_TOKENS = 8
_DTYPE_NAMES = ("float32", "bfloat16", "float16")
#: Largest acceptable error of a 64x64 matmul, relative to the largest exact value.
_TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2, "float16": 5e-3}


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, LLMBuilderError):
        return exc.one_line()
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class Report:
    """The sections gathered so far and the names of the checks that failed."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.failed: list[str] = []

    def fail(self, name: str) -> None:
        if name not in self.failed:
            self.failed.append(name)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": not self.failed, "failed": list(self.failed), **self.data}


# ------------------------------------------------------------------------------------------ the checks
def _system(report: Report) -> None:
    try:
        cpus_usable = len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        cpus_usable = os.cpu_count()
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    report.data["llmbuilder_cli"] = {"version": __version__, "location": package_dir}
    report.data["python"] = {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
    }
    report.data["platform"] = {
        "system": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpus_usable": cpus_usable,
    }


_HALF_FLAGS = ("avx512_bf16", "amx_bf16", "avx512_fp16", "f16c")  # x86 instructions for 16-bit floats


def _cpu_description() -> tuple[str | None, list[str]]:
    """(CPU model name, the 16-bit-float instruction sets it announces); from /proc/cpuinfo on Linux,
    (platform.processor(), []) elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read(200_000)
    except OSError:
        return platform.processor() or None, []
    name, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name is None:
            name = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return name or platform.processor() or None, [f for f in _HALF_FLAGS if f in flags]


def _dtype_check(torch: Any, device: str, dtype_name: str) -> dict[str, Any]:
    """A 64x64 matmul in ``dtype_name`` on ``device`` against float64 (error), and a 256x256 one timed
    (the fastest of at least 5 runs and 20 ms; one CPU thread, so other work disturbs it less)."""
    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 64, generator=g)  # (64, 64) float32 on the CPU
    b = torch.randn(64, 64, generator=g)
    exact = a.double() @ b.double()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    try:
        got = (a.to(device, dtype) @ b.to(device, dtype)).double().cpu()
        err = float(((got - exact).abs().max() / exact.abs().max()).item())
        x = torch.randn(256, 256, generator=g).to(device, dtype)  # (256, 256)
        (x @ x).sum().item()  # warm-up
        times: list[float] = []
        while len(times) < 5 or (sum(times) < 0.02 and len(times) < 200):  # >= 20 ms of work, median
            sync()
            t0 = time.perf_counter()
            x @ x
            sync()
            times.append(time.perf_counter() - t0)
        best = min(times)
    except Exception as exc:  # an unsupported dtype/device pair raises; that is the finding
        return {"ok": False, "error": _first_line(exc)}
    ok = math.isfinite(err) and err <= _TOLERANCE[dtype_name]
    out: dict[str, Any] = {"ok": ok, "max_relative_error": float(f"{err:.3g}"), "matmul_ms": round(best * 1e3, 3)}
    if not ok:
        out["error"] = f"wrong results (relative error {err:.3g}, tolerance {_TOLERANCE[dtype_name]:g})"
    return out


def _dtypes(torch: Any, device: str) -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        checks = {name: _dtype_check(torch, device, name) for name in _DTYPE_NAMES}
    finally:
        torch.set_num_threads(threads)
    base = checks["float32"].get("matmul_ms")
    for name, c in checks.items():
        if name != "float32" and c.get("ok") and base and c.get("matmul_ms"):
            c["speed_vs_float32"] = round(base / c["matmul_ms"], 2)
    return checks


def _torch(report: Report) -> Any:
    """torch's version, build, threads and devices; returns the module (None when it cannot be imported)."""
    try:
        import torch
    except Exception as exc:
        report.data["torch"] = {"ok": False, "error": _first_line(exc)}
        report.fail("torch")
        return None
    cuda_v, hip_v = torch.version.cuda, getattr(torch.version, "hip", None)
    build = f"ROCm {hip_v}" if hip_v else f"CUDA {cuda_v}" if cuda_v else "CPU"
    cpu_backend = getattr(torch.backends, "cpu", None)
    capability = cpu_backend.get_cpu_capability() if cpu_backend and hasattr(cpu_backend, "get_cpu_capability") else None
    report.data["torch"] = {
        "ok": True,
        "version": torch.__version__,
        "build": build,
        "cuda": cuda_v,
        "hip": hip_v,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "thread_variables": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
        "cpu_capability": capability,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "openmp": bool(torch.backends.openmp.is_available()),
    }
    cpu_name, half = _cpu_description()
    devices: dict[str, Any] = {"cpu": {"available": True, "name": cpu_name, "capability": capability,
                                       "half_precision_instructions": half, "dtypes": _dtypes(torch, "cpu")}}
    if torch.cuda.is_available():
        gpus = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            with torch.cuda.device(i):
                bf16 = bool(torch.cuda.is_bf16_supported())
            gpus.append({
                "index": i,
                "name": props.name,
                "capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / (1 << 30), 1),
                "bf16_supported": bf16,
                "dtypes": _dtypes(torch, f"cuda:{i}"),
            })
        devices["cuda"] = {"available": True, "devices": gpus}
    else:
        reason = "this torch is a CPU build" if build == "CPU" else f"no usable GPU found ({build} build)"
        devices["cuda"] = {"available": False, "reason": reason}
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices["mps"] = {"available": True, "dtypes": _dtypes(torch, "mps")}
    else:
        built = bool(mps is not None and mps.is_built())
        devices["mps"] = {"available": False, "reason": "no Apple GPU" if built or sys.platform != "darwin"
                          else "this torch is built without MPS"}
    report.data["devices"] = devices
    try:
        from ..engine.loading import resolve_device, resolve_dtype

        dev = resolve_device("auto")
        dt = str(resolve_dtype("auto", dev)).replace("torch.", "")
    except Exception as exc:
        report.data["auto"] = {"ok": False, "error": _first_line(exc)}
        report.fail("automatic device")
        return torch
    name = dev.type if dev.type != "cuda" else f"cuda:{dev.index or 0}"
    table = devices["cuda"]["devices"][dev.index or 0]["dtypes"] if dev.type == "cuda" else devices[dev.type]["dtypes"]
    ok = bool(table.get(dt, {}).get("ok"))
    report.data["auto"] = {"ok": ok, "device": name, "dtype": dt}
    if not ok:
        report.fail(f"{dt} on {name} (the automatic choice)")
    return torch


def _packages(report: Report) -> None:
    import importlib
    from importlib import metadata

    out: dict[str, Any] = {}
    broken = False
    for dist, module in PACKAGES.items():
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = None
        entry: dict[str, Any] = {"version": version}
        try:
            importlib.import_module(module)
        except Exception as exc:
            entry["error"] = _first_line(exc)
            broken = True
        out[dist] = entry
    report.data["packages"] = out
    if broken:
        report.fail("packages")


#: The command this tool installs, the second name that only it installs, and its distribution.
COMMAND = "llmbuilder"
SECOND_COMMAND = "llmbuilder-cli"
DISTRIBUTION = "llmbuilder-cli"


def _console_script_owners(name: str) -> list[Any]:
    """The installed distributions that declare a console script ``name``, in sys.path order. Every copy
    counts: a source checkout's ``*.egg-info`` may come before the installed ``*.dist-info`` that
    recorded the script."""
    from importlib import metadata

    return [dist for dist in metadata.distributions()
            if any(ep.group == "console_scripts" and ep.name == name for ep in dist.entry_points)]


def _distribution_name(dist: Any) -> str:
    return (dist.metadata["Name"] or "").lower().replace("_", "-")


def _script_target(path: str) -> str | None:
    """``module:function`` a pip-written console script runs (its ``from M import F`` line), else None."""
    import re

    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return None
    m = re.search(r"^from ([\w.]+) import (\w+)\s*$", head, flags=re.M)
    return f"{m.group(1)}:{m.group(2)}" if m else None


def _who_wrote(path: str, dists: list[Any], name: str) -> Any:
    """Which of ``dists`` installed the file at ``path`` as it is now, among those whose RECORD lists it
    (several do when they declare the same command; the last one installed overwrote the others): the
    one whose RECORD has the file's current sha256, else the one whose entry point the script imports.
    None when no package of this environment installed it."""
    import base64
    import hashlib

    real = os.path.realpath(path)
    listed = []  # (distribution, the sha256 its RECORD gives for the file)
    for dist in dists:
        for file in dist.files or ():
            if os.path.realpath(str(dist.locate_file(file))) == real:
                listed.append((dist, file.hash.value if file.hash and file.hash.mode == "sha256" else None))
                break
    if not listed:
        return None
    try:
        with open(real, "rb") as f:
            digest = base64.urlsafe_b64encode(hashlib.sha256(f.read()).digest()).rstrip(b"=").decode()
    except OSError:
        digest = None
    for dist, recorded in listed:
        if digest is not None and recorded == digest:
            return dist
    target = _script_target(real)
    for dist, _ in listed:
        if any(ep.group == "console_scripts" and ep.name == name and ep.value.replace(" ", "") == target
               for ep in dist.entry_points):
            return dist
    return None


def _label(dist: Any) -> str:
    return f"{dist.metadata['Name']} {dist.version}"


def _command_name(report: Report) -> None:
    """Whether ``llmbuilder`` on PATH starts this tool. llmbuilder 2.0.0 installs a console script of the
    same name; installed after this package it silently replaces it (``llmbuilder generate text -p …``
    then opens llmbuilder's own wizard). Finds the file PATH resolves to and the package that wrote
    it (RECORD hashes, else the script's import line); a command of another package fails the check."""
    import shutil
    import sysconfig

    path = shutil.which(COMMAND)
    declared = _console_script_owners(COMMAND)
    others = [d for d in declared if _distribution_name(d) != DISTRIBUTION]
    restore = f"pip install --force-reinstall --no-deps {DISTRIBUTION}"
    info: dict[str, Any] = {
        "name": COMMAND,
        "path": path,
        "declared_by": list(dict.fromkeys(_label(d) for d in declared)),
        SECOND_COMMAND: shutil.which(SECOND_COMMAND),
        "ok": True,
    }
    if path is None:
        info["note"] = (f"no '{COMMAND}' on PATH: run 'python -m llmbuilder_cli', or add "
                        f"{sysconfig.get_path('scripts')} to PATH")
        report.data["command"] = info
        return
    owner = _who_wrote(path, declared, COMMAND)
    info["package"] = _label(owner) if owner is not None else None
    info["runs"] = _script_target(os.path.realpath(path))
    if owner is not None:
        ours = _distribution_name(owner) == DISTRIBUTION
    else:  # a file no package here recorded: judge by what it imports
        ours = (info["runs"] or "").startswith("llmbuilder_cli.")
    info["ours"] = ours
    if ours:
        if others:
            names = ", ".join(dict.fromkeys(_label(d) for d in others))
            info["note"] = (f"{names} also installs a '{COMMAND}' command, which replaces this one whenever that "
                            f"package is installed after it; '{SECOND_COMMAND}' always starts this tool")
    elif owner is None and info["runs"] is None:
        info["note"] = f"{path} was not installed by a package of this Python environment"
    else:
        what = f"{_label(owner)}'s" if owner is not None else "another program's"
        runs = f", which runs {info['runs']}" if info["runs"] else ""
        instead = f"run '{SECOND_COMMAND}' or 'python -m llmbuilder_cli' instead (both always start this tool)"
        if owner is not None:  # both packages in this environment: the last one installed won
            back = (f"to get '{COMMAND}' back: {restore} (installing {_label(owner)} again takes it over again), "
                    f"or keep the two packages in separate virtual environments")
        else:  # a program from elsewhere comes first on PATH
            back = f"or put {sysconfig.get_path('scripts')} before {os.path.dirname(path)} on PATH"
        info.update(ok=False, error=f"'{COMMAND}' on PATH is {path}, {what} command{runs}, not this tool's",
                    fix=f"{instead}; {back}")
        report.fail("command name")
    report.data["command"] = info


def _command_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The text report's lines for `_command_name`."""
    c = r.get("command")
    if not c:
        return []
    second = c.get(SECOND_COMMAND)
    also = f"; {SECOND_COMMAND} → {second}" if second else ""
    if not c["ok"]:
        return [("Command", f"FAILED: {c['error']}"), ("", f"fix: {c['fix']}")]
    if c["path"] is None:
        return [("Command", c["note"] + also)]
    whose = c.get("package") or ("this tool" if c.get("ours") else "origin unknown")
    rows = [("Command", f"{c['name']} → {c['path']} ({whose}){also}")]
    if c.get("note"):
        rows.append(("", f"note: {c['note']}"))
    return rows


def _settings(report: Report) -> None:
    from .. import paths
    from .. import settings as st

    path = st.settings_path()
    info: dict[str, Any] = {
        "path": str(path),
        "exists": path.is_file(),
        "home_from": paths.HOME_ENV if os.environ.get(paths.HOME_ENV, "").strip() else "default location",
    }
    try:
        settings = st.Settings.read()
        info["profiles"] = {name: sorted(values) for name, values in settings.profiles.items()}
        info["default_profile"] = settings.default_profile
        resolved = st.resolve({}, settings=settings)  # also checks LLMBUILDER_* values and LLMBUILDER_PROFILE
        resolved.generation_config()
        info["active_profile"] = resolved.profile
        info["ok"] = True
    except LLMBuilderError as exc:
        info["ok"] = False
        info["error"] = exc.one_line()
        report.fail("settings")
    report.data["settings"] = info
    report.data["environment"] = {k: v for k, v in sorted(os.environ.items()) if k.startswith("LLMBUILDER_")}


def _generation(model: str | None, tokenizer: str | None, device: str, dtype: str) -> dict[str, Any]:
    """Load a model and generate a few greedy tokens: what happened, with times."""
    from .. import api

    out: dict[str, Any] = {}
    try:
        loaded = api.load_model(model, tokenizer, device=device, dtype=dtype, threads="auto")  # as generate does
        out.update(path=str(loaded.info.path), format=loaded.info.format, architecture=loaded.info.architecture,
                   load_s=round(loaded.load_s, 3))
        result = api.generate(loaded, prompt=CHECK_PROMPT, max_new_tokens=CHECK_TOKENS, do_sample=False)
    except Exception as exc:
        out.update(ok=False, error=_first_line(exc))
        return out
    s = result.stats
    out.update(
        ok=s.new_tokens > 0,
        device=s.device,
        dtype=s.dtype,
        prompt=CHECK_PROMPT,
        new_tokens=s.new_tokens,
        tokens_per_s=round(s.tokens_per_s, 1),
        text=result.text,
    )
    if not out["ok"]:
        out["error"] = "no token was generated"
    return out


def _demo(report: Report, device: str, dtype: str) -> None:
    import hashlib

    from .. import demo

    info: dict[str, Any] = {"installed": demo.is_installed(), "directory": str(demo.demo_dir())}
    if not info["installed"]:
        info.update(ok=False, error="the demo model's files are missing from this installation")
        report.data["demo"] = info
        report.fail("demo model")
        return
    expected = demo.training_report().get("model", {}).get("sha256")
    actual = hashlib.sha256((demo.demo_dir() / "model.pt").read_bytes()).hexdigest()
    info["intact"] = expected is None or actual == expected
    info.update(_generation(None, None, device, dtype))
    if not info["intact"]:
        info["ok"] = False
        info["error"] = f"model.pt differs from the one shipped (sha256 {actual[:12]}…, expected {expected[:12]}…)"
    report.data["demo"] = info
    if not info["ok"]:
        report.fail("demo model")


def collect(model: str | None = None, tokenizer: str | None = None, device: str = "auto",
            dtype: str = "auto") -> dict[str, Any]:
    """Run every check and return the report as a JSON-ready dict (``ok``, ``failed``, then the sections)."""
    report = Report()
    _system(report)
    torch = _torch(report)
    _packages(report)
    _command_name(report)
    _settings(report)
    if torch is not None:
        threads = torch.get_num_threads()
        try:
            _demo(report, device, dtype)
            if model is not None:
                report.data["model"] = _generation(model, tokenizer, device, dtype)
                if not report.data["model"]["ok"]:
                    report.fail("model")
        finally:
            torch.set_num_threads(threads)  # loading chose threads for generation; the caller's stay
    return report.to_dict()


# ------------------------------------------------------------------------------------------ the text
def _dtype_line(checks: dict[str, Any]) -> str:
    parts = []
    for name, c in checks.items():
        if not c.get("ok"):
            parts.append(f"{name} FAILS ({c.get('error', 'unusable')})")
        elif "speed_vs_float32" in c:
            parts.append(f"{name} ok (matmul {c['speed_vs_float32']:g}x float32's speed)")
        else:
            parts.append(f"{name} ok")
    return "; ".join(parts)


def _generation_line(g: dict[str, Any]) -> str:
    if not g.get("ok"):
        return f"FAILED: {g.get('error', 'unknown error')}"
    rate = f" at {g['tokens_per_s']:g} tokens/s" if g.get("tokens_per_s") else ""
    return (f"ok: loaded in {g['load_s']:.2f} s on {g['device']} ({g['dtype']}), {g['new_tokens']} tokens{rate}: "
            f"{json.dumps(g['prompt'] + g['text'], ensure_ascii=False)}")


def format_report(r: dict[str, Any]) -> str:
    """The aligned text form of `collect`'s dict, ending with the verdict."""
    rows: list[tuple[str, str]] = []
    me, py, plat = r["llmbuilder_cli"], r["python"], r["platform"]
    rows.append(("llmbuilder-cli", f"{me['version']} ({me['location']})"))
    rows.append(("Python", f"{py['version']} {py['implementation']} ({py['executable']})"))
    cpus = f"{plat['cpus']} CPUs" + (f", {plat['cpus_usable']} usable" if plat["cpus_usable"] != plat["cpus"] else "")
    rows.append(("Platform", f"{plat['system']} ({plat['machine']}, {cpus})"))
    t = r["torch"]
    if not t["ok"]:
        rows.append(("torch", f"FAILED: {t['error']}"))
    else:
        extras = ", ".join(n for n, on in (("oneDNN", t["mkldnn"]), ("OpenMP", t["openmp"])) if on)
        rows.append(("torch", f"{t['version']}, {t['build']} build" + (f" ({extras})" if extras else "")))
        env = "".join(f", {k}={v}" for k, v in t["thread_variables"].items())
        rows.append(("Threads", f"{t['threads']} intra-op, {t['interop_threads']} inter-op{env}"))
        d = r["devices"]
        cpu = d["cpu"]
        about = ", ".join(x for x in (cpu.get("name"), cpu.get("capability") and f"torch kernels {cpu['capability']}",
                                      " ".join(cpu.get("half_precision_instructions") or ())) if x)
        rows.append(("CPU", about or "unknown"))
        rows.append(("", _dtype_line(cpu["dtypes"])))
        if d["cuda"]["available"]:
            for g in d["cuda"]["devices"]:
                rows.append((f"cuda:{g['index']}", f"{g['name']} (compute {g['capability']}, {g['memory_gib']} GiB, "
                             f"bf16 {'supported' if g['bf16_supported'] else 'not supported'})"))
                rows.append(("", _dtype_line(g["dtypes"])))
        else:
            rows.append(("CUDA", f"not available ({d['cuda']['reason']})"))
        rows.append(("MPS", _dtype_line(d["mps"]["dtypes"]) if d["mps"]["available"]
                     else f"not available ({d['mps']['reason']})"))
        auto = r.get("auto", {})
        rows.append(("Automatic", f"{auto['device']}, {auto['dtype']}" if auto.get("device")
                     else f"FAILED: {auto.get('error', '')}"))
    pk = r["packages"]
    rows.append(("Packages", ", ".join(f"{n} {p['version'] or 'missing'}" + (" (BROKEN)" if "error" in p else "")
                                       for n, p in pk.items())))
    for n, p in pk.items():
        if "error" in p:
            rows.append(("", f"{n}: {p['error']}"))
    rows += _command_rows(r)
    s = r["settings"]
    where = s["path"] + ("" if s["exists"] else " (not created yet)")
    rows.append(("Settings", where))
    if s["ok"]:
        profs = s["profiles"]
        listed = ", ".join(f"{n} ({', '.join(k) or 'empty'})" for n, k in profs.items()) or "none"
        active = s.get("active_profile")
        rows.append(("", f"reads cleanly; profiles: {listed}; in use: {active or 'none (built-in defaults)'}"))
    else:
        rows.append(("", f"FAILED: {s['error']}"))
    env = r["environment"]
    rows.append(("Environment", ", ".join(f"{k}={v}" for k, v in env.items()) or "no LLMBUILDER_* variables"))
    if "demo" in r:
        demo = r["demo"]
        rows.append(("Demo model", _generation_line(demo) + ("" if not demo.get("intact") else "; files intact")))
    if "model" in r:
        m = r["model"]
        if m.get("path"):
            rows.append(("Model", f"{m['path']} ({m['format']}, {m['architecture']})"))
        rows.append(("" if m.get("path") else "Model", _generation_line(m)))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}".rstrip() for k, v in rows]
    failed = r["failed"]
    if failed:
        lines.append("")
        lines.append(f"{len(failed)} check{'s' if len(failed) > 1 else ''} failed: {', '.join(failed)}")
    else:
        lines.append("")
        lines.append("All checks passed.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ the command
def doctor_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of aligned text.")] = False,
    model: Annotated[
        Optional[str],
        typer.Option("--model", "-m", help="Also check that this model loads and generates a few tokens.",
                     autocompletion=complete_model),
    ] = None,
    tokenizer: Annotated[
        Optional[str],
        typer.Option("--tokenizer", "-t", help="Tokenizer for --model. Default: the one beside the model."),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="Device for the generation checks.", autocompletion=complete_device)
    ] = "auto",
    dtype: Annotated[
        str, typer.Option("--dtype", help="Precision for the generation checks.", autocompletion=complete_dtype)
    ] = "auto",
) -> int:
    """Check this installation and print what a bug report needs.

    The report: versions, torch build, devices and dtypes, settings, and whether the demo model loads and
    generates.

    Exit code 0 when every check passed, 1 when one failed (the last line names it).

    Examples:

      llmbuilder doctor

      llmbuilder doctor --json > doctor.json

      llmbuilder doctor --model run/model.pt
    """
    report = collect(model, tokenizer, device=device, dtype=dtype)
    sys.stdout.write((json.dumps(report, indent=2, ensure_ascii=False) if as_json else format_report(report)) + "\n")
    sys.stdout.flush()
    return EXIT_OK if report["ok"] else EXIT_RUNTIME
