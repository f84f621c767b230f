"""Benchmark llmbuilder-cli's engine and CLI start-up against llmbuilder 2.0.0 itself, in one run.

Two measurements, both reported as medians over several runs after one warm-up:

1. **Decoding speed.** A model shaped like llmbuilder's ``cpu_small`` preset (vocab 8000, width 256,
   4 layers, 4 heads, block size 512) is built with random weights by llmbuilder's own ``GPTModel`` and
   saved with its own ``save_model`` (so the file is a genuine llmbuilder ``model.pt``). Both engines
   then generate 256 new tokens greedily from the same 20-token prompt, EOS stopping off, with the same
   torch thread count, alternating run by run inside this one process:

   * ours: ``llmbuilder_cli.engine.generate.TokenGenerator`` on the model read by ``read_checkpoint``;
   * llmbuilder: the public ``TextGenerator.generate`` (its model loaded by its own ``load_model``),
     with its tokenizer replaced by a stub that hands over the prompt ids and records the output ids,
     so exactly llmbuilder's per-step loop is timed.

   It prints tokens/s for each, the ratio ours/llmbuilder, and whether the token ids agree.

2. **Whole-process wall times** (subprocesses, round-robin): ``python -c "import torch"``, our
   ``llmbuilder generate text`` on the repository's tiny fixture, our ``llmbuilder --help``, and, when
   its interpreter can run it, llmbuilder's own CLI (``python -m llmbuilder``) on the same fixture.
   All of them run with the same OMP/MKL thread count (``--process-threads``, default ``--threads``);
   one extra row times our generate command with torch's default thread count, for information.

The interpreter running this file must import both ``llmbuilder`` (2.0.0) and ``llmbuilder_cli``: see
``benchmarks/README.md`` for how to create that separate benchmark environment. llmbuilder is never a
dependency of llmbuilder-cli. Results can also be written as JSON with ``--json PATH``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "llmbuilder-tiny"
CPU_SMALL = {"vocab_size": 8000, "n_layer": 4, "n_head": 4, "n_embd": 256, "block_size": 512, "dropout": 0.1}
TARGET_RATIO = 10.0  # ours / llmbuilder tokens per second
TARGET_OVER_TORCH_S = 0.3  # our generate command minus `import torch`
TARGET_HELP_S = 0.15  # our `--help`
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # pinned for the subprocesses by --process-threads


# ------------------------------------------------------------------------------------------- helpers
def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    """Run in ``path`` (llmbuilder creates ./checkpoints on import), then come back."""
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# --------------------------------------------------------------------------------------- the model
def build_cpu_small(path: Path, seed: int) -> Path:
    """Random ``cpu_small``-shaped model, built and saved by llmbuilder itself (std-0.02 GPT-2 init)."""
    from llmbuilder.model import GPTModel, save_model

    torch.manual_seed(seed)
    model = GPTModel(**CPU_SMALL)
    save_model(model, path)
    return path


def make_prompt(length: int, vocab: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (length,), generator=g).tolist()


# ------------------------------------------------------------------------------------------ engines
class OurEngine:
    """llmbuilder-cli's engine: KV-cached greedy decoding on token ids."""

    name = "llmbuilder-cli"

    def __init__(self, model_file: Path, new_tokens: int) -> None:
        from llmbuilder_cli.config import GenerationConfig
        from llmbuilder_cli.engine.loading import read_checkpoint
        from llmbuilder_cli.engine.models.llmbuilder_gpt import LLMBuilderGPT

        config, state, _fmt, _dtype = read_checkpoint(model_file)
        self.model = LLMBuilderGPT(config, state)
        self.config = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, ignore_eos=True)

    def generate(self, prompt_ids: list[int]) -> list[int]:
        from llmbuilder_cli.engine.generate import TokenGenerator

        return list(TokenGenerator(self.model, prompt_ids, self.config))


class IdTokenizer:
    """Stands in for llmbuilder's tokenizer: 'encodes' to fixed ids and records what is decoded."""

    def __init__(self, prompt_ids: list[int]) -> None:
        self.prompt_ids = prompt_ids
        self.decoded: list[int] = []

    def encode(self, _text: str) -> list[int]:
        return list(self.prompt_ids)

    def decode(self, ids: list[int]) -> str:
        self.decoded = list(ids)
        return ""


class LLMBuilderEngine:
    """llmbuilder 2.0.0's ``TextGenerator.generate``, greedy, EOS stopping off."""

    name = "llmbuilder"

    def __init__(self, model_file: Path, new_tokens: int) -> None:
        from llmbuilder.inference.generate import GenerationConfig, TextGenerator

        # TextGenerator insists on a tokenizer directory; any SentencePiece one loads (it is then replaced).
        self.gen = TextGenerator(model_file, FIXTURE / "tokenizer", device="cpu")
        self.config = GenerationConfig(
            max_new_tokens=new_tokens, do_sample=False, temperature=1.0, top_k=None, top_p=None, eos_token_id=None
        )

    def generate(self, prompt_ids: list[int]) -> list[int]:
        tok = IdTokenizer(prompt_ids)
        self.gen.tokenizer = tok
        self.gen.generate("<20 token ids>", self.config)
        return tok.decoded[len(prompt_ids) :]


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def bench_engines(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Alternate the two engines run by run; return their times, tokens/s and the agreement check."""
    model_file = build_cpu_small(workdir / "cpu_small" / "model.pt", args.seed)
    prompt = make_prompt(args.prompt_tokens, CPU_SMALL["vocab_size"], args.seed)
    engines = [OurEngine(model_file, args.new_tokens), LLMBuilderEngine(model_file, args.new_tokens)]
    times: dict[str, list[float]] = {e.name: [] for e in engines}
    outputs: dict[str, list[int]] = {}
    for run in range(args.runs + 1):  # run 0 is the warm-up
        for engine in engines:
            seconds, ids = timed(lambda: engine.generate(prompt))
            if len(ids) != args.new_tokens:
                raise SystemExit(f"{engine.name} generated {len(ids)} tokens, expected {args.new_tokens}")
            outputs[engine.name] = ids
            if run:
                times[engine.name].append(seconds)
    ours, theirs = outputs["llmbuilder-cli"], outputs["llmbuilder"]
    tps = {name: args.new_tokens / median(ts) for name, ts in times.items()}
    diverge = first_divergence(ours, theirs)
    return {
        "model_file_bytes": model_file.stat().st_size,
        "prompt_tokens": len(prompt),
        "new_tokens": args.new_tokens,
        "times_s": times,
        "median_s": {name: median(ts) for name, ts in times.items()},
        "tokens_per_s": tps,
        "ratio": tps["llmbuilder-cli"] / tps["llmbuilder"],
        "ids_agree": diverge is None,
        "first_divergence": diverge,
        "matching_ids": sum(x == y for x, y in zip(ours, theirs)),
    }


# ----------------------------------------------------------------------------------------- processes
def our_cli(python: str) -> list[str]:
    """Our console script beside ``python`` if it is ours (llmbuilder installs one of the same name)."""
    script = Path(python).parent / "llmbuilder"
    if script.is_file() and "llmbuilder_cli" in script.read_text(errors="replace"):
        return [str(script)]
    return [python, "-m", "llmbuilder_cli"]


def process_commands(args: argparse.Namespace) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Name → (argv, environment). Every command gets the same thread pinning (``--process-threads``);
    one extra row runs our generate command with torch's own default thread count, for information."""
    model, tok = str(FIXTURE / "model.pt"), str(FIXTURE / "tokenizer")
    gen = ["generate", "text", "-m", model, "-t", tok, "-p", "Once upon a time", "--max-tokens", "40"]
    cli = our_cli(args.cli_python)
    default_env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env = dict(default_env)
    if args.process_threads:
        env.update({k: str(args.process_threads) for k in THREAD_VARS})
    cmds = {
        "import torch": ([args.cli_python, "-c", "import torch"], env),
        "ours generate": (cli + gen + ["--greedy", "-q"], env),
        "ours --help": (cli + ["--help"], env),
    }
    if args.llmbuilder_python:
        lb = [args.llmbuilder_python, "-m", "llmbuilder"]
        cmds["llmbuilder generate"] = (lb + gen, env)  # it has no greedy flag: its default sampling
        cmds["llmbuilder --help"] = (lb + ["--help"], env)
    if args.process_threads:
        cmds["ours generate, default threads"] = (cli + gen + ["--greedy", "-q"], default_env)
    return cmds


def run_once(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    seconds, proc = timed(lambda: subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True))
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or "Generation failed" in out:  # llmbuilder's CLI exits 0 on failure
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{out[-2000:]}")
    return seconds


def bench_processes(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Round-robin over the commands (one warm-up round) so drift hits all of them alike."""
    cmds = process_commands(args)
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for run in range(args.runs + 1):
        for name, (cmd, env) in cmds.items():
            seconds = run_once(cmd, env, workdir)
            if run:
                times[name].append(seconds)
    med = {name: median(ts) for name, ts in times.items()}
    return {
        "commands": {name: cmd for name, (cmd, _env) in cmds.items()},
        "process_threads": args.process_threads or "torch default",
        "times_s": times,
        "median_s": med,
        "ours_minus_import_torch_s": med["ours generate"] - med["import torch"],
    }


# ------------------------------------------------------------------------------------------- report
def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_report(res: dict[str, Any]) -> None:
    env = res["environment"]
    print(f"\nllmbuilder-cli {env['llmbuilder_cli']} vs llmbuilder {env['llmbuilder']} | torch {env['torch']} | "
          f"{env['threads']} torch threads | {env['cpus']} CPUs | medians of {env['runs']} runs")
    eng = res.get("engines")
    if eng:
        print(f"\nDecoding: cpu_small shape, {eng['prompt_tokens']}-token prompt, {eng['new_tokens']} new tokens, greedy")
        print(f"  {'engine':<16}{'median s':>10}{'tokens/s':>11}")
        for name, tps in eng["tokens_per_s"].items():
            print(f"  {name:<16}{eng['median_s'][name]:>10.3f}{tps:>11.1f}")
        print(f"  ratio ours/llmbuilder: {eng['ratio']:.1f}x  (target >= {TARGET_RATIO:.0f}x: "
              f"{verdict(eng['ratio'] >= TARGET_RATIO)})")
        agree = "yes" if eng["ids_agree"] else f"no (first divergence at new token {eng['first_divergence']})"
        print(f"  token ids agree: {agree}; {eng['matching_ids']}/{eng['new_tokens']} positions equal")
    proc = res.get("processes")
    if proc:
        print(f"\nWhole-process wall time (OMP/MKL threads: {proc['process_threads']})")
        for name, s in proc["median_s"].items():
            print(f"  {name:<32}{s:>8.3f} s")
        over = proc["ours_minus_import_torch_s"]
        help_s = proc["median_s"]["ours --help"]
        print(f"  ours generate - import torch: {over:.3f} s (target <= {TARGET_OVER_TORCH_S} s: "
              f"{verdict(over <= TARGET_OVER_TORCH_S)})")
        print(f"  ours --help: {help_s:.3f} s (target <= {TARGET_HELP_S} s: {verdict(help_s <= TARGET_HELP_S)})")


def environment(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "llmbuilder": version("llmbuilder"),
        "llmbuilder_cli": version("llmbuilder-cli"),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "runs": args.runs,
        "cli_python": args.cli_python,
        "llmbuilder_python": args.llmbuilder_python,
    }


# --------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="timed runs per measurement, after one warm-up (>= 5)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for both engines (default 1: see README.md on small shared machines)")
    p.add_argument("--process-threads", type=int, default=None,
                   help="OMP/MKL threads for every timed subprocess (default: --threads; 0 = leave unset)")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--prompt-tokens", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and the prompt")
    p.add_argument("--cli-python", default=sys.executable,
                   help="interpreter of an environment with llmbuilder-cli (its `llmbuilder` script and torch)")
    p.add_argument("--llmbuilder-python", default=sys.executable,
                   help="interpreter that runs llmbuilder's own CLI as `python -m llmbuilder`; '' to skip it")
    p.add_argument("--skip-engines", action="store_true", help="only the whole-process timings")
    p.add_argument("--skip-processes", action="store_true", help="only the decoding speed")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.process_threads is None:
        args.process_threads = args.threads
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    json_path = args.json.resolve() if args.json else None
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp, working_directory(Path(tmp)):
        import llmbuilder  # noqa: F401  (creates ./checkpoints in the temporary directory)

        logging.disable(logging.INFO)  # llmbuilder logs every load and generation at INFO
        results: dict[str, Any] = {"environment": environment(args)}
        if not args.skip_engines:
            results["engines"] = bench_engines(args, Path(tmp))
        if not args.skip_processes:
            results["processes"] = bench_processes(args, Path(tmp))
    print_report(results)
    if json_path:
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nresults written to {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
