"""Benchmark llmbuilder-cli against llama.cpp (llama-cpp-python) on SmolLM2-135M-Instruct, same weights, one run.

The weights: the test suite's SmolLM2 Q4_1 GGUF (``tests/real_models.py``), or the GGUF file ``--model``
names (a larger model a user has, any architecture both engines read), and four files written from it
once into the user cache (``--cache-dir``) with the ``gguf`` package: every weight dequantized to float32,
then stored as F32, BF16, Q8_0 and Q4_0 (1-D norms stay F32; in Q4_0 tensors stored as Q8_0 stay so, as
SmolLM2's token embedding). All the metadata and the tokenizer are copied. In the tables below "Q4_1" is
the file as given (for another file, its own type is shown: Q4_K_M, say). Both engines read the same file per
precision; ours quantizes on load as a user's ``--quantize`` does (``--f32-activations`` adds int8 and int4
with float32 activations):

=========  ========================  =====================================
precision  llama.cpp                 ours (file, ``--dtype``, ``--quantize``)
=========  ========================  =====================================
F32        F32 file                  F32 file, float32
BF16       BF16 file                 BF16 file, bfloat16
Q8_0       Q8_0 file                 Q8_0 file, int8 (bfloat16 activations)
Q4         Q4_1 file and Q4_0 file   Q4_1 file, int4 (bfloat16 activations)
=========  ========================  =====================================

llama.cpp runs in a worker process (``llamacpp_worker.py``) under ``--llama-python``, the interpreter of a
separate environment with llama-cpp-python (benchmarks/README.md: never a dependency of the project, and
that environment has no torch). Ours runs in this process. Per precision both engines are loaded, then one
warm-up and ``--runs`` rounds alternate between them (so a ratio compares minutes that saw the same load):

1. **Decoding**: a ``--prompt-tokens`` (20) token prompt (token ids from our tokenizer, given to both), then
   ``--new-tokens`` (64) greedy tokens; tokens/s counts the tokens after the first. The time to that
   first token is the 20-token first-token time. llama.cpp's own counters (``llama_perf_context``) give
   the milliseconds spent inside ``llama_decode`` per token, so its Python overhead shows too.
2. **First token of a ``--ttft-tokens`` (512) token prompt** (prefill batched on both sides).
3. **Where our time goes** per decoded token: products (every call of the linear layers, split by layer
   kind), the rest of ``forward`` (norms, RoPE, cache writes, attention, adds), and the generation loop
   outside ``forward`` (processors, the pick); then torch.profiler's top operations outside the products.
4. **Fresh processes**: wall time to the first token and peak RSS of a new process per precision: ours
   ``llmbuilder generate text -m FILE ... --max-tokens 1``, llama.cpp ``python llamacpp_worker.py first-token``
   (Python start, ``import llama_cpp``, load, one token), plus ``import torch`` and ``import llama_cpp``
   alone.

``--quick``: 1 run, 8 new tokens, a 32-token first-token prompt, no split or process rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_real  # noqa: E402  (puts the repository and tests/ on sys.path)
from bench_real import REPO, TEXT, Ours, decode_rate, median, our_cli  # noqa: E402

from llmbuilder_cli.engine.kernels import int4 as int4_module  # noqa: E402
from llmbuilder_cli.engine import kernels  # noqa: E402
from llmbuilder_cli.engine.kernels import Concat  # noqa: E402

WORKER = Path(__file__).resolve().parent / "llamacpp_worker.py"
PROMPT_TEXT = "The capital of France is"
#: precision -> (our modes as (label, dtype, quantize, file), llama.cpp files)
GROUPS: dict[str, tuple[list[tuple[str, str, str | None, str]], list[str]]] = {
    "F32": ([("float32", "float32", None, "F32")], ["F32"]),
    "BF16": ([("bfloat16", "bfloat16", None, "BF16")], ["BF16"]),
    "Q8_0": ([("int8 (bf16 act.)", "bfloat16", "int8", "Q8_0"), ("int8 (f32 act.)", "float32", "int8", "Q8_0")],
             ["Q8_0"]),
    "Q4": ([("int4 (bf16 act.)", "bfloat16", "int4", "Q4_1"), ("int4 (f32 act.)", "float32", "int4", "Q4_1")],
           ["Q4_1", "Q4_0"]),
}
#: which of our modes each llama.cpp file is compared with (the faster activation dtype of each)
PAIRS = {"F32": "float32", "BF16": "bfloat16", "Q8_0": "int8 (bf16 act.)", "Q4_1": "int4 (bf16 act.)",
         "Q4_0": "int4 (bf16 act.)"}


# ------------------------------------------------------------------------------------------- weights
def stored_type(source: Path) -> str:
    """The file type a GGUF file declares (``general.file_type``: Q4_1, Q4_K_M, ...), or "stored"."""
    import gguf

    field = gguf.GGUFReader(source).fields.get("general.file_type")
    try:
        return gguf.LlamaFileType(int(field.contents())).name.replace("MOSTLY_", "").replace("ALL_", "")
    except (AttributeError, TypeError, ValueError):
        return "stored"


def shown(file: str, args: argparse.Namespace) -> str:
    """How a file key is printed: "Q4_1" is the source file as given, shown with its own type."""
    return args.stored if file == "Q4_1" else file


def write_variants(source: Path, cache: Path) -> dict[str, Path]:
    """The ``source`` file (under the key "Q4_1") and F32/BF16/Q8_0/Q4_0 files written from it into
    ``cache`` (once)."""
    import gguf
    import numpy as np
    from gguf import GGMLQuantizationType as QT

    targets = {"F32": (QT.F32, gguf.LlamaFileType.ALL_F32), "BF16": (QT.BF16, gguf.LlamaFileType.MOSTLY_BF16),
               "Q8_0": (QT.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0), "Q4_0": (QT.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0)}
    out = {"Q4_1": source}
    reader = None
    cache.mkdir(parents=True, exist_ok=True)
    for name, (qtype, file_type) in targets.items():
        path = cache / (source.name.replace("Q4_1", name) if "Q4_1" in source.name
                        else f"{source.stem}.{name}{source.suffix}")
        out[name] = path
        if path.is_file():
            continue
        print(f"writing {path.name} from {source.name} once ...", file=sys.stderr)
        reader = reader or gguf.GGUFReader(source)
        arch = reader.fields["general.architecture"].contents()
        tmp = path.with_suffix(".tmp")
        writer = gguf.GGUFWriter(tmp, arch)
        for field in reader.fields.values():
            if field.name.startswith("GGUF.") or field.name == "general.architecture":
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            value = int(file_type) if field.name == "general.file_type" else field.contents()
            writer.add_key_value(field.name, value, vtype, sub_type=sub)
        for t in reader.tensors:
            keep_q8 = name == "Q4_0" and t.tensor_type == QT.Q8_0  # e.g. SmolLM2's embedding stays Q8_0
            if t.tensor_type == qtype or keep_q8:
                writer.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
                continue
            values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)  # (rows, cols)
            if values.ndim == 1 or qtype == QT.F32:
                writer.add_tensor(t.name, values)
            else:
                writer.add_tensor(t.name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)  # byte shape
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.rename(path)
    return out


# ------------------------------------------------------------------------------------------ engines
class LlamaCpp:
    """A llama.cpp model held by its own worker process (one per file)."""

    def __init__(self, python: str, path: Path, threads: int, n_ctx: int) -> None:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen([python, str(WORKER), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        self.load_s = self._ask({"cmd": "load", "path": str(path), "threads": threads, "n_ctx": n_ctx})["load_s"]
        self.perf: list[dict[str, Any]] = []

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the llama.cpp worker stopped (exit {self.proc.wait()})")
        return json.loads(line)

    def generate(self, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
        t0 = time.perf_counter()
        answer = self._ask({"cmd": "generate", "ids": prompt, "n": n})
        self.perf.append(answer["perf"])
        # The worker's stamps count from the start of its call; the round trip before it is not timed.
        return answer["ids"], [t0 + s for s in answer["stamps"]]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def our_modes(args: argparse.Namespace, modes: list[tuple[str, str, str | None, str]]) -> list:
    """The modes to run: int8/int4 with float32 activations only with ``--f32-activations``."""
    return [m for m in modes if args.f32_activations or not (m[2] and m[1] == "float32")]


def run_group(args: argparse.Namespace, files: dict[str, Path], precision: str, prompt: list[int],
              long_prompt: list[int]) -> dict[str, Any]:
    ours_modes, theirs = GROUPS[precision]
    ours_modes = our_modes(args, ours_modes)
    engines: dict[str, Any] = {}
    for label, dtype, quantize, file in ours_modes:
        engines[f"ours {label}"] = Ours(files[file], dtype, quantize)
    for file in theirs:
        engines[f"llama.cpp {shown(file, args)}"] = LlamaCpp(args.llama_python, files[file], args.threads,
                                               args.ttft_tokens + args.new_tokens + 8)
    decode: dict[str, list[tuple[list[int], float, float]]] = defaultdict(list)
    ttft: dict[str, list[float]] = defaultdict(list)
    for r in range(args.runs + 1):  # round 0 warms up
        for name, engine in engines.items():
            t0 = time.perf_counter()
            ids, stamps = engine.generate(prompt, args.new_tokens)
            short = stamps[0] - t0
            t0 = time.perf_counter()
            _, stamps_long = engine.generate(long_prompt, 1)
            if r:
                decode[name].append((ids, decode_rate(stamps), short))
                ttft[name].append(stamps_long[0] - t0)
    res: dict[str, Any] = {}
    for name, engine in engines.items():
        entry = {"tokens_per_s": median([r for _, r, _ in decode[name]]), "runs": [r for _, r, _ in decode[name]],
                 "first_token_short_s": median([s for _, _, s in decode[name]]),
                 "first_token_long_s": median(ttft[name]), "ids": decode[name][-1][0]}
        if isinstance(engine, LlamaCpp):
            perfs = [p for p in engine.perf if p["decode_tokens"] > 1][1:]  # timed decode calls, not the warm-up
            entry["llama_decode_ms_per_token"] = median([p["decode_ms"] / p["decode_tokens"] for p in perfs])
            entry["load_s"] = engine.load_s
            engine.close()
        else:
            entry["split"] = split_ours(engine, prompt, args.new_tokens) if args.split else None
        res[name] = entry
    return res


# ------------------------------------------------------------------------------- where our time goes
def layer_names(model: Any) -> dict[int, str]:
    """id(layer object) -> its kind: qkv, o, gate_up, down, head."""
    names: dict[int, str] = {id(model.lm_head): "head"}
    kinds = {"qkv": ("qkv", "q", "k", "v"), "o": ("o",), "gate_up": ("gate_up", "gate", "up"), "down": ("down",)}
    for blk in model.blocks:
        for kind, attrs in kinds.items():  # fused layers (Llama family) or separate ones (Gemma 3)
            for layer in filter(None, (getattr(blk, a, None) for a in attrs)):
                for leaf in layer.layers if isinstance(layer, Concat) else (layer,):
                    names[id(leaf)] = kind
    return names


def split_ours(engine: Ours, prompt: list[int], n: int) -> dict[str, Any]:
    """Per decoded token (ms): wall, inside forward, in the products (by layer kind); then torch.profiler's
    top-level operations outside the products."""
    model = engine.model
    names = layer_names(model)
    acc: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    classes = [kernels.Linear, kernels.Int8Linear, int4_module.Int4Linear]
    originals = {cls: cls.__call__ for cls in classes}
    forward = type(model).forward

    def timed(orig: Any) -> Any:
        def call(self: Any, x: torch.Tensor) -> torch.Tensor:
            t0 = time.perf_counter()
            y = orig(self, x)
            acc[names.get(id(self), "other")] += time.perf_counter() - t0
            calls[names.get(id(self), "other")] += 1
            return y
        return call

    def timed_forward(self: Any, ids: torch.Tensor, start: int = 0, cache: Any = None) -> torch.Tensor:
        t0 = time.perf_counter()
        y = forward(self, ids, start, cache)
        if ids.shape[1] == 1:  # decode steps only
            acc["forward"] += time.perf_counter() - t0
            calls["forward"] += 1
        else:
            acc.clear()
            calls.clear()
        return y

    try:
        for cls in classes:
            cls.__call__ = timed(originals[cls])
        type(model).forward = timed_forward
        _, stamps = engine.generate(prompt, n)
    finally:
        for cls in classes:
            cls.__call__ = originals[cls]
        type(model).forward = forward
    steps = calls["forward"]
    wall = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    products = {k: v / steps * 1e3 for k, v in acc.items() if k != "forward"}
    prod_total = sum(products.values())
    out = {"wall_ms": wall * 1e3, "forward_ms": acc["forward"] / steps * 1e3, "products_ms": prod_total,
           "products_by_kind_ms": products, "product_calls_per_token": sum(v for k, v in calls.items()
                                                                           if k != "forward") / steps}
    out["rest_of_forward_ms"] = out["forward_ms"] - prod_total
    out["outside_forward_ms"] = out["wall_ms"] - out["forward_ms"]
    out["profile"] = profile_ours(engine, prompt)
    return out


_PRODUCT_OPS = {"aten::linear", "aten::mv", "aten::_weight_int8pack_mm", "aten::_weight_int4pack_mm_for_cpu",
                "aten::addmm", "aten::mm"}


def profile_ours(engine: Ours, prompt: list[int], n: int = 8) -> dict[str, Any]:
    """torch.profiler over ``n`` decode steps: top-level operations per token (count, µs), products apart."""
    from torch.profiler import ProfilerActivity, profile

    cache = engine.model.new_cache(len(prompt) + n + 1)
    with torch.inference_mode():
        engine.model.forward(torch.tensor([prompt]), 0, cache)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(n):
                engine.model.forward(torch.tensor([[prompt[-1]]]), len(prompt) + i, cache)
    ops: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for ev in prof.events():
        if ev.cpu_parent is None:  # top-level: what the Python code called
            ops[ev.name][0] += 1
            ops[ev.name][1] += ev.cpu_time_total
    table = {name: {"calls_per_token": c / n, "us_per_token": t / n} for name, (c, t) in ops.items()}
    rest = {k: v for k, v in table.items() if k not in _PRODUCT_OPS}
    return {"ops_per_token": sum(v["calls_per_token"] for v in table.values()),
            "product_ops_per_token": sum(v["calls_per_token"] for k, v in table.items() if k in _PRODUCT_OPS),
            "rest_us_per_token": sum(v["us_per_token"] for v in rest.values()),
            "top_rest": dict(sorted(rest.items(), key=lambda kv: -kv[1]["us_per_token"])[:10])}


# ------------------------------------------------------------------------------------ fresh processes
def bench_processes(args: argparse.Namespace, files: dict[str, Path]) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    cli = our_cli()
    cmds: dict[str, list[str]] = {"import torch": [sys.executable, "-c", "import torch"],
                                  "import llama_cpp": [args.llama_python, "-c", "import llama_cpp"]}
    for precision in args.precisions.split(","):
        ours_modes, theirs = GROUPS[precision]
        for label, dtype, quantize, file in our_modes(args, ours_modes):
            cmds[f"ours {label}"] = cli + ["generate", "text", "-m", str(files[file]), "--dtype", dtype,
                                           "--quantize", quantize or "none", "-p", PROMPT_TEXT, "--greedy",
                                           "--max-tokens", "1", "-q", "--threads", str(args.threads)]
        for file in theirs:
            cmds[f"llama.cpp {shown(file, args)}"] = [args.llama_python, str(WORKER), "first-token", str(files[file]),
                                         PROMPT_TEXT, str(args.threads)]
    walls: dict[str, list[float]] = defaultdict(list)
    peaks: dict[str, list[int]] = defaultdict(list)
    for r in range(args.runs + 1):
        for name, cmd in cmds.items():
            wall, peak = run_measured(cmd, env)
            if r:
                walls[name].append(wall)
                peaks[name].append(peak)
    return {name: {"wall_s": median(walls[name]), "walls": walls[name], "peak_rss": max(peaks[name])}
            for name in cmds}


_LAUNCHER = """
import json, os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"wall": time.perf_counter() - t0, "code": os.waitstatus_to_exitcode(status),
                  "peak": usage.ru_maxrss * 1024}))
"""


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes) of one process. A small launcher forks it and reads its resource
    usage (``wait4``): forked from this process, whose memory holds models, the child's peak would start
    at this process's size."""
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], capture_output=True, text=True, env=env,
                          cwd=REPO)
    result = json.loads(proc.stdout) if proc.returncode == 0 else {"code": proc.returncode}
    if result["code"]:
        raise SystemExit(f"command failed ({result['code']}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return result["wall"], result["peak"]


# ------------------------------------------------------------------------------------------- report
def report(res: dict[str, Any], args: argparse.Namespace) -> None:
    env = res["environment"]
    print(f"\n{args.model_name} | torch {env['torch']} | llama-cpp-python {env['llama_cpp']} | "
          f"{args.threads} threads | {env['cpus']} CPUs ({env['cpu']}) | medians of {args.runs} runs")
    dec = res["decode"]
    if dec:
        report_decode(dec, args)
    proc = res.get("processes")
    if proc:
        print("\nFresh processes: wall time to the first token, peak RSS")
        for name, p in proc.items():
            print(f"  {name:<24}{p['wall_s']:>7.3f} s{p['peak_rss'] / 2**20:>8.0f} MiB")


def report_decode(dec: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\nDecoding: {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens, greedy (tok/s after the "
          f"first token); first token of a {args.prompt_tokens}- and a {args.ttft_tokens}-token prompt")
    short, long = f"TTFT {args.prompt_tokens}", f"TTFT {args.ttft_tokens}"
    print(f"  {'engine':<24}{'tok/s':>8}{'ours/llama':>12}{short:>10}{long:>10}{'llama_decode':>14}")
    for name, e in dec.items():
        ratio = ""
        if name.startswith("llama.cpp"):
            ours = dec.get(f"ours {PAIRS.get(name.split()[1], PAIRS['Q4_1'])}")
            ratio = f"{ours['tokens_per_s'] / e['tokens_per_s']:.2f}x" if ours else ""
        inner = f"{e['llama_decode_ms_per_token']:.2f} ms" if "llama_decode_ms_per_token" in e else ""
        print(f"  {name:<24}{e['tokens_per_s']:>8.1f}{ratio:>12}{e['first_token_short_s']:>9.3f}s"
              f"{e['first_token_long_s']:>9.3f}s{inner:>14}")
    ours, theirs = dec.get("ours float32"), dec.get("llama.cpp F32")
    if ours and theirs:
        agree = sum(a == b for a, b in zip(ours["ids"], theirs["ids"]))
        print(f"  float32 greedy ids: {agree}/{len(ours['ids'])} equal to llama.cpp F32's")
    print("\nOur decoded token, ms: wall = products (by layer) + rest of forward + outside forward")
    for name, e in dec.items():
        s = e.get("split")
        if not s:
            continue
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in sorted(s["products_by_kind_ms"].items(), key=lambda kv: -kv[1]))
        p = s["profile"]
        print(f"  {name:<22} {s['wall_ms']:6.2f} = {s['products_ms']:5.2f} ({kinds}) + {s['rest_of_forward_ms']:5.2f}"
              f" + {s['outside_forward_ms']:4.2f};  {p['ops_per_token']:.0f} top-level torch ops/token "
              f"({p['product_ops_per_token']:.0f} products), profiled rest {p['rest_us_per_token'] / 1e3:.2f} ms")
        top = ", ".join(f"{k.replace('aten::', '')} {v['calls_per_token']:.0f}x {v['us_per_token']:.0f}us"
                        for k, v in list(p["top_rest"].items())[:8])
        print(f"  {'':<22} rest: {top}")
    for name, e in dec.items():
        if "llama_decode_ms_per_token" in e:
            wall = 1e3 / e["tokens_per_s"]
            print(f"  {name:<22} {wall:6.2f} wall per token, {e['llama_decode_ms_per_token']:.2f} inside llama_decode")


def environment(args: argparse.Namespace) -> dict[str, Any]:
    env = bench_real.environment(argparse.Namespace(skip_transformers=True))
    env["llama_cpp"] = subprocess.run([args.llama_python, "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                                      capture_output=True, text=True, check=True).stdout.strip()
    return env


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--llama-python", required=True,
                   help="Python of the environment with llama-cpp-python (benchmarks/README.md)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prompt-tokens", type=int, default=20)
    p.add_argument("--ttft-tokens", type=int, default=512, help="prompt length for the long first-token time")
    p.add_argument("--precisions", default=",".join(GROUPS), help=f"comma-separated subset of {','.join(GROUPS)}")
    p.add_argument("--f32-activations", action="store_true",
                   help="also run our int8/int4 modes with float32 activations (bfloat16 ones by default)")
    p.add_argument("--split", action=argparse.BooleanOptionalAction, default=True,
                   help="time our products and profile the rest")
    p.add_argument("--skip-processes", action="store_true")
    p.add_argument("--skip-decode", action="store_true", help="only the fresh-process rows")
    p.add_argument("--quick", action="store_true", help="smoke run: see the module docstring")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("--cache-dir", type=Path, help="where the written GGUF files are kept (default: user cache)")
    p.add_argument("--model", type=Path,
                   help="a GGUF file to run instead of SmolLM2 (e.g. a larger Llama-family or Gemma 3 model)")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.new_tokens, args.ttft_tokens = 1, 8, 32
        args.split, args.skip_processes = False, True
    unknown = set(args.precisions.split(",")) - set(GROUPS)
    if unknown:
        p.error(f"unknown precision(s) {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import real_models

    if args.model is not None:
        if not args.model.is_file():
            raise SystemExit(f"--model {args.model}: no such file")
        source = args.model
    else:
        source = bench_real.smollm2_file()
    args.stored, args.model_name = stored_type(source), source.name
    if args.stored in PAIRS and args.stored != "Q4_1":  # a name the written files take: keep the two apart
        args.stored = f"given-{args.stored}"
    files = write_variants(source, args.cache_dir or real_models.cache_dir().parent / "bench")
    res: dict[str, Any] = {"environment": environment(args), "decode": {}}
    tok = Ours(files["F32"], "float32", None).loaded.tokenizer
    text_ids = tok.encode(TEXT * 40)
    prompt, long_prompt = text_ids[: args.prompt_tokens], text_ids[: args.ttft_tokens]
    for precision in [] if args.skip_decode else args.precisions.split(","):
        print(f"{precision} ...", file=sys.stderr)
        res["decode"].update(run_group(args, files, precision, prompt, long_prompt))
    if not args.skip_processes:
        print("fresh processes ...", file=sys.stderr)
        res["processes"] = bench_processes(args, files)
    report(res, args)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
