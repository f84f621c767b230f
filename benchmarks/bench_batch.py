"""Benchmark batched generation (``engine/batching.py``) on SmolLM2-135M-Instruct: aggregate tokens/s of a
batch of prompts against batch sizes, in one run.

The model: the test suite's SmolLM2 GGUF (``tests/real_models.py``), dequantized (``quantize=None``) and
run in float32 and bfloat16. The prompts: ``--prompts`` (32) cuts of a fixed passage, 20 to 60 tokens
long; each makes ``--new-tokens`` (128) tokens greedily with end-of-sequence ignored, so every batch size
does the same work. For each dtype and each ``--sizes`` value the whole set runs through
`api.run_streams` with that batch size; printed: wall seconds, aggregate new tokens/s, the ratio to batch
size 1, and how many prompts' token ids equal the batch-1 run (float32 greedy: batched rows go through
the same matrix products as a wider matrix, whose rounding may differ; the first differing position is
shown). Threads: ``--threads`` (2). The machine's load changes the absolute numbers: compare ratios
within one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

PASSAGE = (
    "The old lighthouse stood at the edge of the cliff, its white paint peeling after many winters. Every "
    "evening the keeper climbed the spiral stairs, counted the steps out of habit, and lit the great lamp "
    "that warned the fishing boats away from the rocks. One night a storm rolled in from the west, and the "
    "wind howled so loudly that the keeper could not hear the waves below. He noticed a small light bobbing "
    "on the water, far beyond the harbour, and wondered who would sail in such weather. Explain what he did "
    "next, and describe the morning after the storm, when the village gathered on the beach to see what the "
    "sea had brought."
)


def make_prompts(tokenizer, count: int) -> list[str]:
    """``count`` prompts of 20 to 60 tokens: cuts of the passage at different word offsets and lengths."""
    words = PASSAGE.split()
    prompts = []
    for i in range(count):
        target = 20 + (i * 13) % 41  # 20..60 tokens
        start = (i * 7) % (len(words) // 2)
        n = target
        while True:
            text = " ".join(words[start : start + n])
            size = len(tokenizer.encode(text))
            if size <= target or n <= 1:
                break
            n -= 1
        prompts.append(text)
    return prompts


def run(loaded, prompts, new_tokens: int, size: int):
    from llmbuilder_cli import api
    from llmbuilder_cli.config import GenerationConfig
    from llmbuilder_cli.engine.generate import TextStream

    cfg = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, ignore_eos=True)
    ids: list[list[int]] = [[] for _ in prompts]
    t0 = time.perf_counter()
    for done in api.run_streams(lambda i: TextStream(loaded, prompts[i], cfg), len(prompts), batch_size=size):
        if done.error is not None:
            raise done.error
        ids[done.index] = done.result.token_ids
    return time.perf_counter() - t0, ids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="1,2,4,8,16,32")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args()

    import torch

    from llmbuilder_cli import api
    from real_models import smollm2_gguf

    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"SmolLM2-135M-Instruct, {args.prompts} prompts, {args.new_tokens} new tokens each, "
          f"{args.threads} threads, torch {torch.__version__}")
    for dtype in args.dtypes.split(","):
        loaded = api.load_model(smollm2_gguf(), device="cpu", dtype=dtype, quantize=None, threads=args.threads)
        prompts = make_prompts(loaded.tokenizer, args.prompts)
        lengths = [len(loaded.tokenizer.encode(p)) for p in prompts]
        print(f"\n{dtype}: prompt tokens {min(lengths)}..{max(lengths)}")
        run(loaded, prompts[:2], 2, 2)  # warm-up: first-call costs (kernels, rotary tables) are not timed
        print(f"{'batch':>5} {'seconds':>8} {'tok/s':>8} {'vs 1':>6}  same ids as batch 1")
        base_rate = None
        base_ids = None
        total = args.prompts * args.new_tokens
        for size in sizes:
            seconds, ids = run(loaded, prompts, args.new_tokens, size)
            rate = total / seconds
            base_rate = base_rate or rate
            base_ids = base_ids or ids
            same = sum(a == b for a, b in zip(ids, base_ids))
            where = [next(j for j, (x, y) in enumerate(zip(a, b)) if x != y) for a, b in zip(ids, base_ids) if a != b]
            note = f"  first differences at new-token positions {sorted(where)}" if where else ""
            print(f"{size:>5} {seconds:>8.1f} {rate:>8.1f} {rate / base_rate:>5.2f}x  {same}/{len(ids)}{note}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
