"""llama.cpp's side of ``bench_llamacpp.py``: runs in the benchmark environment that has llama-cpp-python.

Standard library and ``llama_cpp`` only (no torch, no llmbuilder-cli), so it runs under another interpreter
than the benchmark itself. Two ways to run it:

* ``serve``: reads one JSON request per line on stdin and answers one JSON line on stdout. Requests:
  ``{"cmd": "load", "path": FILE, "threads": N, "n_ctx": N}`` (replaces the loaded model) and
  ``{"cmd": "generate", "ids": [...], "n": N}``: greedy decoding of ``n`` tokens after the prompt ids, the KV
  cache emptied first (no prefix reuse), answered with the ids, the time after each token (seconds from the
  start of the call) and llama.cpp's own counters for the call (``llama_perf_context``: prompt and decode
  milliseconds inside ``llama_decode``).
* ``first-token FILE PROMPT THREADS``: a fresh process that loads FILE, tokenizes PROMPT and generates one
  greedy token; prints ``{"load_s": ..., "ids": [...]}``. The caller times the whole process and reads its
  peak RSS.
"""

from __future__ import annotations

import json
import sys
import time

import llama_cpp


def open_model(path: str, threads: int, n_ctx: int) -> llama_cpp.Llama:
    return llama_cpp.Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=n_ctx,
                           n_batch=512, n_ubatch=512, verbose=False)


def generate(llm: llama_cpp.Llama, ids: list[int], n: int) -> dict:
    llm.reset()  # n_tokens = 0: generate() evaluates the whole prompt again, nothing reused
    llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
    out, stamps = [], []
    t0 = time.perf_counter()
    for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=False):
        stamps.append(time.perf_counter() - t0)
        out.append(int(token))
        if len(out) == n:
            break
    perf = llama_cpp.llama_perf_context(llm._ctx.ctx)
    return {"ids": out, "stamps": stamps,
            "perf": {"prompt_ms": perf.t_p_eval_ms, "prompt_tokens": perf.n_p_eval,
                     "decode_ms": perf.t_eval_ms, "decode_tokens": perf.n_eval}}


def serve() -> None:
    llm = None
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "load":
            llm = None  # free the previous model first
            t0 = time.perf_counter()
            llm = open_model(req["path"], req["threads"], req["n_ctx"])
            answer = {"load_s": time.perf_counter() - t0, "n_vocab": llm.n_vocab()}
        elif req["cmd"] == "generate":
            answer = generate(llm, req["ids"], req["n"])
        else:
            answer = {"error": f"unknown command {req['cmd']!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def first_token(path: str, prompt: str, threads: int) -> None:
    t0 = time.perf_counter()
    llm = open_model(path, threads, 512)
    load_s = time.perf_counter() - t0
    ids = llm.tokenize(prompt.encode())  # BOS only where the file asks for it
    out = generate(llm, ids, 1)["ids"]
    print(json.dumps({"load_s": load_s, "ids": out}))


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        serve()
    elif argv[:1] == ["first-token"] and len(argv) == 4:
        first_token(argv[1], argv[2], int(argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
