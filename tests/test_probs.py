"""``top_logprobs`` / ``--show-probs``: the probability of each chosen token and the alternatives after
every sampling stage, checked against the processors run by hand."""

from __future__ import annotations

import io
import json
import math

import torch

from conftest import GREEDY_CASES
from test_cli import BASE, assert_one_line_error, run

from llmbuilder_cli import api
from llmbuilder_cli.cli.probs_view import format_probs_plain, print_probs_table
from llmbuilder_cli.engine.sampling import SamplingContext, apply_processors, build_processors, probabilities
from llmbuilder_cli.types import TokenProbs

CASE = GREEDY_CASES[0]


def test_stages_match_the_processors_run_by_hand(tiny_loaded):
    cfg = dict(max_new_tokens=6, temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.3, seed=11)
    r = api.generate(tiny_loaded, prompt="once upon a time", top_logprobs=4, **cfg)
    plain = api.generate(tiny_loaded, prompt="once upon a time", **cfg)
    assert r.token_ids == plain.token_ids  # watching does not change the result
    assert len(r.token_probs) == len(r.token_ids)
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    seq = list(r.prompt_ids)
    config = api.merge_config(None, **cfg)
    procs = build_processors(config, eos_ids=tok.eos_ids)
    with torch.inference_mode():
        for tp, token in zip(r.token_probs, r.token_ids):
            logits = model.forward(torch.tensor([seq]))[0]
            seen: list[tuple[str, torch.Tensor]] = []
            final = apply_processors(logits, procs, SamplingContext(model.config.vocab_size, model.device, seq),
                                     lambda name, z: seen.append((name, probabilities(z))))
            assert [name for name, _ in tp.stages] == ["raw", "temperature", "repetition_penalty", "top_k", "top_p"]
            for (name, top), (_, probs) in zip(tp.stages, seen):
                expect = torch.topk(probs, 4)
                want = [(int(i), float(v)) for v, i in zip(expect.values, expect.indices) if float(v) > 0]
                assert [(i, round(p, 5)) for i, _, p in top] == [(i, round(p, 5)) for i, p in want], name
            assert math.isclose(tp.prob, float(probabilities(final)[token]), rel_tol=1e-5)
            assert tp.token == tok.decode([token]) and tp.token_id == token
            seq.append(token)


def test_greedy_token_is_the_top_of_the_last_stage(tiny_loaded):
    r = api.generate(tiny_loaded, prompt=CASE["prompt"], max_new_tokens=10, do_sample=False, top_logprobs=2)
    assert r.token_ids == CASE["new_ids"][:10]
    for tp in r.token_probs:
        assert tp.stages[-1][1][0][0] == tp.token_id
        assert tp.logprob <= 0


def test_cli_show_probs_plain_and_json():
    p = run(*BASE, "-p", CASE["prompt"], "--greedy", "--max-tokens", "3", "--show-probs", "--top-logprobs", "2", "-q")
    assert p.returncode == 0, p.stderr
    assert p.stdout == CASE["text"][: len(p.stdout) - 1] + "\n"  # stdout unchanged: text only
    lines = p.stderr.splitlines()
    assert lines[0].startswith('#0 "') and " p=" in lines[0]
    assert lines[1].startswith("   raw") and lines[2].startswith("   temperature")
    assert sum(line.startswith("#") for line in lines) == 3
    d = json.loads(run(*BASE, "-p", CASE["prompt"], "--greedy", "--max-tokens", "3", "--top-logprobs", "2",
                       "--json", "-q").stdout)
    assert [t["token_id"] for t in d["token_probs"]] == d["token_ids"] == CASE["new_ids"][:3]
    assert [s["stage"] for s in d["token_probs"][0]["stages"]] == ["raw", "temperature"]
    assert len(d["token_probs"][0]["stages"][0]["top"]) == 2
    no = json.loads(run(*BASE, "-p", CASE["prompt"], "--greedy", "--max-tokens", "3", "--json", "-q").stdout)
    assert "token_probs" not in no


def test_probs_flag_errors():
    assert_one_line_error(run(*BASE, "-p", "x", "--top-logprobs", "0"), 2, "--top-logprobs")
    assert_one_line_error(run(*BASE, "-i", "--show-probs"), 2, "one-shot")


def test_renderings_escape_tokens():
    tp = TokenProbs(token_id=5, token="\n", prob=0.5, stages=[("raw", [(5, "\n", 0.5), (6, " a", 0.25)])])
    assert format_probs_plain([tp]) == '#0 "\\n" p=0.5000\n   raw  "\\n" 0.5000  " a" 0.2500'
    out = io.StringIO()
    print_probs_table([tp], out)
    text = out.getvalue()
    assert "How each token was chosen" in text and '"\\n"' in text and "0.2500" in text
