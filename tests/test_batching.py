"""Batched generation (``engine/batching.py``, ``--batch-size``, ``--ordered``, ``api.generate_batch``):
several prompts decoded together give each prompt exactly what it gets alone."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import MODEL_PT, TOKENIZER_DIR
from test_cli import BASE, run
from test_perf_llama import random_model

from llmbuilder_cli import api, demo
from llmbuilder_cli.config import GenerationConfig
from llmbuilder_cli.engine.batching import SHARE_PREFIX, cache_bytes_per_position, run_streams
from llmbuilder_cli.engine.generate import TextStream, TokenGenerator
from llmbuilder_cli.engine.models.llama import Llama
from llmbuilder_cli.errors import UsageError

# Short and long prompts; with 70 new tokens several pass the fixture's 128-token block (sliding window).
PROMPTS = ["Once upon a time", "the fox", "a", "In the morning the little girl went to the", "He said that the dog",
           "Once upon a time there was a tired frog who lived near the hill and every day"]
GREEDY = GenerationConfig(do_sample=False, max_new_tokens=70, ignore_eos=True)


def _alone(loaded, prompts, config):
    return [TextStream(loaded, p, config).result().token_ids for p in prompts]


def _counting(loaded):
    """Count the rows the model's batched step runs (so a test knows batching happened)."""
    model = loaded.model
    real = model.decode_step
    rows = []

    def counted(ids, positions, caches):
        rows.append(len(positions))
        return real(ids, positions, caches)

    model.decode_step = counted
    return rows, lambda: delattr(model, "decode_step")


@pytest.mark.parametrize("which", ["fixture", "demo"])
def test_greedy_batched_equals_one_at_a_time_exactly(tiny_loaded, which):
    loaded = tiny_loaded if which == "fixture" else api.load_model("demo", device="cpu")
    expected = _alone(loaded, PROMPTS, GREEDY)
    rows, restore = _counting(loaded)
    try:
        got = api.generate_batch(loaded, prompts=PROMPTS, config=GREEDY, batch_size=4)
    finally:
        restore()
    assert [r.token_ids for r in got] == expected
    assert max(rows) == 4 and len(rows) > 50  # it really ran four sequences per forward


def test_each_line_keeps_its_own_settings_and_sampled_tokens_depend_only_on_its_seed(tiny_loaded):
    sampled = GenerationConfig(do_sample=True, temperature=0.9, top_k=40, seed=7, max_new_tokens=25)
    configs = [
        sampled,
        GenerationConfig(do_sample=False, max_new_tokens=5),
        GenerationConfig(do_sample=True, temperature=1.3, top_p=0.8, seed=11, max_new_tokens=40, stop=(".",)),
        GenerationConfig(do_sample=False, max_new_tokens=30, repetition_penalty=1.3),
    ]
    prompts = ["the fox", "Once upon a time", "a", "He said"]

    def batch(order, size):
        out = {}
        for done in run_streams(lambda i: TextStream(tiny_loaded, prompts[order[i]], configs[order[i]]), len(order),
                                max_active=size):
            out[order[done.index]] = done.result
        return out

    alone = [TextStream(tiny_loaded, p, c).result() for p, c in zip(prompts, configs)]
    for order, size in [((0, 1, 2, 3), 4), ((3, 2, 1, 0), 2), ((0, 2), 2), ((1, 0), 3)]:
        got = batch(order, size)
        for i, r in got.items():
            assert r.token_ids == alone[i].token_ids, (order, i)
            assert r.text == alone[i].text and r.finish_reason == alone[i].finish_reason
    assert len(alone[1].token_ids) == 5 and alone[2].finish_reason.value in ("stop", "length")


def test_a_failing_prompt_does_not_lose_the_others(tiny_loaded):
    prompts = ["Once upon a time", "   ", "the fox"]
    done = list(run_streams(lambda i: TextStream(tiny_loaded, prompts[i], GREEDY), 3, max_active=3))
    by_index = {d.index: d for d in done}
    assert isinstance(by_index[1].error, UsageError) and by_index[1].result is None
    assert [by_index[i].result.token_ids for i in (0, 2)] == _alone(tiny_loaded, [prompts[0], prompts[2]], GREEDY)
    with pytest.raises(UsageError, match="empty"):
        api.generate_batch(tiny_loaded, prompts=prompts, config=GREEDY, batch_size=2)


def test_memory_budget_limits_how_many_run_together(tiny_loaded):
    rows, restore = _counting(tiny_loaded)
    try:
        cfg = GenerationConfig(do_sample=False, max_new_tokens=20)
        budget = 70 * cache_bytes_per_position(tiny_loaded.model)  # 2 or 3 caches of prompt + 19 positions
        got = [d.result.token_ids for d in sorted(
            run_streams(lambda i: TextStream(tiny_loaded, PROMPTS[i], cfg), 6, max_active=6, memory_budget=budget),
            key=lambda d: d.index)]
    finally:
        restore()
    assert got == _alone(tiny_loaded, PROMPTS, cfg)
    assert rows and 2 <= max(rows) <= 3


def test_batch_size_is_validated():
    from llmbuilder_cli.batch import parse_batch_size

    assert parse_batch_size("auto") == "auto" and parse_batch_size("8") == 8 and parse_batch_size(3) == 3
    for bad in (0, -1, "x", True, 2.0, "1.5"):
        with pytest.raises(UsageError, match="batch size"):
            parse_batch_size(bad)


@pytest.mark.parametrize("case,quantize", [("gqa-untied", None), ("qwen2-tied", None), ("rope-llama3", None),
                                           ("gqa-untied", "int8"), ("qwen2-tied", "int4")])
def test_llama_batched_step_equals_the_one_sequence_step(case, quantize):
    cfg, sd = random_model(case)
    model = Llama(cfg, dict(sd), quantize=quantize)
    prompts = [[5, 17, 33], [8], [60, 91, 12, 7, 7, 3, 40], [1, 2]]
    config = GenerationConfig(do_sample=False, max_new_tokens=12, ignore_eos=True)
    alone = [list(TokenGenerator(model, p, config)) for p in prompts]
    gens = [TokenGenerator(model, p, config) for p in prompts]
    its = [iter(g) for g in gens]
    out: list[list[int]] = [[next(it)] for it in its]  # each prefill alone
    batched = 0
    while True:
        ready = [g for g in gens if g.wants_step()]
        if not ready:
            break
        ids = torch.tensor([g.seq[-1] for g in ready])  # (B,)
        with torch.inference_mode():  # as the generation loop runs it
            logits = model.decode_step(ids, [len(g.seq) - 1 for g in ready], [g.cache for g in ready])  # (B, V)
        batched += 1
        for g, row in zip(ready, logits):
            g.feed(row)
            out[gens.index(g)].append(next(its[gens.index(g)]))
    assert out == alone and batched == 11


def test_cli_batch_size_1_and_auto_write_the_same_lines_as_before(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("Once upon a time\n"
                 '{"id": "s", "prompt": "the fox", "do_sample": true, "seed": 3, "max_new_tokens": 6}\n'
                 "In the morning\n", encoding="utf-8")
    args = (*BASE, "--prompts-file", str(f), "--jsonl", "--greedy", "--max-tokens", "12", "-q")
    one = run(*args, "--batch-size", "1")
    auto = run(*args)
    assert one.returncode == auto.returncode == 0, one.stderr + auto.stderr
    rows1 = [json.loads(x) for x in one.stdout.splitlines()]
    rows_auto = [json.loads(x) for x in auto.stdout.splitlines()]
    assert [r["index"] for r in rows1] == [0, 1, 2]  # one at a time: file order
    assert [r["index"] for r in rows_auto] == [1, 0, 2]  # as they finish: the 6-token line first
    for r in rows_auto:
        assert r["token_ids"] == rows1[r["index"]]["token_ids"] and r["line"] == rows1[r["index"]]["line"]
    single = run(*BASE, "-p", "Once upon a time", "--jsonl", "--greedy", "--max-tokens", "12", "-q")
    assert json.loads(single.stdout)["token_ids"] == rows1[0]["token_ids"]
    ordered = run(*args, "--ordered", "--batch-size", "auto")
    assert [json.loads(x)["index"] for x in ordered.stdout.splitlines()] == [0, 1, 2]
    bad = run(*BASE, "-p", "x", "--batch-size", "2", "--jsonl")
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "Error: --batch-size is for --prompts-file — add --prompts-file FILE, or leave it out")


def test_ctrl_c_cancels_the_running_prompts_and_yields_what_they_made(tiny_loaded):
    configs = [GenerationConfig(do_sample=False, max_new_tokens=3),
               GenerationConfig(do_sample=False, max_new_tokens=100, ignore_eos=True)]

    def make(i):
        if i == 2:  # the third prompt is being built when Ctrl-C comes
            raise KeyboardInterrupt
        return TextStream(tiny_loaded, "Once upon a time", configs[i])

    seen = []
    with pytest.raises(KeyboardInterrupt):
        for done in run_streams(make, 3, max_active=2):
            seen.append(done)
    assert [(d.index, d.cancelled) for d in seen] == [(0, False), (1, True)]
    assert seen[1].result.finish_reason.value == "cancelled" and 0 < len(seen[1].result.token_ids) < 100


# ------------------------------------------------------------------------------- packed prefill, shared prefixes
def _llama(case):
    """A tiny random Llama-family model: the cases of test_perf_llama, and Qwen3's per-head q/k norms."""
    if case != "qwen3-qk-norm":
        cfg, sd = random_model(case)
        return Llama(cfg, dict(sd))
    from test_perf_llama import BASE as LLAMA_BASE

    from llmbuilder_cli.engine.models.llama import LlamaConfig

    cfg = LlamaConfig.from_hf({**LLAMA_BASE, "model_type": "qwen3", "num_key_value_heads": 2, "head_dim": 24})
    g = torch.Generator().manual_seed(3)
    sd = {name: 1.0 + 0.1 * torch.randn(shape, generator=g) if name.endswith("norm.weight")
          else 0.2 * torch.randn(shape, generator=g) for name, shape in cfg.tensor_shapes().items()}
    assert cfg.qk_norm
    return Llama(cfg, sd)


@pytest.mark.parametrize("case", ["fixture", "gqa-untied", "mqa-tied-head_dim24", "qwen2-tied", "rope-yarn",
                                  "qwen3-qk-norm"])
def test_packed_prefill_gives_each_prompt_its_own_cache_and_logits_bit_for_bit(tiny_loaded, case):
    from llmbuilder_cli.engine.prefill import PROBE_ROWS, exact_row_counts, packs_exactly

    model = tiny_loaded.model if case == "fixture" else _llama(case)
    g = torch.Generator().manual_seed(5)
    lengths = [40, 33, 1, 3, 12, 20, 8, 57]
    prompts = [torch.randint(0, 100, (n,), generator=g) for n in lengths]  # (T,) each
    with torch.inference_mode():
        alone = []
        for p in prompts:
            cache = model.new_cache(len(p) + 4)
            alone.append((model.forward(p.unsqueeze(0), 0, cache)[0].float(), cache))  # (V,)
        caches = [model.new_cache(len(p) + 4) for p in prompts]
        packed = model.prefill(prompts, [0] * len(prompts), caches)  # (S, V)
    assert packed.shape == (len(prompts), model.config.vocab_size) and packed.dtype == torch.float32
    for n, (logits, cache), row, mine in zip(lengths, alone, packed, caches):
        if packs_exactly(model, n):  # the rows batching packs: identical
            assert torch.equal(row, logits) and torch.equal(mine.k, cache.k) and torch.equal(mine.v, cache.v), n
        else:  # rounded differently by the machine's products of a few rows: batching runs these alone
            torch.testing.assert_close(row, logits, rtol=1e-4, atol=1e-4)
    assert all(packs_exactly(model, n) for n in lengths if n > PROBE_ROWS)
    assert exact_row_counts(model) <= set(range(1, PROBE_ROWS + 1))


@pytest.mark.parametrize("case", ["fixture", "gqa-untied"])
def test_packed_prefill_after_a_cached_prefix_equals_forward_from_that_position(tiny_loaded, case):
    model = tiny_loaded.model if case == "fixture" else _llama(case)
    g = torch.Generator().manual_seed(6)
    prompts = [torch.randint(0, 100, (n,), generator=g) for n in (30, 25, 44)]
    starts = [20, 1, 30]
    with torch.inference_mode():
        alone, caches = [], []
        for p, s in zip(prompts, starts):
            cache, mine = model.new_cache(len(p)), model.new_cache(len(p))
            model.forward(p[:s].unsqueeze(0), 0, cache)
            model.forward(p[:s].unsqueeze(0), 0, mine)
            alone.append(model.forward(p[s:].unsqueeze(0), s, cache)[0].float())
            caches.append((cache, mine))
        packed = model.prefill([p[s:] for p, s in zip(prompts, starts)], starts, [m for _, m in caches])
    for logits, row, (cache, mine) in zip(alone, packed, caches):
        torch.testing.assert_close(row, logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mine.k, cache.k, rtol=1e-5, atol=1e-5)


def _counting_prefill(model):
    """Record the token rows every prefill runs: the packed calls and the one-sequence forwards."""
    packed, alone = [], []
    real_prefill, real_forward = model.prefill, model.forward

    def prefill(ids, starts, caches):
        packed.append([len(t) for t in ids])
        return real_prefill(ids, starts, caches)

    def forward(ids, start=0, cache=None):
        if ids.shape[1] > 1:
            alone.append(ids.shape[1])
        return real_forward(ids, start, cache)

    model.prefill, model.forward = prefill, forward
    return packed, alone, lambda: (delattr(model, "prefill"), delattr(model, "forward"))


LONG = ["Once upon a time there was a little girl who lived in a village near the forest and every day she",
        "The dog ran to the park with his friend the cat and they played with a big red ball until the sun",
        "In the morning the little girl went to the market to buy some apples for her mother and she saw",
        "He said that the dog was very happy because it was the first sunny day of the year and the birds"]


def test_prompts_that_join_together_are_prefilled_in_one_packed_forward(tiny_loaded):
    expected = _alone(tiny_loaded, LONG, GREEDY)
    packed, alone, restore = _counting_prefill(tiny_loaded.model)
    try:
        got = api.generate_batch(tiny_loaded, prompts=LONG, config=GREEDY, batch_size=4)
    finally:
        restore()
    assert [r.token_ids for r in got] == expected
    lengths = [len(r.prompt_ids) for r in got]
    assert packed == [lengths] and alone == []  # one forward for the four prompts, none alone
    assert all(r.stats.prefill_s > 0 for r in got)


SYSTEM = ("You are a helpful assistant who tells short stories about animals. Keep every story simple, kind and "
          "happy, and end it with a lesson. ")
QUESTIONS = ["Tell me about a fox.", "What did the little dog do?", "a", "Once upon a time the cat",
             "Write about a bird who could not sing, and how its friends helped it to learn"]


def test_a_shared_prefix_is_computed_once_and_the_lines_equal_one_at_a_time(tiny_loaded):
    prompts = [SYSTEM + q for q in QUESTIONS]
    cfg = GenerationConfig(do_sample=False, max_new_tokens=30, ignore_eos=True)
    expected = _alone(tiny_loaded, prompts, cfg)
    tok = tiny_loaded.tokenizer
    ids = [TextStream(tiny_loaded, p, cfg).prompt_ids for p in prompts]
    shared = next(i for i in range(min(map(len, ids))) if len({x[i] for x in ids}) > 1)
    assert shared >= 16 and tok.decode(ids[0][:shared]).startswith("you are")
    packed, alone, restore = _counting_prefill(tiny_loaded.model)
    try:
        got = api.generate_batch(tiny_loaded, prompts=prompts, config=cfg, batch_size=8, share_prefix=True)
    finally:
        restore()
    assert [r.token_ids for r in got] == expected
    # Round one: the first prompt whole; round two: the others' remainders after the copied prefix.
    assert packed == [[len(ids[0])], [len(x) - shared for x in ids[1:]]] and alone == []
    assert sum(map(sum, packed)) == sum(map(len, ids)) - (len(ids) - 1) * shared

    # Two at a time: the later prompts join when the earlier ones have finished, and copy the prefix kept.
    packed, alone, restore = _counting_prefill(tiny_loaded.model)
    try:
        done = {d.index: d.result.token_ids
                for d in run_streams(lambda i: TextStream(tiny_loaded, prompts[i], cfg), len(prompts), max_active=2,
                                      share_prefix=SHARE_PREFIX)}
    finally:
        restore()
    assert [done[i] for i in range(len(prompts))] == expected
    assert packed == [[len(ids[0])], [len(ids[1]) - shared], [len(x) - shared for x in ids[2:4]],
                      [len(ids[4]) - shared]] and alone == []

    # Joining one at a time while another runs: the newcomer copies the prefix from the running prompt.
    short = GenerationConfig(do_sample=False, max_new_tokens=5, ignore_eos=True)
    configs = [cfg, short, short, short, short]
    packed, alone, restore = _counting_prefill(tiny_loaded.model)
    try:
        done = {d.index: d.result.token_ids for d in run_streams(
            lambda i: TextStream(tiny_loaded, prompts[i], configs[i]), len(prompts), max_active=2,
            share_prefix=SHARE_PREFIX)}
    finally:
        restore()
    assert [done[i] for i in range(len(prompts))] == [e[: c.max_new_tokens] for e, c in zip(expected, configs)]
    assert packed == [[len(ids[0])], [len(ids[1]) - shared], [len(ids[2]) - shared], [len(ids[3]) - shared],
                      [len(ids[4]) - shared]] and alone == []

    # Off by default (a line must not depend on its neighbours, even in its last bits): every prompt is
    # prefilled whole, by the engine and by the API.
    packed, alone, restore = _counting_prefill(tiny_loaded.model)
    try:
        list(run_streams(lambda i: TextStream(tiny_loaded, prompts[i], cfg), len(prompts), max_active=8))
        api.generate_batch(tiny_loaded, prompts=prompts, config=cfg, batch_size=8)
    finally:
        restore()
    assert sorted([n for call in packed for n in call] + alone) == sorted(list(map(len, ids)) * 2)


def test_kept_prefixes_count_against_the_memory_budget(tiny_loaded):
    """A kept shared prefix takes memory: when the next streams' caches need its room, it is dropped (the
    prompts then prefill the prefix again) and the lines are unchanged."""
    a, b = SYSTEM + QUESTIONS[0], SYSTEM + QUESTIONS[1]
    prompts = [a, b, a, b]
    cfg = GenerationConfig(do_sample=False, max_new_tokens=6, ignore_eos=True)
    expected = _alone(tiny_loaded, prompts, cfg)
    ids = [TextStream(tiny_loaded, p, cfg).prompt_ids for p in prompts]
    shared = next(i for i in range(min(map(len, ids))) if ids[0][i] != ids[1][i])
    per = cache_bytes_per_position(tiny_loaded.model)
    pair = sum(len(x) + cfg.max_new_tokens - 1 for x in ids[:2]) * per  # the caches of a and b together

    def run_with(budget):
        packed, alone, restore = _counting_prefill(tiny_loaded.model)
        try:
            done = {d.index: d.result.token_ids for d in run_streams(
                lambda i: TextStream(tiny_loaded, prompts[i], cfg), 4, max_active=2, memory_budget=budget,
                share_prefix=SHARE_PREFIX)}
        finally:
            restore()
        assert [done[i] for i in range(4)] == expected and alone == []
        return packed

    # Room for the prefix too: the second pair copies it from the store.
    assert run_with(pair + shared * per) == [[len(ids[0])], [len(ids[1]) - shared],
                                             [len(ids[2]) - shared, len(ids[3]) - shared]]
    # Room for the two caches only: the prefix is dropped, the second pair computes it once again.
    assert run_with(pair + shared * per // 2) == [[len(ids[0])], [len(ids[1]) - shared],
                                                  [len(ids[2])], [len(ids[3]) - shared]]


def test_cli_share_prefix_computes_the_system_prompt_once_and_is_for_prompt_files_only(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("".join(SYSTEM + q + "\n" for q in QUESTIONS), encoding="utf-8")
    args = (*BASE, "--prompts-file", str(f), "--jsonl", "--greedy", "--max-tokens", "10", "--ordered")
    plain, shared = run(*args), run(*args, "--share-prefix")
    assert plain.returncode == shared.returncode == 0, plain.stderr + shared.stderr
    rows = [[json.loads(x) for x in p.stdout.splitlines()] for p in (plain, shared)]
    assert [r["index"] for r in rows[1]] == list(range(len(QUESTIONS)))
    assert [r["token_ids"] for r in rows[1]] == [r["token_ids"] for r in rows[0]]  # greedy ids agree here
    bad = run(*BASE, "-p", "x", "--share-prefix", "--jsonl")
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "Error: --share-prefix is for --prompts-file — add --prompts-file FILE, or leave it out")


def test_an_error_in_a_packed_prefill_stays_with_its_line(tiny_loaded):
    """A prompt the model fails on: the packed call fails, every prompt runs alone, and only that line
    reports the error; the others equal one-at-a-time generation."""
    model = tiny_loaded.model
    bad = TextStream(tiny_loaded, LONG[2], GREEDY).prompt_ids
    calls = []
    real_prefill, real_forward = model.prefill, model.forward

    def poisoned(ids):
        return list(ids.reshape(-1).tolist()) == bad

    def prefill(ids, starts, caches):
        calls.append(len(ids))
        if any(poisoned(t) for t in ids):
            raise RuntimeError("boom: out of memory")
        return real_prefill(ids, starts, caches)

    def forward(ids, start=0, cache=None):
        if poisoned(ids):
            raise RuntimeError("boom: out of memory")
        return real_forward(ids, start, cache)

    model.prefill, model.forward = prefill, forward
    try:
        done = {d.index: d for d in run_streams(lambda i: TextStream(tiny_loaded, LONG[i], GREEDY), 4, max_active=4)}
    finally:
        del model.prefill, model.forward
    assert calls == [4]
    assert done[2].result is None and "boom: out of memory" in str(done[2].error)
    assert [done[i].result.token_ids for i in (0, 1, 3)] == _alone(tiny_loaded, [LONG[i] for i in (0, 1, 3)], GREEDY)
