"""Benchmark llmbuilder-cli on a real model (SmolLM2-135M-Instruct) against transformers, in one run.

The weights: the test suite's SmolLM2 GGUF (``tests/real_models.py``), read once by transformers and saved
as a Hugging Face directory in the user cache, so both engines run the very same float32 weights
(converted to bfloat16 by each engine when asked). Every figure is a median of ``--runs`` runs after one
warm-up, the two engines alternating run by run with the same torch thread count (``--threads``, 2).

1. **Decoding**: a 20-token prompt, 128 new tokens, greedy, end-of-sequence held off (min_new_tokens, on
   both sides). tokens/s counts the tokens after the first (the first one pays the prompt). Ours runs
   float32, bfloat16, and int8 and int4 weight-only (float32 and bfloat16 activations); transformers float32 and
   bfloat16 (``generate``). Also printed: whether the float32 token ids are identical, the ratio
   ours/transformers, and each mode's share of the memory-bandwidth limit: ``--bandwidth-gbs`` (34 on the
   2-core machine of benchmarks/README.md) divided by the bytes one token reads (the weights plus the
   average key/value cache); and "share 2", the same against what ``torch.sum`` over 512 MiB actually
   reads per second in this run (the practical ceiling: about 27 GB/s on that machine).
2. **Time to first token** for a 512-token prompt (prefill batched on both sides).
3. **Quality** of each of our modes (``--quality``): perplexity of a fixed text and top-1 agreement with
   float32, teacher-forced one token at a time.
4. **Peak memory** of a fresh process that loads the model and generates 8 tokens, per mode, against the
   target weights + 300 MiB.
5. **Whole processes**: ``python -c "import torch"``, ``llmbuilder --help``, ``generate text`` on the
   repository's tiny fixture (40 tokens), and a fresh process to the first token of SmolLM2 (directory
   and GGUF file).

``--quick`` (CI smoke run, well under a minute once the directory is cached): 1 run, 8 new tokens, a
32-token prompt for the first-token time, float32 and int8 only, no quality, memory or process rows.
transformers (and accelerate, to read the GGUF) are benchmark/test dependencies only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from llmbuilder_cli import GenerationConfig  # noqa: E402
from llmbuilder_cli.engine.generate import TokenGenerator  # noqa: E402
from llmbuilder_cli.engine.loading import load  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "llmbuilder-tiny"
TEXT = ("The water cycle describes how water moves between the oceans, the air and the land. Heat from the sun "
        "evaporates water from seas and lakes; the vapour rises, cools and condenses into clouds. When the "
        "droplets grow heavy they fall as rain or snow, which flows back through rivers and ground water to "
        "the sea, and the cycle begins again. ")
#: (name, dtype, quantize) of our modes; transformers runs the dtypes only.
MODES = [("float32", "float32", None), ("bfloat16", "bfloat16", None),
         ("int8 (f32 act.)", "float32", "int8"), ("int8 (bf16 act.)", "bfloat16", "int8"),
         ("int4 (f32 act.)", "float32", "int4"), ("int4 (bf16 act.)", "bfloat16", "int4")]
TARGET_RATIO = 1.5
TARGET_BANDWIDTH_SHARE = 0.5
TARGET_HELP_S = 0.15
TARGET_OVER_TORCH_S = 0.3
TARGET_FIRST_TOKEN_S = 2.0
TARGET_RSS_OVER_WEIGHTS = 300 << 20


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


# ------------------------------------------------------------------------------------------- weights
def smollm2_file() -> Path:
    """The test suite's SmolLM2 GGUF file, or exit with why it is not available."""
    import real_models

    try:
        return real_models.smollm2_gguf()
    except BaseException as exc:  # pytest's skip/fail outcomes
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise SystemExit(f"SmolLM2 is not available: {exc}") from None


def smollm2_dir(cache: Path | None = None) -> tuple[Path, Path]:
    """(GGUF file, Hugging Face directory saved from it by transformers, cached in ``cache``, by default
    beside the test models in the user cache)."""
    import real_models

    gguf = smollm2_file()
    target = (cache or real_models.cache_dir().parent / "bench") / "SmolLM2-135M-Instruct-hf"
    if (target / "model.safetensors").is_file():
        return gguf, target
    print(f"converting {gguf.name} to a Hugging Face directory once (transformers) ...", file=sys.stderr)
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = model.config
    del config.quantization_config  # a GGUF-loaded model refuses save_pretrained; save a plain copy
    plain = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return gguf, target


# ------------------------------------------------------------------------------------------ engines
class Ours:
    name = "llmbuilder-cli"

    def __init__(self, directory: Path, dtype: str, quantize: str | None) -> None:
        self.loaded = load(directory, device="cpu", dtype=dtype, quantize=quantize)
        self.model = self.loaded.model

    def generate(self, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
        """Greedy ids and the time after each token."""
        cfg = GenerationConfig(do_sample=False, max_new_tokens=n, min_new_tokens=n)
        stamps, ids = [], []
        for token in TokenGenerator(self.model, prompt, cfg, eos_ids=self.loaded.tokenizer.eos_ids):
            stamps.append(time.perf_counter())
            ids.append(token)
        return ids, stamps

    def bytes_per_token(self, kv_positions: float) -> float:
        c = self.model.config
        kv = 2 * c.n_layer * c.n_kv_head * c.head_dim * kv_positions * torch.empty((), dtype=self.model.dtype).element_size()
        return self.model.weight_bytes + kv


class Theirs:
    name = "transformers"

    def __init__(self, directory: Path, dtype: str) -> None:
        import transformers

        transformers.logging.set_verbosity_error()
        self.transformers = transformers
        self.model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=getattr(torch, dtype)).eval()

    def generate(self, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
        stamps: list[float] = []

        class Clock(self.transformers.StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
                stamps.append(time.perf_counter())
                return torch.zeros(input_ids.shape[0], dtype=torch.bool)

        ids = torch.tensor([prompt])
        with torch.no_grad():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                      do_sample=False, stopping_criteria=[Clock()], pad_token_id=0)
        return out[0, len(prompt):].tolist(), stamps


def read_bandwidth_gbs(runs: int, nbytes: int = 512 << 20) -> float:
    """What this machine reads per second through torch: median of ``torch.sum`` over ``nbytes`` of
    float32 (as many threads as the engines use). The practical ceiling of a memory-bound decode."""
    buf = torch.ones(nbytes // 4)
    buf.sum()  # pages touched once before timing
    times = []
    for _ in range(max(3, runs)):
        t0 = time.perf_counter()
        buf.sum()
        times.append(time.perf_counter() - t0)
    return nbytes / median(times) / 1e9


def decode_rate(stamps: list[float]) -> float:
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")


def first_token_time(engine: Any, prompt: list[int]) -> float:
    t0 = time.perf_counter()
    _, stamps = engine.generate(prompt, 1)
    return stamps[0] - t0


# ------------------------------------------------------------------------------------ measurements
def alternate(engines: dict[str, Any], fn: Callable[[Any], Any], runs: int) -> dict[str, list[Any]]:
    """One warm-up, then ``runs`` rounds, the engines taking turns in each round."""
    out: dict[str, list[Any]] = {name: [] for name in engines}
    for r in range(runs + 1):
        for name, engine in engines.items():
            value = fn(engine)
            if r:
                out[name].append(value)
    return out


def bench_dtype(args: argparse.Namespace, directory: Path, dtype: str, prompt: list[int], long_prompt: list[int],
                modes: list[tuple[str, str, str | None]]) -> dict[str, Any]:
    engines: dict[str, Any] = {f"ours {name}": Ours(directory, d, q) for name, d, q in modes if d == dtype}
    if not args.skip_transformers:
        engines[f"transformers {dtype}"] = Theirs(directory, dtype)
    runs: dict[str, list[tuple[list[int], float]]] = alternate(
        engines, lambda e: (lambda ids_stamps: (ids_stamps[0], decode_rate(ids_stamps[1])))(
            e.generate(prompt, args.new_tokens)), args.runs)
    ttft = alternate(engines, lambda e: first_token_time(e, long_prompt), args.runs)
    res: dict[str, Any] = {}
    for name, engine in engines.items():
        rates = [r for _, r in runs[name]]
        entry = {"tokens_per_s": median(rates), "runs": rates, "ids": runs[name][-1][0],
                 "first_token_s": median(ttft[name]), "first_token_runs": ttft[name]}
        if isinstance(engine, Ours):
            per_token = engine.bytes_per_token(len(prompt) + args.new_tokens / 2)
            entry["bytes_per_token"] = per_token
            entry["bandwidth_limit_tokens_per_s"] = args.bandwidth_gbs * 1e9 / per_token
            entry["bandwidth_share"] = entry["tokens_per_s"] / entry["bandwidth_limit_tokens_per_s"]
            if args.quality:
                entry["quality"] = quality(engine)
        res[name] = entry
    return res


def quality(engine: Ours) -> dict[str, Any]:
    """Perplexity of TEXT and the argmax after every prefix (teacher-forced, one token at a time)."""
    ids = engine.loaded.tokenizer.encode(TEXT)
    model = engine.model
    cache = model.new_cache(len(ids))
    nll, tops = 0.0, []
    with torch.inference_mode():
        for t in range(len(ids) - 1):
            logits = model.forward(torch.tensor([[ids[t]]]), t, cache)[0].float()
            nll -= float(torch.log_softmax(logits, -1)[ids[t + 1]])
            tops.append(int(logits.argmax()))
    return {"perplexity": math.exp(nll / (len(ids) - 1)), "tokens": len(ids) - 1, "top1": tops}


_RSS_SCRIPT = """
import json, resource, sys, torch
sys.path.insert(0, sys.argv[4])
from llmbuilder_cli import GenerationConfig
from llmbuilder_cli.engine.generate import TokenGenerator
from llmbuilder_cli.engine.loading import load
torch.set_num_threads(int(sys.argv[5]))
lm = load(sys.argv[1], device="cpu", dtype=sys.argv[2], quantize=sys.argv[3] or None)
ids = list(TokenGenerator(lm.model, lm.tokenizer.encode("The capital of France is"),
                          GenerationConfig(do_sample=False, max_new_tokens=8)))
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"peak": peak, "weights": lm.model.weight_bytes}))
"""


def bench_memory(args: argparse.Namespace, sources: dict[str, Path], modes: list[tuple[str, str, str | None]]) -> dict:
    out: dict[str, Any] = {}
    for label, path in sources.items():
        for name, dtype, quantize in modes:
            proc = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(path), dtype, quantize or "", str(REPO),
                                   str(args.threads)], capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"memory run failed ({label} {name}):\n{proc.stderr[-2000:]}")
            out[f"{label} {name}"] = json.loads(proc.stdout)
    return out


def our_cli() -> list[str]:
    script = Path(sys.executable).parent / "llmbuilder"
    if script.is_file() and "llmbuilder_cli" in script.read_text(errors="replace"):
        return [str(script)]
    return [sys.executable, "-m", "llmbuilder_cli"]


def bench_processes(args: argparse.Namespace, gguf: Path, directory: Path) -> dict[str, Any]:
    cli = our_cli()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    first = ["generate", "text", "-p", "The capital of France is", "--greedy", "--max-tokens", "1", "-q",
             "--threads", str(args.threads)]
    cmds = {
        "import torch": [sys.executable, "-c", "import torch"],
        "llmbuilder --help": cli + ["--help"],
        "generate text, fixture, 40 tokens": cli + ["generate", "text", "-m", str(FIXTURE / "model.pt"), "-t",
                                                    str(FIXTURE / "tokenizer"), "-p", "Once upon a time",
                                                    "--max-tokens", "40", "--greedy", "-q"],
        "first token, SmolLM2 directory": cli + first[:2] + ["-m", str(directory)] + first[2:],
        "first token, SmolLM2 GGUF": cli + first[:2] + ["-m", str(gguf)] + first[2:],
    }
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for r in range(args.runs + 1):
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
            seconds = time.perf_counter() - t0
            if proc.returncode:
                raise SystemExit(f"command failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
            if r:
                times[name].append(seconds)
    return {"median_s": {name: median(ts) for name, ts in times.items()}, "runs": times, "commands": cmds}


# ------------------------------------------------------------------------------------------- report
def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(res: dict[str, Any], args: argparse.Namespace) -> None:
    env = res["environment"]
    print(f"\nSmolLM2-135M-Instruct | torch {env['torch']} | transformers {env.get('transformers', '-')} | "
          f"{env['threads']} threads | {env['cpus']} CPUs ({env['cpu']}) | medians of {args.runs} runs")
    dec = res["decode"]
    measured = env["read_gbs"]
    print(f"\nDecoding: {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens, greedy "
          f"(tokens/s after the first token); bandwidth limit at {args.bandwidth_gbs:g} GB/s; "
          f"measured: torch.sum reads {measured:.1f} GB/s (share 2)")
    ttft = f"TTFT {args.ttft_tokens}"
    print(f"  {'engine':<32}{'tok/s':>8}{'MB/token':>10}{'limit':>8}{'share':>8}{'share 2':>9}{ttft:>10}")
    for name, e in dec.items():
        mb = f"{e['bytes_per_token'] / 1e6:.0f}" if "bytes_per_token" in e else "-"
        lim = f"{e['bandwidth_limit_tokens_per_s']:.0f}" if "bytes_per_token" in e else "-"
        share = f"{e['bandwidth_share']:.0%}" if "bytes_per_token" in e else "-"
        share2 = f"{e['tokens_per_s'] * e['bytes_per_token'] / 1e9 / measured:.0%}" if "bytes_per_token" in e else "-"
        print(f"  {name:<32}{e['tokens_per_s']:>8.1f}{mb:>10}{lim:>8}{share:>8}{share2:>9}"
              f"{e['first_token_s']:>9.3f}s")
    for dtype in ("float32", "bfloat16"):
        ours, theirs = dec.get(f"ours {dtype}"), dec.get(f"transformers {dtype}")
        if ours and theirs:
            ratio = ours["tokens_per_s"] / theirs["tokens_per_s"]
            same = ours["ids"] == theirs["ids"]
            agree = sum(a == b for a, b in zip(ours["ids"], theirs["ids"]))
            print(f"  {dtype}: ours/transformers {ratio:.2f}x (target >= {TARGET_RATIO}x: {verdict(ratio >= TARGET_RATIO)});"
                  f" first token ({args.ttft_tokens}) {ours['first_token_s']:.3f} s vs {theirs['first_token_s']:.3f} s "
                  f"({verdict(ours['first_token_s'] <= theirs['first_token_s'])}); token ids "
                  + ("identical" if same else f"{agree}/{len(ours['ids'])} equal"))
    best = max((e["bandwidth_share"] for e in dec.values() if "bandwidth_share" in e), default=0.0)
    print(f"  best bandwidth share {best:.0%} (target >= {TARGET_BANDWIDTH_SHARE:.0%}: "
          f"{verdict(best >= TARGET_BANDWIDTH_SHARE)})")
    ref = dec.get("ours float32", {}).get("quality")
    if ref:
        print("\nQuality (teacher-forced on a fixed text):")
        for name, e in dec.items():
            q = e.get("quality")
            if q:
                agree = sum(a == b for a, b in zip(q["top1"], ref["top1"]))
                print(f"  {name:<32} perplexity {q['perplexity']:.3f}  top-1 = float32's {agree}/{q['tokens']}")
    mem = res.get("memory")
    if mem:
        print("\nPeak RSS of a fresh process (load + 8 tokens) vs weights + 300 MiB:")
        for name, m in mem.items():
            over = m["peak"] - m["weights"]
            print(f"  {name:<36} peak {m['peak'] / 2**20:6.0f} MiB  weights {m['weights'] / 2**20:5.0f} MiB  "
                  f"+{over / 2**20:4.0f} MiB ({verdict(over <= TARGET_RSS_OVER_WEIGHTS)})")
    proc = res.get("processes")
    if proc:
        med = proc["median_s"]
        print("\nWhole processes (wall time):")
        for name, s in med.items():
            print(f"  {name:<40}{s:>7.3f} s")
        over = med["generate text, fixture, 40 tokens"] - med["import torch"]
        print(f"  --help {verdict(med['llmbuilder --help'] <= TARGET_HELP_S)} (<= {TARGET_HELP_S} s); "
              f"fixture generate - import torch {over:.3f} s {verdict(over <= TARGET_OVER_TORCH_S)} "
              f"(<= {TARGET_OVER_TORCH_S} s); first token {verdict(med['first token, SmolLM2 GGUF'] <= TARGET_FIRST_TOKEN_S)}"
              f" (<= {TARGET_FIRST_TOKEN_S} s)")


def environment(args: argparse.Namespace) -> dict[str, Any]:
    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                env["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if not args.skip_transformers:
        import transformers

        env["transformers"] = transformers.__version__
    return env


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--prompt-tokens", type=int, default=20)
    p.add_argument("--ttft-tokens", type=int, default=512, help="prompt length for the first-token time")
    p.add_argument("--bandwidth-gbs", type=float, default=34.0, help="memory read bandwidth of the machine")
    p.add_argument("--quality", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--skip-transformers", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-processes", action="store_true")
    p.add_argument("--quick", action="store_true", help="smoke run: see the module docstring")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("--cache-dir", type=Path, help="where the converted directory is kept (default: user cache)")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.new_tokens, args.ttft_tokens = 1, 8, 32
        args.quality, args.skip_memory, args.skip_processes = False, True, True
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    torch.set_num_threads(args.threads)
    gguf, directory = smollm2_dir(args.cache_dir)
    modes = [m for m in MODES if not args.quick or m[0] in ("float32", "int8 (f32 act.)")]
    tok = load(directory, device="cpu").tokenizer
    text_ids = tok.encode(TEXT * 40)
    prompt, long_prompt = text_ids[: args.prompt_tokens], text_ids[: args.ttft_tokens]
    res: dict[str, Any] = {"environment": environment(args), "decode": {}}
    res["environment"]["read_gbs"] = read_bandwidth_gbs(args.runs)
    for dtype in ("float32", "bfloat16"):
        if any(d == dtype for _, d, _ in modes):
            res["decode"].update(bench_dtype(args, directory, dtype, prompt, long_prompt, modes))
    if not args.skip_memory:
        res["memory"] = bench_memory(args, {"dir": directory, "gguf": gguf}, modes)
    if not args.skip_processes:
        res["processes"] = bench_processes(args, gguf, directory)
    report(res, args)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
