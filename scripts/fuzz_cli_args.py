"""Fuzz the command line's argument vectors, in process: no vector may end in a traceback or in the
"this is a bug" fallback.

    python scripts/fuzz_cli_args.py --count 2000 --seed 1

Each vector picks a command of the real Click tree (``generate text``, ``info``, ``export hf``, ``config
…``, ``doctor``, the root), then a few of that command's own options (sometimes an unknown one), each
with a value drawn from a pool that mixes valid values (the test fixture's model and tokenizer, small
numbers, prompts) with hostile ones: integers of thousands of digits, negative numbers, NaN and
infinities, empty and blank strings, text that is not UTF-8 (surrogate escapes, as Python passes such
argv), control characters, paths longer than the system allows, ``~nouser`` paths, special files
(``/dev/zero``, ``/dev/full``, ``/dev/null``, a directory, a symlink loop, a file used as a directory),
``-`` and ``--``. Standard input is random bytes; a few ``LLMBUILDER_*`` variables get hostile values too.
The vector runs through ``llmbuilder_cli.cli.app.main`` with stdout and stderr replaced by byte buffers
that behave like redirected files (UTF-8, strict on stdout), and a per-vector time limit.

Counts: vectors run, exit codes, tracebacks (an exception escaping ``main`` or a traceback printed),
"this is a bug" lines, time-outs (a vector still running after ``--time-limit`` seconds: only legitimate
long generations should land there). Exit status 1 when a traceback or bug line was seen.

Everything the vectors write (settings, exports) stays in a temporary directory, which is also the
working directory; ``--install-completion`` (it edits the shell's start-up file) is never generated.
FIFOs are not in the pool: reading one that has no writer waits, as ``cat`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "llmbuilder-tiny"
MODEL_PT = FIXTURE / "model.pt"
TOKENIZER_DIR = FIXTURE / "tokenizer"
NEVER = {"--install-completion"}  # would edit the user's shell start-up file


class VectorTimeout(BaseException):
    """Raised by the alarm: a BaseException, so the CLI's own handlers do not take it for an error."""


def _hostile_numbers() -> list[str]:
    return ["0", "-1", "1", "2", "-0", "3.5", "1e309", "-1e309", "nan", "NaN", "inf", "-inf", "+inf", "1e-320",
            str(2**63), str(2**63 - 1), str(-(2**63) - 1), str(2**31), "9" * 5000, "-" + "9" * 5000, "0x10", "1_000",
            "١٢", "1,5", " 7 ", "5e", "1e2", "0.0000001", "999999999999999999999999"]


def _hostile_texts() -> list[str]:
    return ["", " ", "   ", "\t", "\n", "x\ny", "\x1b[2J\x1b]0;title\x07", "\r", "a\udcff\udcfe", "\udcc3\udca9",
            "é", "日本語", "😀", "-", "--", "-p", "--help", "--version", "=", "a=b", "'", '"', "\\", "%s%n",
            "{}", "{\"prompt\": \"x\"}", "x" * 10000, "\u202e", "\ufeff", "\x7f", "auto", "none", "demo", "cpu",
            "cuda", "cuda:99", "mps", "float16", "int4", "int8", "default", "true", "off"]


def _paths(work: Path) -> list[str]:
    (work / "adir").mkdir(exist_ok=True)
    (work / "afile.txt").write_text("just text\n", encoding="utf-8")
    (work / "prompts.txt").write_text('once upon\n{"prompt": "the fox", "id": 1}\n{"prompt": "   "}\n',
                                      encoding="utf-8")
    (work / "bad.jsonl").write_text('{"prompt": "x", "seed": ' + "9" * 5000 + "}\n", encoding="utf-8")
    (work / "template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}", encoding="utf-8")
    (work / "broken.jinja").write_text("{% for %}", encoding="utf-8")
    (work / "bin.bin").write_bytes(bytes(range(256)))
    odd = work / "run\udcff"  # a run directory whose name is not UTF-8 (bytes 'run\xff')
    if not odd.exists():
        import shutil

        shutil.copytree(FIXTURE, odd)
    loop = work / "loop"
    if not loop.is_symlink():
        loop.symlink_to(work / "loop")
    return [
        str(MODEL_PT), str(FIXTURE), str(TOKENIZER_DIR), str(TOKENIZER_DIR / "tokenizer.model"), "demo",
        str(odd), str(odd / "model.pt"), str(odd / "tokenizer"),
        str(work / "adir"), str(work / "afile.txt"), str(work / "afile.txt" / "below"), str(work / "prompts.txt"),
        str(work / "bad.jsonl"), str(work / "template.jinja"), str(work / "broken.jinja"), str(work / "bin.bin"),
        str(loop), str(loop / "x"), str(work / "missing.pt"), "/dev/zero", "/dev/full", "/dev/null", "/dev/urandom",
        "/proc/self/status", "/proc/self/mem", "/", ".", "~", "~nouser-fuzz/x", "~nouser-fuzz", "~/missing",
        str(work / ("n" * 300)), "/".join(["d" * 250] * 20), str(work / "a\udcff.pt"), str(work / "new" / "out"),
        "-", "", " ",
    ]


def _out_dirs(work: Path) -> list[str]:
    """Export destinations: always inside the work directory, or files no export can replace."""
    return [str(work / "hf"), str(work / "hf"), str(work / "adir"), str(work), str(work / "afile.txt"),
            str(work / "afile.txt" / "x"), str(work / "loop"), str(work / ("o" * 300)), "/dev/full", "/dev/null",
            str(work / "a\udcff"), str(work / "hf2" / "deeper")]


def _commands() -> list[tuple[list[str], Any]]:
    import typer

    from llmbuilder_cli.cli.app import app

    found: list[tuple[list[str], Any]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        found.append((path, cmd))
        if subs:
            for name, sub in subs.items():
                walk(sub, path + [name])

    walk(typer.main.get_command(app), [])
    return found


WEIGHTS = {"generate text": 8, "export hf": 3, "info": 2, "config set": 2, "doctor": 0.3, "setup": 0.2}


class Fuzzer:
    def __init__(self, seed: int, work: Path) -> None:
        self.rnd = random.Random(seed)
        self.work = work
        self.paths = _paths(work)
        self.outs = _out_dirs(work)
        self.numbers = _hostile_numbers()
        self.texts = _hostile_texts()
        self.commands = _commands()

    def value(self, opt: Any) -> str:
        r = self.rnd
        names = set(opt.opts)
        kind = type(opt.type).__name__
        if "--out" in names:
            return r.choice(self.outs)
        if names & {"--model", "-m", "--tokenizer", "-t", "--prompts-file", "--chat-template", "model"}:
            return r.choice(self.paths + self.texts[:8]) if r.random() < 0.85 else r.choice(self.numbers)
        if kind in ("IntParamType", "IntRange", "FloatParamType", "FloatRange"):
            if r.random() < 0.3:  # mostly in range, to get past parsing
                return str(r.choice([1, 2, 3, 4, 5, 8, 40]) if "Int" in kind else r.choice([0.0, 0.5, 0.9, 1.0, 1.5]))
            return r.choice(self.numbers + self.texts[:5])
        if names & {"key"}:
            return r.choice(["temperature", "top-k", "top_p", "model", "tokenizer", "stop", "threads", "seed",
                             "device", "dtype", "quantize", "system", "max_tokens", "nope", "", "\udcff"])
        if r.random() < 0.5:
            return r.choice(self.texts)
        return r.choice(self.paths + self.numbers)

    def vector(self) -> tuple[list[str], bytes, dict[str, str]]:
        r = self.rnd
        weighted = [(p, c) for p, c in self.commands if not getattr(c, "commands", None)]
        weights = [WEIGHTS.get(" ".join(p), 1.0) for p, _ in weighted]
        path, cmd = r.choices(weighted, weights)[0]
        if r.random() < 0.05:  # a group, the root, or a command that does not exist
            path = r.choice([[], ["generate"], ["config"], ["export"], ["nope"], ["generate", "nope"]])
            cmd = None
        argv = list(path)
        params = [p for p in (cmd.params if cmd is not None else []) if not (set(p.opts) & NEVER)]
        options = [p for p in params if p.param_type_name == "option"]
        arguments = [p for p in params if p.param_type_name == "argument"]
        base_valid = path == ["generate", "text"] and r.random() < 0.6
        if base_valid:  # a runnable base, so the hostile values reach the later stages too
            argv += ["-m", str(MODEL_PT), "-t", str(TOKENIZER_DIR), "--max-tokens", str(r.choice([1, 3, 8]))]
            roll = r.random()
            if roll < 0.6:
                argv += ["-p", r.choice(["once upon a time", "the", "x", "   ", "é 😀"])]
            elif roll < 0.85:  # a batch: the hostile options meet every line of a prompts file
                argv += ["--jsonl", "--prompts-file", r.choice([str(self.work / "prompts.txt"), "-",
                                                                str(self.work / "bad.jsonl")])]
        for _ in range(r.choice([0, 1, 1, 2, 2, 3, 4, 6])):
            if not options or r.random() < 0.03:
                argv.append(r.choice(["--frobnicate", "-Z", "--max-token", "--json=1", "---", "-", "--"]))
                continue
            opt = r.choice(options)
            name = r.choice(opt.opts + list(opt.secondary_opts))
            if opt.is_flag:
                argv.append(name)
            elif r.random() < 0.04:
                argv.append(name)  # the value is missing
            elif r.random() < 0.2 and name.startswith("--"):
                argv.append(f"{name}={self.value(opt)}")
            else:
                argv += [name, self.value(opt)]
        for arg in arguments:
            if r.random() < 0.9:
                argv.append(self.value(arg))
        if r.random() < 0.05:
            argv.append(r.choice(self.texts))  # a stray extra argument
        if path == ["export", "hf"] and not any(a in ("--out", "-o") or a.startswith("--out=") for a in argv):
            if r.random() < 0.8:
                argv += ["-o", r.choice(self.outs)]
        stdin = r.choice([b"", b"hello there", b"\xff\xfe\x00 not utf-8", b"a\nb\n", "é😀\n".encode(),
                          b"x" * 5000, b'{"prompt": "x"}\n{"prompt": "   "}\n', b"\x1b[2J\r\n"])
        env: dict[str, str] = {}
        if r.random() < 0.1:
            key = r.choice(["LLMBUILDER_TEMPERATURE", "LLMBUILDER_TOP_K", "LLMBUILDER_THREADS", "LLMBUILDER_MODEL",
                            "LLMBUILDER_PROFILE", "LLMBUILDER_STOP", "LLMBUILDER_SEED", "LLMBUILDER_DEVICE"])
            env[key] = r.choice(self.numbers + self.texts[:12] + ["~nouser-fuzz/x"])
        return argv, stdin, env


class _Out(io.TextIOWrapper):
    def isatty(self) -> bool:
        return False


def _stream(errors: str) -> _Out:
    return _Out(io.BytesIO(), encoding="utf-8", errors=errors, write_through=True)


def run_vector(argv: list[str], stdin: bytes, env: dict[str, str], time_limit: float) -> tuple[Any, str, str]:
    """(exit code or 'timeout' or the escaped exception, stdout text, stderr text)."""
    from llmbuilder_cli.cli.app import main

    out, err = _stream("strict"), _stream("backslashreplace")
    fake_in = _Out(io.BytesIO(stdin), encoding="utf-8", errors="strict")
    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update({k: v for k, v in env.items() if "\0" not in v})

    def alarm(signum: int, frame: Any) -> None:
        raise VectorTimeout()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            saved_in, sys.stdin = sys.stdin, fake_in
            try:
                code: Any = main(argv)
            except SystemExit as exc:
                code = exc.code
            except VectorTimeout:
                code = "timeout"
            except BaseException as exc:  # noqa: BLE001 - an escaped exception is what we count
                code = f"escaped {type(exc).__name__}: {exc}"
            finally:
                sys.stdin = saved_in
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def text(s: _Out) -> str:
        with contextlib.suppress(Exception):
            s.flush()
        return s.buffer.getvalue().decode("utf-8", "replace")

    return code, text(out), text(err)


def fuzz(count: int, seed: int, workdir: Path | None = None, time_limit: float = 30.0,
         verbose: bool = False) -> dict[str, Any]:
    """Run ``count`` vectors; return the counts (see the module docstring) and the first bad examples."""
    own = None
    if workdir is None:
        own = tempfile.TemporaryDirectory(prefix="llmbuilder-fuzz-")
        workdir = Path(own.name)
    work = Path(workdir)
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("LLMBUILDER_HOME", "NO_COLOR", "LLMBUILDER_DEBUG")}
    for key in [k for k in os.environ if k.startswith("LLMBUILDER_")]:
        saved.setdefault(key, os.environ.get(key))
        del os.environ[key]
    os.environ["LLMBUILDER_HOME"] = str(home)
    os.environ["NO_COLOR"] = "1"
    cwd = os.getcwd()
    os.chdir(work)
    fz = Fuzzer(seed, work)
    counts: dict[str, Any] = {"run": 0, "traceback": 0, "bug": 0, "timeout": 0, "codes": Counter(), "examples": []}
    t0 = time.monotonic()
    try:
        for i in range(count):
            argv, stdin, env = fz.vector()
            code, out, err = run_vector(argv, stdin, env, time_limit)
            counts["run"] += 1
            counts["codes"][str(code)] += 1
            bad = []
            if "Traceback (most recent call last)" in err or (isinstance(code, str) and code.startswith("escaped")):
                counts["traceback"] += 1
                bad.append("traceback")
            if "this is a bug" in err:
                counts["bug"] += 1
                bad.append("bug")
            if code == "timeout":
                counts["timeout"] += 1
            if bad and len(counts["examples"]) < 20:
                counts["examples"].append({"i": i, "argv": argv, "env": env, "code": code, "stderr": err[-600:]})
            if verbose and (bad or code == "timeout"):
                print(json.dumps({"i": i, "bad": bad, "code": code, "argv": argv, "env": env, "stderr": err[-400:]},
                                 ensure_ascii=True), file=sys.__stderr__, flush=True)
    finally:
        os.chdir(cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if own is not None:
            own.cleanup()
    counts["seconds"] = round(time.monotonic() - t0, 1)
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=2000, help="argument vectors to run (default 2000)")
    ap.add_argument("--seed", type=int, default=1, help="seed: the same seed runs the same vectors")
    ap.add_argument("--time-limit", type=float, default=30.0, help="seconds one vector may run (default 30)")
    ap.add_argument("--verbose", action="store_true", help="print each bad or timed-out vector as it happens")
    args = ap.parse_args(argv)
    counts = fuzz(args.count, args.seed, time_limit=args.time_limit, verbose=args.verbose)
    summary = {k: (dict(sorted(v.items())) if isinstance(v, Counter) else v) for k, v in counts.items()
               if k != "examples"}
    print(json.dumps(summary, ensure_ascii=True))
    for ex in counts["examples"]:
        print(json.dumps(ex, ensure_ascii=True))
    return 1 if counts["traceback"] or counts["bug"] else 0


if __name__ == "__main__":
    sys.exit(main())
