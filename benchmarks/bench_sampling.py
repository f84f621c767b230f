"""Per-token cost of the sampling path (processors + token choice) on model-sized vocabularies.

For each vocabulary size (default 49,152 like SmolLM2 and 128,256 like Llama 3) and each configuration
(the defaults: temperature 0.8, top-k 50, top-p 0.9; top-p alone; top-k alone; greedy; and the defaults
on logits rounded to bfloat16, which tie often), it times one decode step's sampling work exactly as
``TokenGenerator._pick`` runs it, ``apply_processors`` then ``select``, in two formulations:

  * before: top-p by a full ``torch.sort`` of the vocabulary, ``probabilities`` checking ``isfinite``
    element-wise, ``torch.multinomial``, greedy by ``torch.argmax`` (copied below, unchanged);
  * now: ``llmbuilder_cli.engine.sampling`` as it is.

Logits are ``torch.randn(V) * 3`` in float32 (a few different rows, cycled). Each repeat times
``--tokens`` steps of one formulation then the other (alternating which goes first), each with its own
seeded generator; the script prints the median microseconds per token of each over ``--repeats``
repeats, and the median of the per-repeat ratios before/now. It also checks that both formulations chose
the same tokens, and counts the steps where top-p's cut fell inside a run of equal logits (the fast
path then falls back to the full sort).

    python benchmarks/bench_sampling.py                  # about 20 seconds on 2 CPUs
    python benchmarks/bench_sampling.py --vocab 32000 --repeats 15 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from llmbuilder_cli.config import GenerationConfig
from llmbuilder_cli.engine import sampling
from llmbuilder_cli.engine.sampling import SamplingContext, apply_processors, build_processors

NEG_INF = float("-inf")


# ------------------------------------------------------------------ the formulation before (for comparison)
@dataclass(frozen=True)
class OldTopP:
    p: float
    name: str = "top_p"

    def __call__(self, logits: torch.Tensor, ctx: SamplingContext) -> torch.Tensor:
        sorted_logits, order = torch.sort(logits, descending=True)  # (V,), (V,)
        cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)  # (V,)
        remove = cumulative > self.p
        remove[1:] = remove[:-1].clone()
        remove[0] = False
        out = logits.clone()
        out[order[remove]] = NEG_INF
        return out


def old_probabilities(logits: torch.Tensor) -> torch.Tensor:
    probs = torch.softmax(logits, dim=-1)
    if bool(torch.isfinite(probs).all()):
        return probs
    top = logits == float("inf")
    if bool(top.any()) and not bool(torch.isnan(logits).any()):
        return top.to(probs.dtype) / top.sum()
    raise RuntimeError("no token")


def old_select(logits: torch.Tensor, greedy: bool, generator: torch.Generator | None) -> int:
    if greedy:
        token = int(torch.argmax(logits))
        value = float(logits[token])
        if value != value or value == NEG_INF:
            raise RuntimeError("no token")
        return token
    return int(torch.multinomial(old_probabilities(logits), 1, generator=generator))


# ----------------------------------------------------------------------------------------------- timing
CONFIGS: dict[str, tuple[GenerationConfig, str]] = {  # name -> (settings, logits kind)
    "defaults (T 0.8, top-k 50, top-p 0.9)": (GenerationConfig(), "float32"),
    "top-p 0.9 alone": (GenerationConfig(top_k=None), "float32"),
    "top-k 50 alone": (GenerationConfig(top_p=None), "float32"),
    "greedy": (GenerationConfig(do_sample=False), "float32"),
    "defaults, bfloat16-rounded logits": (GenerationConfig(), "bf16"),
}


def logits_rows(V: int, kind: str, n: int = 8) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(V)
    rows = [torch.randn(V, generator=g) * 3 for _ in range(n)]  # (V,) each
    return [r.bfloat16().float() for r in rows] if kind == "bf16" else rows


def run(
    rows: list[torch.Tensor], procs: list, pick: Callable, greedy: bool, tokens: int, seed: int
) -> tuple[float, list[int]]:
    """Seconds per token over ``tokens`` steps, and the tokens chosen."""
    ctx = SamplingContext(rows[0].shape[0], "cpu")
    g = torch.Generator().manual_seed(seed)
    chosen = []
    t0 = time.perf_counter()
    for i in range(tokens):
        chosen.append(pick(apply_processors(rows[i % len(rows)], procs, ctx), greedy, g))
    return (time.perf_counter() - t0) / tokens, chosen


def bench(V: int, name: str, cfg: GenerationConfig, kind: str, args: argparse.Namespace) -> dict:
    rows = logits_rows(V, kind)
    new_procs = build_processors(cfg)
    old_procs = [OldTopP(p.p) if isinstance(p, sampling.TopP) else p for p in new_procs]
    sides = {
        "before": (old_procs, old_select),
        "now": (new_procs, sampling.select),
    }
    with torch.inference_mode():
        for procs, pick in sides.values():  # warm-up
            run(rows, procs, pick, cfg.greedy, 5, 0)
        times: dict[str, list[float]] = {"before": [], "now": []}
        same = True
        fallbacks = 0
        real_sorted = sampling._top_p_sorted

        def counted(logits: torch.Tensor, p: float) -> torch.Tensor:
            nonlocal fallbacks
            fallbacks += 1
            return real_sorted(logits, p)

        sampling._top_p_sorted = counted
        try:
            for r in range(args.repeats):
                order = ["before", "now"] if r % 2 == 0 else ["now", "before"]
                chosen = {}
                for side in order:
                    procs, pick = sides[side]
                    dt, chosen[side] = run(rows, procs, pick, cfg.greedy, args.tokens, seed=r)
                    times[side].append(dt)
                same &= chosen["before"] == chosen["now"]
        finally:
            sampling._top_p_sorted = real_sorted
    before, now = statistics.median(times["before"]), statistics.median(times["now"])
    ratio = statistics.median(b / n for b, n in zip(times["before"], times["now"]))
    return {
        "vocab": V, "config": name, "before_us": before * 1e6, "now_us": now * 1e6, "ratio": ratio,
        "same_tokens": same, "fallback_share": fallbacks / (args.repeats * args.tokens),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, nargs="+", default=[49152, 128256])
    ap.add_argument("--repeats", type=int, default=9, help="repeats per configuration (medians; >= 7)")
    ap.add_argument("--tokens", type=int, default=40, help="sampling steps per repeat")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (decode uses torch's default)")
    ap.add_argument("--only", default="", help="run only configurations whose name contains this")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats x "
          f"{args.tokens} tokens; medians, microseconds per token")
    print(f"{'vocab':>7}  {'configuration':<36} {'before':>9} {'now':>9} {'ratio':>7}  same tokens  tie fallbacks")
    for V in args.vocab:
        for name, (cfg, kind) in CONFIGS.items():
            if args.only not in name:
                continue
            r = bench(V, name, cfg, kind, args)
            print(f"{V:>7}  {name:<36} {r['before_us']:>9.0f} {r['now_us']:>9.0f} {r['ratio']:>6.1f}x  "
                  f"{'yes' if r['same_tokens'] else 'NO':<11}  {r['fallback_share']:.0%}", flush=True)


if __name__ == "__main__":
    main()
