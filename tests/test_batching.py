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
from llmbuilder_cli.engine.batching import cache_bytes_per_position, run_streams
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
