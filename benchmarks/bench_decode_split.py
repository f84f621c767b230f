"""Where one decoded token's time goes in our Llama-family forward (SmolLM2-135M), and an A/B of two
checkouts of the engine in the same run.

Per mode (float32, bfloat16, int8 and int4 with bfloat16 activations; ``--threads`` 1 and/or 2) a fresh
process loads the benchmark's GGUF file (the ones ``bench_llamacpp.py`` writes into the user cache, the
int4 mode the test suite's Q4_1 file), feeds a 20-token prompt, then times ``--tokens`` single-token
forwards (T == 1 with a cache, the greedy pick included) and reports:

* ms per token (median over the steps of each run, then over ``--runs`` runs);
* with ``--profile``: torch.profiler's split of one token into the matrix products (every call of a
  linear kernel: ``aten::linear``/``mv``/``mm``/``addmm`` and the int8/int4 kernels) and everything else
  (self CPU time of the other operators), and the number of torch calls per token.

``--ab OTHER`` runs the same measurement with the package imported from OTHER (a checkout of another
revision, outside this repository) in alternating processes, and prints the ratio this/other per mode.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = Path.home() / ".cache" / "llmbuilder-cli"
#: mode -> (GGUF file, dtype, quantize)
MODES = {
    "float32": ("bench/SmolLM2-135M-Instruct.F32.gguf", "float32", None),
    "bfloat16": ("bench/SmolLM2-135M-Instruct.BF16.gguf", "bfloat16", None),
    "int8": ("bench/SmolLM2-135M-Instruct.Q8_0.gguf", "bfloat16", "int8"),
    "int4": ("test-models/SmolLM2-135M-Instruct.Q4_1.gguf", "bfloat16", "int4"),
}
PRODUCTS = ("aten::linear", "aten::mv", "aten::mm", "aten::addmm", "aten::matmul", "aten::_weight_int8pack_mm",
            "aten::_weight_int4pack_mm_for_cpu")


def child(args: argparse.Namespace) -> None:
    """One measurement in this process; prints a JSON line."""
    sys.path.insert(0, args.root)
    import torch

    from llmbuilder_cli.engine.loading import load

    torch.set_num_threads(args.threads)
    name, dtype, quantize = MODES[args.mode]
    loaded = load(MODELS / name, device="cpu", dtype=dtype, quantize=quantize)
    model = loaded.model
    prompt = torch.arange(100, 120).unsqueeze(0)  # (1, 20)

    def decode(n: int) -> list[float]:
        cache = model.new_cache(prompt.shape[1] + n + 1)
        with torch.inference_mode():
            logits = model.forward(prompt, 0, cache)
            pos = prompt.shape[1]
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                nxt = logits.argmax(-1, keepdim=True)  # (1, 1)
                logits = model.forward(nxt, pos, cache)
                times.append(time.perf_counter() - t0)
                pos += 1
        return times

    decode(4)  # warm-up
    out: dict = {"ms": [1000 * statistics.median(decode(args.tokens)) for _ in range(args.runs)]}
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        n = 16
        cache = model.new_cache(prompt.shape[1] + n + 1)
        with torch.inference_mode():
            logits = model.forward(prompt, 0, cache)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for i in range(n):
                    logits = model.forward(logits.argmax(-1, keepdim=True), prompt.shape[1] + i, cache)
        # Top-level operators only (those not called by another operator), inclusive times.
        agg: dict[str, list[float]] = {}
        every = prof.events()
        for e in every:
            if e.cpu_parent is None:
                a = agg.setdefault(e.name, [0.0, 0])
                a[0] += e.cpu_time_total
                a[1] += 1
        total_us = sum(t for t, _ in agg.values())
        prod_us = sum(agg[k][0] for k in PRODUCTS if k in agg)
        rest = sorted(((t, c, k) for k, (t, c) in agg.items() if k not in PRODUCTS), reverse=True)
        out.update(prod_ms=prod_us / n / 1000, total_ms=total_us / n / 1000,
                   calls=sum(c for _, c in agg.values()) / n, all_calls=len(every) / n,
                   prod_calls=sum(agg[k][1] for k in PRODUCTS if k in agg) / n,
                   rest=[(k, round(t / n / 1000, 3), c / n) for t, c, k in rest[:14]])
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--threads", default="1")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3, help="runs per process")
    ap.add_argument("--rounds", type=int, default=1, help="processes per side (interleaved with --ab)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--ab", default="", help="another checkout's root to compare with")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--root", default=str(REPO), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.threads = int(args.threads)
        child(args)
        return
    sides = {"this": str(REPO)} | ({"other": args.ab} if args.ab else {})
    env = dict(os.environ, OMP_NUM_THREADS="", MKL_NUM_THREADS="")
    env.pop("PYTHONPATH", None)
    for mode in args.modes.split(","):
        for threads in args.threads.split(","):
            results: dict[str, list[dict]] = {s: [] for s in sides}
            for _ in range(args.rounds):
                for side, root in sides.items():
                    cmd = [sys.executable, __file__, "--child", "--mode", mode, "--threads", threads, "--root", root,
                           "--tokens", str(args.tokens), "--runs", str(args.runs)] + (["--profile"] * args.profile)
                    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = threads
                    line = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
                    results[side].append(json.loads(line.strip().splitlines()[-1]))
            meds = {s: statistics.median(m for r in rs for m in r["ms"]) for s, rs in results.items()}
            row = f"{mode:9s} {threads}t  " + "  ".join(f"{s} {m:7.2f} ms/token" for s, m in meds.items())
            if args.ab:
                row += f"  this/other tokens/s {meds['other'] / meds['this']:.3f}x"
            print(row, flush=True)
            if args.profile:
                for s, rs in results.items():
                    r = rs[-1]
                    print(f"    {s}: products {r['prod_ms']:.2f} ms, profiled total {r['total_ms']:.2f} ms, "
                          f"rest {r['total_ms'] - r['prod_ms']:.2f} ms, {r['calls']:.0f} top-level calls/token "
                          f"({r['prod_calls']:.0f} products; {r['all_calls']:.0f} with nested calls)")
                    for k, t, c in r["rest"]:
                        print(f"        {k:40s} {t:7.3f} ms {c:6.1f}x")


if __name__ == "__main__":
    main()
