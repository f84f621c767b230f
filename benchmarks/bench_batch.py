"""Benchmark batched generation (``engine/batching.py``): aggregate tokens/s of a set of prompts against
batch sizes, in one run, on SmolLM2-135M-Instruct and on llmbuilder's ``cpu_small`` shape.

Models (``--models``): ``smollm2``, the test suite's SmolLM2 GGUF (``tests/real_models.py``), dequantized
(``quantize=None``); ``cpu_small``, an llmbuilder GPT of the ``cpu_small`` preset's shape (vocab 8000,
width 256, 4 layers, 4 heads, block 512) with random std-0.02 weights, with the repository's fixture
tokenizer. Each runs in every ``--dtypes`` value (float32, bfloat16).

Prompts: ``--prompts`` (32), 20 to 60 tokens long (SmolLM2: cuts of a fixed passage; cpu_small: random
ids). Variants (``--variants``):

* ``plain``: each prompt makes ``--new-tokens`` (128) tokens greedily, end-of-sequence ignored, so every
  batch size does the same work;
* ``shared``: the same, with a ~100-token system prompt before every prompt, run with ``share_prefix``
  (``--share-prefix``: the system prompt is computed once);
* ``prefill``: one new token per prompt: what the prompts' prefill costs (packed prefill).

For each batch size (``--sizes``) the whole set runs through `api.run_streams`; printed: wall seconds,
aggregate new tokens/s (``prefill``: prompt tokens/s), the ratio to the first size, and how many prompts'
token ids equal that first run (float32 greedy: batched products may round differently from one row at
a time, and a reused prefix runs in a different order; the first differing new-token positions are
shown). Threads: ``--threads`` (2). The machine's load changes the absolute numbers: compare ratios
within one run. ``--quick`` runs a short subset (8 prompts, 16 new tokens, sizes 1 and 8), to check that
it works, not to measure.
"""

from __future__ import annotations

import argparse
import dataclasses
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
SYSTEM = (
    "You are a careful storyteller for a children's magazine. Write in plain words that a ten-year-old can "
    "read, keep sentences short, and never frighten the reader: storms pass, boats come home and lights are "
    "found. Describe what people see, hear and feel, give every helper a name, and end with the village "
    "together. Continue the passage below in the same voice, without a title and without a list."
)
SYSTEM_TOKENS = 100  # cpu_small: random ids of this length before every prompt
CPU_SMALL = dict(vocab_size=8000, n_layer=4, n_head=4, n_embd=256, block_size=512)


def prompt_length(i: int) -> int:
    return 20 + (i * 13) % 41  # 20..60 tokens


def passage_prompts(tokenizer, count: int, system: str = "") -> list[str]:
    """``count`` prompts of 20 to 60 tokens (after ``system``): cuts of the passage at different offsets."""
    words = PASSAGE.split()
    prompts = []
    for i in range(count):
        target = prompt_length(i)
        start = (i * 7) % (len(words) // 2)
        n = target
        while True:
            text = " ".join(words[start : start + n])
            if len(tokenizer.encode(text)) <= target or n <= 1:
                break
            n -= 1
        prompts.append(system + text)
    return prompts


def cpu_small(dtype: str):
    """The fixture's loaded model with its weights replaced by a random ``cpu_small``-shaped GPT."""
    import torch

    from conftest import MODEL_PT, TOKENIZER_DIR
    from llmbuilder_cli import api
    from llmbuilder_cli.engine.models.llmbuilder_gpt import GPTConfig, LLMBuilderGPT

    cfg = GPTConfig(**CPU_SMALL)
    C, V, P, L = cfg.n_embd, cfg.vocab_size, cfg.block_size, cfg.n_layer
    g = torch.Generator().manual_seed(0)
    shapes = {"token_embedding.weight": (V, C), "position_embedding.weight": (P, C), "ln_f.weight": (C,),
              "ln_f.bias": (C,)}
    for i in range(L):
        p = f"blocks.{i}."
        shapes.update({p + "ln1.weight": (C,), p + "ln1.bias": (C,), p + "attn.qkv_proj.weight": (3 * C, C),
                       p + "attn.out_proj.weight": (C, C), p + "attn.out_proj.bias": (C,), p + "ln2.weight": (C,),
                       p + "ln2.bias": (C,), p + "mlp.fc1.weight": (4 * C, C), p + "mlp.fc1.bias": (4 * C,),
                       p + "mlp.fc2.weight": (C, 4 * C), p + "mlp.fc2.bias": (C,)})
    state = {}
    for name, shape in shapes.items():
        if "ln" in name:
            t = torch.ones(shape) if name.endswith("weight") else torch.zeros(shape)
        else:
            t = 0.02 * torch.randn(shape, generator=g)
        state[name] = t.to(getattr(torch, dtype))
    fixture = api.load_model(MODEL_PT, TOKENIZER_DIR, device="cpu")
    return dataclasses.replace(fixture, model=LLMBuilderGPT(cfg, state))


def id_prompts(count: int, vocab: int, system: bool) -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(1)
    head = torch.randint(0, vocab, (SYSTEM_TOKENS,), generator=g).tolist() if system else []
    return [head + torch.randint(0, vocab, (prompt_length(i),), generator=g).tolist() for i in range(count)]


def run(loaded, prompts, new_tokens: int, size: int, share_prefix: bool = False):
    """Wall seconds and every prompt's new token ids; ``prompts``: texts or token id lists."""
    from llmbuilder_cli import api
    from llmbuilder_cli.config import GenerationConfig
    from llmbuilder_cli.engine.generate import TextStream

    cfg = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, ignore_eos=True)

    def make(i):
        p = prompts[i]
        return TextStream(loaded, p, cfg) if isinstance(p, str) else TextStream(loaded, "", cfg, prompt_ids=p)

    ids: list[list[int]] = [[] for _ in prompts]
    t0 = time.perf_counter()
    for done in api.run_streams(make, len(prompts), batch_size=size, share_prefix=share_prefix):
        if done.error is not None:
            raise done.error
        ids[done.index] = done.result.token_ids
    return time.perf_counter() - t0, ids


def table(loaded, prompts, prompt_tokens: list[int], new_tokens: int, sizes: list[int], prefill: bool,
          share_prefix: bool = False) -> None:
    run(loaded, prompts[:2], 2, 2)  # warm-up: first-call costs (kernels, rotary tables, the row probe)
    unit = "prompt tok/s" if prefill else "tok/s"
    print(f"{'batch':>5} {'seconds':>8} {unit:>12} {'vs first':>8}  same ids as the first")
    base_rate = base_ids = None
    work = sum(prompt_tokens) if prefill else len(prompts) * new_tokens
    for size in sizes:
        seconds, ids = run(loaded, prompts, new_tokens, size, share_prefix)
        rate = work / seconds
        base_rate = base_rate or rate
        base_ids = base_ids or ids
        same = sum(a == b for a, b in zip(ids, base_ids))
        where = [next(j for j, (x, y) in enumerate(zip(a, b)) if x != y) for a, b in zip(ids, base_ids) if a != b]
        note = f"  first differences at new-token positions {sorted(where)}" if where else ""
        print(f"{size:>5} {seconds:>8.2f} {rate:>12.1f} {rate / base_rate:>7.2f}x  {same}/{len(ids)}{note}",
              flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2,cpu_small")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="1,2,4,8,16,32")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--variants", default="plain,shared,prefill")
    ap.add_argument("--quick", action="store_true",
                    help="8 prompts, 16 new tokens, sizes 1,8 (a check, not a measurement)")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.new_tokens, args.sizes = 8, 16, "1,8"

    import torch

    from llmbuilder_cli import api
    from real_models import smollm2_gguf

    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{args.prompts} prompts, {args.new_tokens} new tokens each, {args.threads} threads, "
          f"torch {torch.__version__}")
    for name in args.models.split(","):
        for dtype in args.dtypes.split(","):
            if name == "smollm2":
                loaded = api.load_model(smollm2_gguf(), device="cpu", dtype=dtype, quantize=None, threads=args.threads)
            else:
                loaded = cpu_small(dtype)
            tok = loaded.tokenizer
            for variant in args.variants.split(","):
                shared = variant == "shared"
                if name == "smollm2":
                    prompts = passage_prompts(tok, args.prompts, SYSTEM + "\n\n" if shared else "")
                    lengths = [len(tok.encode(p)) for p in prompts]
                else:
                    prompts = id_prompts(args.prompts, min(tok.vocab_size, loaded.model.config.vocab_size), shared)
                    lengths = [len(p) for p in prompts]
                new = 1 if variant == "prefill" else args.new_tokens
                print(f"\n{name} {dtype} {variant}: prompt tokens {min(lengths)}..{max(lengths)}, {new} new each")
                table(loaded, prompts, lengths, new, sizes, variant == "prefill", share_prefix=shared)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
