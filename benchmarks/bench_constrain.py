"""Per-token cost of an output constraint next to one decode step of a real model.

Loads a model (default: SmolLM2-135M-Instruct Q4_1 from the test-model cache, 49,152 tokens), then for
each constraint (a JSON schema, any JSON, a regex, a choice list) generates ``--tokens`` tokens greedily
with the constraint, timing separately, for every step:

  * the step: the model's forward for one token (what decoding costs anyway);
  * the mask: ``ConstraintMask(logits)``, i.e. llguidance computing which ids may come next and the
    (V,) -inf fill, plus ``advance`` (the matcher taking the chosen token).

It prints the median milliseconds of each and the mask's share of the step, over ``--repeats`` runs
(a fresh matcher each run; the one-off llguidance tokenizer build, about a second for 49k tokens, is
timed once and reported apart). Goal: the mask under 10 % of a decode step.

    python benchmarks/bench_constrain.py                          # about a minute on 2 CPUs
    python benchmarks/bench_constrain.py --model path/to/model.gguf --tokens 40 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from llmbuilder_cli.config import GenerationConfig
from llmbuilder_cli.constraint import Constraint
from llmbuilder_cli.engine import loading
from llmbuilder_cli.engine.constrain import ConstraintMask, llg_tokenizer
from llmbuilder_cli.engine.generate import TokenGenerator, with_bos

DEFAULT_MODEL = Path(os.path.expanduser("~/.cache/llmbuilder-cli/test-models/SmolLM2-135M-Instruct.Q4_1.gguf"))

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}}},
    },
    "required": ["name", "age", "tags", "address"],
}

CONSTRAINTS = {
    "json schema": Constraint("json_schema", SCHEMA),
    "any json": Constraint("json"),
    "regex": Constraint("regex", r"[A-Z][a-z ,]{0,200}\."),
    "choice": Constraint("choice", ["positive", "negative", "neutral"]),
}


class Timed:
    """Wraps the mask stage and the forward to time each call."""

    def __init__(self, mask: ConstraintMask) -> None:
        self.mask, self.name, self.times = mask, mask.name, []

    def __call__(self, logits, ctx):
        t0 = time.perf_counter()
        out = self.mask(logits, ctx)
        self.times.append(time.perf_counter() - t0)
        return out

    def advance(self, token: int) -> None:
        t0 = time.perf_counter()
        self.mask.advance(token)
        self.times[-1] += time.perf_counter() - t0

    @property
    def done(self) -> bool:
        return self.mask.done


def run(loaded, constraint: Constraint, prompt_ids: list[int], tokens: int) -> tuple[list[float], list[float]]:
    mask = Timed(ConstraintMask(constraint, loaded.tokenizer, loaded.model.config.vocab_size))
    config = GenerationConfig(temperature=0, max_new_tokens=tokens, constraint=constraint)
    gen = TokenGenerator(loaded.model, prompt_ids, config, eos_ids=loaded.tokenizer.eos_ids, constraint=mask)
    steps: list[float] = []
    forward = gen._next_logits

    def timed_forward():
        t0 = time.perf_counter()
        out = forward()
        steps.append(time.perf_counter() - t0)
        return out

    gen._next_logits = timed_forward  # type: ignore[method-assign]
    for _ in gen:
        pass
    return steps[1:], mask.times[1:]  # the first step is the prompt's prefill


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    loaded = loading.load(args.model, device="cpu", threads=args.threads)
    V = loaded.model.config.vocab_size
    t0 = time.perf_counter()
    llg_tokenizer(loaded.tokenizer, V)
    print(f"model {Path(args.model).name}: vocabulary {V}, {args.threads} threads; "
          f"llguidance tokenizer built once in {time.perf_counter() - t0:.2f} s")
    prompt_ids = with_bos(loaded.tokenizer, loaded.tokenizer.encode("Write a JSON record about a person:"))
    print(f"{'constraint':<12} {'tokens':>6} {'step ms':>8} {'mask ms':>8} {'mask/step':>9}")
    for name, constraint in CONSTRAINTS.items():
        steps: list[float] = []
        masks: list[float] = []
        for _ in range(args.repeats):
            s, m = run(loaded, constraint, prompt_ids, args.tokens)
            steps += s
            masks += m
        step, mask = statistics.median(steps), statistics.median(masks)
        print(f"{name:<12} {len(masks) // args.repeats:>6} {step * 1e3:>8.2f} {mask * 1e3:>8.3f} {mask / step:>8.1%}")


if __name__ == "__main__":
    main()
