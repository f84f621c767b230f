"""Property-based fuzzing (hypothesis) of the sampling processors and of the command line.

Two halves, each a handful of ``@given`` properties run with fixed settings (``derandomize=True``, no
example database) so that CI tries the same cases on every run:

  1. Processors. Random valid `GenerationConfig`s (the whole valid range, edge values included), random
     logits vectors (ordinary, tied, ±inf, NaN, huge, subnormal, a single finite value, all -inf) and random
     earlier tokens go through the processors exactly as generation runs them: `build_processors`,
     `apply_processors`, `probabilities`, `select` with a seeded `torch.Generator`. Properties: no exception
     but a `GenerationError`, and that one only when no token can sensibly be chosen; every stage's
     probabilities are a distribution (finite, >= 0, sum 1); the chosen token is allowed and has non-zero
     probability; greedy takes the first argmax; top-k keeps every token tied with the k-th; top-p keeps the
     smallest most-likely prefix whose mass passes p; the same seed picks the same token.
  2. The command line, in process (fast): ``llmbuilder generate text`` with random options from its real
     set, values at and beyond their bounds, unknown and repeated options, random stdin; ``llmbuilder
     config set`` with random keys and values in a temporary settings directory. Properties: a documented
     exit code, never a traceback or an "unexpected ... bug" line, exactly one ``Error:`` line and nothing
     on stdout when it fails, and a settings file that still parses. Absurd ``--threads`` counts run in a
     subprocess (a crash there would take the test run down).

Every property counts the examples it ran and checks that count against its minimum, so the number of
cases tried in CI is part of the test (at least 500 in all: see ``MIN_EXAMPLES``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import tomlkit
import torch
from conftest import BEST_CKPT, FIXTURE, MODEL_PT, TOKENIZER_DIR, cli_cmd, cli_env
from test_sampling import top_p_full_sort
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llmbuilder_cli.config import MIN_TEMPERATURE, GenerationConfig
from llmbuilder_cli.engine.generate import TokenGenerator
from llmbuilder_cli.engine.sampling import (
    SamplingContext,
    TopK,
    TopP,
    apply_processors,
    build_processors,
    probabilities,
    select,
)
from llmbuilder_cli.errors import ConfigError, GenerationError

INF = float("inf")
NAN = float("nan")
F32_MAX = float(torch.finfo(torch.float32).max)  # 3.4028e38
F32_TINY = float(torch.finfo(torch.float32).tiny)  # smallest normal float32, 1.1755e-38
HUGE = float(torch.tensor(1e30, dtype=torch.float32))  # 1e30 as a float32
V_MAX = 40  # vocabulary sizes 1..V_MAX: small enough for ties and for speed

#: Examples each property must have run (the sums: processors 1,450, command line 350).
MIN_EXAMPLES = {
    "processors_ordinary": 300,
    "processors_extreme_config": 150,
    "processors_hostile_logits": 300,
    "top_k": 100,
    "top_p": 100,
    "top_p_full_sort": 200,
    "select_multinomial": 200,
    "token_generator": 100,
    "cli_generate": 250,
    "cli_config_set": 100,
}
RAN: Counter[str] = Counter()


def fuzz_settings(n: int):
    """Reproducible hypothesis settings: the same n cases on every run, no database, no time limit."""
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def check_count(name: str) -> None:
    print(f"{name}: {RAN[name]} examples")
    assert RAN[name] >= MIN_EXAMPLES[name], (name, RAN[name])


# ============================================================================================ 1. processors

# ------------------------------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class Case:
    """One sampling step: the raw logits (V,), the config and the state the processors read."""

    raw: tuple[float, ...]
    config: GenerationConfig | None  # None: GenerationConfig refused the values (nothing to run)
    prev: tuple[int, ...]  # ids already in the sequence (repetition penalty)
    eos_ids: tuple[int, ...]
    vocab_limit: int | None  # ids >= it are banned (model rows beyond the tokenizer)
    new_tokens: int  # tokens generated so far (min_new_tokens)
    seed: int

    @property
    def V(self) -> int:
        return len(self.raw)


ordinary_logit = st.floats(-40.0, 40.0, width=32)
SPECIAL_LOGITS = [INF, -INF, NAN, F32_MAX, -F32_MAX, 1e30, -1e30, 1e-45, -1e-45, 1e-40, F32_TINY, 0.0, -0.0]


@st.composite
def ordinary_logits(draw) -> list[float]:
    """Finite logits of a realistic size: random, heavily tied, or all equal."""
    V = draw(st.integers(1, V_MAX))
    kind = draw(st.sampled_from(["random", "ties", "all_equal"]))
    if kind == "random":
        return draw(st.lists(ordinary_logit, min_size=V, max_size=V))
    if kind == "ties":
        pool = draw(st.lists(ordinary_logit, min_size=1, max_size=3))
        return draw(st.lists(st.sampled_from(pool), min_size=V, max_size=V))
    return [draw(ordinary_logit)] * V


@st.composite
def hostile_logits(draw) -> list[float]:
    """Logits a broken or overflowing model could produce: inf, NaN, huge, subnormal, nothing finite."""
    V = draw(st.integers(1, V_MAX))
    kind = draw(
        st.sampled_from(["mixed", "any_float32", "single_finite", "all_neg_inf", "all_nan", "huge", "subnormal", "pos_inf"])
    )
    if kind == "mixed":  # ordinary values with special ones sprinkled in
        return draw(st.lists(st.one_of(ordinary_logit, st.sampled_from(SPECIAL_LOGITS)), min_size=V, max_size=V))
    if kind == "any_float32":
        return draw(st.lists(st.floats(width=32), min_size=V, max_size=V))
    if kind == "single_finite":
        values = [-INF] * V
        values[draw(st.integers(0, V - 1))] = draw(st.floats(width=32, allow_nan=False, allow_infinity=False))
        return values
    if kind == "all_neg_inf":
        return [-INF] * V
    if kind == "all_nan":
        return [NAN] * V
    if kind == "huge":
        big = st.one_of(st.floats(HUGE, F32_MAX, width=32), st.floats(-F32_MAX, -HUGE, width=32))
        return draw(st.lists(st.one_of(big, st.sampled_from([F32_MAX, -F32_MAX])), min_size=V, max_size=V))
    if kind == "subnormal":
        sub = st.floats(-F32_TINY, F32_TINY, width=32)
        return draw(st.lists(sub, min_size=V, max_size=V))
    values = draw(st.lists(ordinary_logit, min_size=V, max_size=V))  # pos_inf: one or more +inf among them
    for i in draw(st.lists(st.integers(0, V - 1), min_size=1, max_size=3)):
        values[i] = INF
    return values


ORDINARY_TEMPERATURE = st.one_of(
    st.sampled_from([0.0, MIN_TEMPERATURE, 0.3, 0.8, 1.0, 1.5, 2.0, 1e3, 1e6]),
    st.floats(MIN_TEMPERATURE, 100.0),
)
ORDINARY_PENALTY = st.one_of(st.sampled_from([1.0, 1.1, 1.3, 0.5, 1e-3, 1e3]), st.floats(1e-3, 1e3))
#: Valid per GenerationConfig, but outside what float32 (the dtype sampling runs in) can represent.
EXTREME_TEMPERATURES = [3.5e38, 1e39, 1e100, 1e300, 1.7976931348623157e308]
EXTREME_PENALTIES = [5e-324, 1e-320, 1e-45, 1e-40, 3.5e38, 1e39, 1e300]


def lenient(**values) -> GenerationConfig | None:
    """``GenerationConfig(**values)``, or None when it refuses them."""
    try:
        return GenerationConfig(**values)
    except ConfigError:
        return None


@st.composite
def configs(draw, V: int, extreme: bool) -> GenerationConfig | None:
    """Valid settings over their whole range; None where GenerationConfig refuses the drawn values (a
    stricter validation is an acceptable answer to an extreme value: then there is nothing to run)."""
    max_new = draw(st.integers(1, 50))
    if extreme:  # at least one of temperature / repetition penalty past float32's range
        which = draw(st.sampled_from(["temperature", "penalty", "both"]))
        temperature = draw(st.sampled_from(EXTREME_TEMPERATURES) if which != "penalty" else ORDINARY_TEMPERATURE)
        penalty = draw(st.sampled_from(EXTREME_PENALTIES) if which != "temperature" else ORDINARY_PENALTY)
    else:
        temperature = draw(ORDINARY_TEMPERATURE)
        penalty = draw(ORDINARY_PENALTY)
    return lenient(
        max_new_tokens=max_new,
        min_new_tokens=draw(st.integers(0, max_new)),
        temperature=temperature,
        top_k=draw(st.one_of(st.none(), st.sampled_from([0, 1, V, V + 1, 10**9]), st.integers(0, 2 * V))),
        top_p=draw(
            st.one_of(
                st.none(),
                st.sampled_from([1.0, 5e-324, 1e-30, 1e-7, 0.5, 0.9, 0.9999999]),
                st.floats(0.0, 1.0, exclude_min=True),
            )
        ),
        repetition_penalty=penalty,
        do_sample=draw(st.booleans()),
        ignore_eos=draw(st.booleans()),
        seed=draw(st.integers(0, 2**63 - 1)),
    )


@st.composite
def cases(draw, logits, extreme: bool = False, ensure_allowed: bool = True) -> Case:
    """A sampling step; with ``ensure_allowed`` at least one token may be chosen (else see the hostile test)."""
    raw = draw(logits)
    V = len(raw)
    config = draw(configs(V, extreme))
    ids = st.integers(0, V - 1)
    max_new = config.max_new_tokens if config is not None else 1
    case = Case(
        raw=tuple(raw),
        config=config,
        prev=tuple(draw(st.lists(ids, max_size=12))),
        eos_ids=tuple(draw(st.lists(ids, max_size=3, unique=True))),
        vocab_limit=draw(st.one_of(st.none(), st.integers(1, V))),
        new_tokens=draw(st.integers(0, max_new)),
        seed=draw(st.integers(0, 2**63 - 1)),
    )
    if ensure_allowed and config is not None and not allowed_ids(case):  # every id below the limit is a blocked EOS: unblock them
        case = dataclasses.replace(case, eos_ids=())
    return case


# ------------------------------------------------------------------------------------------ the pipeline


@dataclass
class Outcome:
    names: list[str]  # processor names, in order
    stages: list[tuple[str, torch.Tensor]]  # ("raw", logits) then each processor's output
    logits: torch.Tensor  # (V,) processed
    probs: torch.Tensor  # (V,) probabilities(processed)
    token: int


def run_step(case: Case) -> Outcome:
    """One token, exactly as TokenGenerator._pick runs it (with the --show-probs observer)."""
    with torch.inference_mode():
        logits = torch.tensor(case.raw, dtype=torch.float32)  # (V,)
        ctx = SamplingContext(case.V, "cpu", case.prev)
        ctx.new_tokens = case.new_tokens
        procs = build_processors(case.config, eos_ids=case.eos_ids, vocab_limit=case.vocab_limit)
        stages: list[tuple[str, torch.Tensor]] = []
        out = apply_processors(logits, procs, ctx, lambda name, z: stages.append((name, z.clone())))
        probs = probabilities(out)
        token = select(out, case.config.greedy, torch.Generator().manual_seed(case.seed))
    return Outcome([p.name for p in procs], stages, out, probs, token)


def allowed_ids(case: Case) -> list[int]:
    """Tokens that may be chosen: a real (not NaN, not -inf) raw logit, inside the vocabulary limit, and not
    an EOS id while min_new_tokens blocks it."""
    cfg = case.config
    blocked = set()
    if case.eos_ids and cfg.min_new_tokens > 0 and not cfg.ignore_eos and case.new_tokens < cfg.min_new_tokens:
        blocked = set(case.eos_ids)
    limit = case.V if case.vocab_limit is None else case.vocab_limit
    return [i for i, z in enumerate(case.raw) if not math.isnan(z) and z != -INF and i < limit and i not in blocked]


def error_tolerated(case: Case) -> bool:
    """When a GenerationError (a clear message instead of a token) is an acceptable answer: the model's
    scores are broken (NaN, +inf), no token may be chosen at all, or float32 overflows (huge logits, or a
    temperature / penalty beyond float32's range)."""
    allowed = allowed_ids(case)
    if not allowed or any(math.isnan(z) or z == INF for z in case.raw):
        return True
    if any(abs(case.raw[i]) >= 1e30 for i in allowed):
        return True
    cfg = case.config
    return not (cfg.temperature == 0.0 or MIN_TEMPERATURE <= cfg.temperature <= 1e30) or not (
        1e-30 <= cfg.repetition_penalty <= 1e30
    )


def assert_distribution(p: torch.Tensor, what: str) -> None:
    p64 = p.double()
    assert bool(torch.isfinite(p64).all()), f"{what}: probabilities are not all finite: {p.tolist()}"
    assert bool((p64 >= 0).all()), f"{what}: negative probabilities: {p.tolist()}"
    assert abs(float(p64.sum()) - 1.0) <= 1e-5, f"{what}: probabilities sum to {float(p64.sum())}"


def assert_top_k(k: int, before: torch.Tensor, after: torch.Tensor) -> None:
    """Top-k keeps every token whose logit reaches the k-th largest (so at least min(k, available)),
    unchanged, and removes (sets to -inf) the others."""
    if bool(torch.isnan(before).any()):
        return
    available = int((before > -INF).sum())
    kept = after > -INF
    assert int(kept.sum()) >= min(k, available), (k, before.tolist(), after.tolist())
    kth = torch.sort(before, descending=True).values[min(k, before.numel()) - 1]
    assert torch.equal(kept, before >= kth) or kth == -INF, (k, before.tolist(), after.tolist())
    assert torch.equal(after[kept], before[kept])


def assert_top_p(p: float, before: torch.Tensor, after: torch.Tensor) -> None:
    """Top-p keeps the smallest most-likely prefix whose probability mass passes p (llmbuilder's rule:
    a token stays iff the mass strictly before it is <= p), unchanged; the most likely token always stays."""
    if not bool(torch.isfinite(before).any()) or bool(torch.isnan(before).any()) or bool((before == INF).any()):
        return  # no meaningful distribution to cut (checked as a distribution elsewhere)
    probs = torch.softmax(before.double(), dim=-1)  # (V,)
    kept = after > -INF
    real = before > -INF
    assert bool(kept.any()), (p, before.tolist())
    assert torch.equal(after[kept], before[kept])
    mass = float(probs[kept].sum())
    smallest = float(probs[kept].min())
    assert mass >= p - 1e-5, ("kept mass below p", p, mass, before.tolist(), after.tolist())
    assert mass - smallest <= p + 1e-5, ("kept more than the smallest prefix", p, mass, smallest, before.tolist())
    dropped = real & ~kept
    if bool(dropped.any()):
        assert smallest >= float(probs[dropped].max()) - 1e-7, ("not a most-likely prefix", p, before.tolist())


def check_step(case: Case) -> None:
    """The processor properties for one sampling step (see the module docstring)."""
    if case.config is None:
        return  # the settings were refused up front, with a message: nothing can go wrong later
    allowed = allowed_ids(case)
    has_nan = any(math.isnan(z) for z in case.raw)
    try:
        outcome = run_step(case)
    except GenerationError as exc:
        assert error_tolerated(case), f"GenerationError for an ordinary case: {exc}"
        assert str(exc).strip() and "\n" not in str(exc)
        with pytest.raises(GenerationError):  # deterministic
            run_step(case)
        return
    V = case.V
    token = outcome.token
    assert 0 <= token < V, token
    assert_distribution(outcome.probs, "final probabilities")
    assert float(outcome.probs[token]) > 0.0, ("the chosen token has probability 0", token, outcome.probs.tolist())
    if has_nan:  # a model that produced NaN: at least never pick the NaN entry
        assert not math.isnan(case.raw[token]), ("a NaN logit was chosen", token, case.raw)
    elif allowed:
        assert token in allowed, ("a banned token was chosen", token, allowed, outcome.logits.tolist())
        before = outcome.stages[0][1]
        for name, z in outcome.stages:
            assert_distribution(probabilities(z), f"probabilities after stage {name!r}")
            if name == "top_k":
                assert_top_k(case.config.top_k, before, z)
            elif name == "top_p":
                assert_top_p(case.config.top_p, before, z)
            before = z
        if case.config.greedy:
            best = outcome.logits.max()
            assert outcome.logits[token] == best, (token, outcome.logits.tolist())
            assert token == int((outcome.logits == best).nonzero()[0]), "greedy takes the first of equal maxima"
    again = run_step(case)  # the same seed picks the same token
    assert again.token == token, (token, again.token)


# ------------------------------------------------------------------------------------- processor properties


# The @example cases below are minimal reproducers of what fuzzing found; they always run first.


@fuzz_settings(MIN_EXAMPLES["processors_ordinary"])
@given(cases(ordinary_logits()))
def _ordinary(case: Case) -> None:
    check_step(case)
    RAN["processors_ordinary"] += 1


def test_processors_on_ordinary_logits_and_configs():
    """Realistic logits (ties included) under the whole ordinary range of every setting."""
    _ordinary()
    check_count("processors_ordinary")


@fuzz_settings(MIN_EXAMPLES["processors_extreme_config"])
@example(Case((1.0, 2.0, 3.0), lenient(temperature=1e39), (), (), 2, 0, 0))
@example(Case((0.0, 1.0), lenient(repetition_penalty=1e-320), (0,), (), None, 0, 0))
@given(cases(ordinary_logits(), extreme=True))
def _extreme_config(case: Case) -> None:
    check_step(case)
    RAN["processors_extreme_config"] += 1


def test_processors_with_temperature_or_penalty_beyond_float32():
    """Valid settings whose value float32 cannot hold (temperature 1e39, penalty 1e-320): the scalar
    becomes inf or 0 inside the float32 processors."""
    _extreme_config()
    check_count("processors_extreme_config")


@fuzz_settings(MIN_EXAMPLES["processors_hostile_logits"])
@example(Case((1.0, INF, 3.0), GenerationConfig(), (), (), None, 0, 0))  # +inf logit
@example(Case((NAN, 1.0), GenerationConfig(do_sample=False), (), (), None, 0, 0))  # NaN logit, greedy
@example(Case((-INF, -INF), GenerationConfig(), (), (), None, 0, 0))  # nothing finite
@example(Case((-INF, 5.0), GenerationConfig(min_new_tokens=1), (), (1,), None, 0, 0))  # only EOS, blocked
@given(cases(hostile_logits(), ensure_allowed=False))
def _hostile(case: Case) -> None:
    check_step(case)
    RAN["processors_hostile_logits"] += 1


def test_processors_on_hostile_logits():
    """inf / NaN / huge / subnormal / all -inf logits: a valid distribution and an allowed token, or a
    clear GenerationError when nothing sensible can be chosen; never a crash or a garbage token."""
    _hostile()
    check_count("processors_hostile_logits")


any_logits = st.one_of(ordinary_logits(), hostile_logits())


@fuzz_settings(MIN_EXAMPLES["top_k"])
@given(any_logits, st.integers(1, 2 * V_MAX + 2))
def _top_k(raw: list[float], k: int) -> None:
    z = torch.tensor(raw, dtype=torch.float32)
    ctx = SamplingContext(len(raw), "cpu")
    assert_top_k(k, z, TopK(k)(z, ctx))
    RAN["top_k"] += 1


def test_top_k_keeps_ties_and_at_least_k():
    _top_k()
    check_count("top_k")


@fuzz_settings(MIN_EXAMPLES["top_p"])
@given(any_logits, st.one_of(st.sampled_from([5e-324, 1e-30, 1e-7, 0.5, 0.9999999]), st.floats(0, 1, exclude_min=True, exclude_max=True)))
def _top_p(raw: list[float], p: float) -> None:
    z = torch.tensor(raw, dtype=torch.float32)
    ctx = SamplingContext(len(raw), "cpu")
    assert_top_p(p, z, TopP(p)(z, ctx))
    RAN["top_p"] += 1


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    _top_p()
    check_count("top_p")


@fuzz_settings(MIN_EXAMPLES["top_p_full_sort"])
@given(
    any_logits,
    st.one_of(st.sampled_from([5e-324, 1e-30, 1e-7, 0.5, 0.9999999]), st.floats(0, 1, exclude_min=True, exclude_max=True)),
    st.one_of(st.none(), st.integers(1, V_MAX + 1)),  # top-k first (None: top-p alone)
)
def _top_p_full_sort(raw: list[float], p: float, k: int | None) -> None:
    z = torch.tensor(raw, dtype=torch.float32)  # (V,)
    ctx = SamplingContext(len(raw), "cpu")
    if k is not None:
        z = TopK(k)(z, ctx)
    # bit for bit (as int32: NaN and the sign of 0 included)
    assert torch.equal(TopP(p)(z, ctx).view(torch.int32), top_p_full_sort(z, p).view(torch.int32)), (raw, p, k)
    RAN["top_p_full_sort"] += 1


def test_top_p_equals_the_full_sort_bit_for_bit():
    _top_p_full_sort()
    check_count("top_p_full_sort")


@fuzz_settings(MIN_EXAMPLES["select_multinomial"])
@given(any_logits, st.integers(0, 2**63 - 1))
def _select_multinomial(raw: list[float], seed: int) -> None:
    z = torch.tensor(raw, dtype=torch.float32)  # (V,)
    g_ours, g_torch = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    try:
        probs = probabilities(z)
    except GenerationError:
        with pytest.raises(GenerationError):
            select(z, False, g_ours)
    else:
        for _ in range(3):  # the same token as torch.multinomial, and the generator left in the same state
            assert select(z, False, g_ours) == int(torch.multinomial(probs, 1, generator=g_torch)), raw
            assert torch.equal(g_ours.get_state(), g_torch.get_state())
    RAN["select_multinomial"] += 1


def test_sampling_equals_torch_multinomial():
    _select_multinomial()
    check_count("select_multinomial")


class ScriptedModel:
    """A stand-in model for TokenGenerator: ``forward`` returns the next of the scripted logits rows."""

    def __init__(self, rows: Sequence[Sequence[float]], block_size: int) -> None:
        self.rows = [torch.tensor(r, dtype=torch.float32) for r in rows]  # each (V,)
        self.config = SimpleNamespace(vocab_size=len(rows[0]), block_size=block_size, num_parameters=0)
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.architecture = "scripted"
        self.calls = 0

    def new_cache(self, max_len: int, batch: int = 1):
        return SimpleNamespace(max_len=max_len)

    def forward(self, ids: torch.Tensor, start: int = 0, cache=None) -> torch.Tensor:
        row = self.rows[min(self.calls, len(self.rows) - 1)]
        self.calls += 1
        return row.unsqueeze(0)  # (1, V)


@st.composite
def generator_runs(draw):
    V = draw(st.integers(1, V_MAX))
    rows = draw(st.lists(st.lists(ordinary_logit, min_size=V, max_size=V), min_size=1, max_size=6))
    cfg = (draw(configs(V, extreme=False)) or GenerationConfig()).replace(
        max_new_tokens=draw(st.integers(1, 6)), min_new_tokens=0
    )
    cfg = cfg.replace(min_new_tokens=draw(st.integers(0, cfg.max_new_tokens)))
    prompt = draw(st.lists(st.integers(0, V - 1), min_size=1, max_size=8))
    return rows, cfg, prompt, draw(st.lists(st.integers(0, V - 1), max_size=2, unique=True)), draw(
        st.one_of(st.none(), st.integers(1, V))
    ), draw(st.integers(1, 12)), draw(st.integers(0, 6))


@fuzz_settings(MIN_EXAMPLES["token_generator"])
@given(generator_runs(), st.integers(0, 2**63 - 1))
def _token_generator(run, seed: int) -> None:
    rows, cfg, prompt, eos_ids, vocab_limit, block_size, trace_top = run

    def generate() -> tuple[list[int], list]:
        gen = TokenGenerator(
            ScriptedModel(rows, block_size), prompt, cfg, eos_ids=eos_ids, vocab_limit=vocab_limit,
            generator=torch.Generator().manual_seed(seed), trace_top=trace_top,
        )
        tokens, traces = [], []
        for tok in gen:
            tokens.append(tok)
            traces.append(gen.last_trace)
        return tokens, traces

    V = len(rows[0])
    limit = V if vocab_limit is None else vocab_limit
    try:
        tokens, traces = generate()
    except GenerationError as exc:
        # Only legitimate when min_new_tokens blocks EOS and EOS is every token the vocabulary allows:
        # no token can be given, and the engine says so instead of breaking its own rule.
        assert "every token was ruled out" in str(exc), exc
        assert cfg.min_new_tokens > 0 and not cfg.ignore_eos and set(range(limit)) <= set(eos_ids), exc
        RAN["token_generator"] += 1
        return
    assert 1 <= len(tokens) <= cfg.max_new_tokens
    for i, tok in enumerate(tokens):
        assert 0 <= tok < limit, (tok, limit)
        if tok in eos_ids and not cfg.ignore_eos:
            assert i >= cfg.min_new_tokens and i == len(tokens) - 1, (i, tokens, cfg.min_new_tokens)
    if trace_top:
        for prob, stages in traces:
            assert math.isfinite(prob) and 0.0 < prob <= 1.0 + 1e-6, prob
            for _name, kept in stages:
                assert all(math.isfinite(q) and 0.0 < q <= 1.0 + 1e-6 for _i, q in kept), stages
    assert generate()[0] == tokens  # the same seed gives the same tokens
    RAN["token_generator"] += 1


def test_token_generator_over_scripted_logits():
    """The real TokenGenerator (prefill, sliding window, --show-probs trace, EOS rules) over a scripted model."""
    _token_generator()
    check_count("token_generator")


# ========================================================================================= 2. command line

DOCUMENTED_CODES = {0, 1, 2, 3, 130}
BUG_LINE = re.compile(r"^Error: unexpected .*this is a bug", re.MULTILINE)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(argv: list[str], stdin: bytes = b"") -> CliResult:
    """``llmbuilder <argv>`` in this process with stdin/stdout/stderr replaced by pipes-like buffers (UTF-8,
    strict on stdout as Python's own stdout is under a UTF-8 locale). Restores torch's thread count."""
    from llmbuilder_cli.cli.app import main

    out_b, err_b = io.BytesIO(), io.BytesIO()
    new_in = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    new_out = io.TextIOWrapper(out_b, encoding="utf-8", errors="strict", write_through=True)
    new_err = io.TextIOWrapper(err_b, encoding="utf-8", errors="backslashreplace", write_through=True)
    saved = sys.stdin, sys.stdout, sys.stderr
    threads = torch.get_num_threads()
    sys.stdin, sys.stdout, sys.stderr = new_in, new_out, new_err
    try:
        code = main(argv)
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
        torch.set_num_threads(threads)
    for s in (new_out, new_err):
        try:
            s.flush()
        except ValueError:
            pass
    return CliResult(code, out_b.getvalue().decode("utf-8", "replace"), err_b.getvalue().decode("utf-8", "replace"))


def assert_clean_exit(r: CliResult, argv: list[str], codes: set[int] = DOCUMENTED_CODES) -> None:
    context = f"argv={argv!r}\nexit={r.code}\nstdout={r.out[-400:]!r}\nstderr={r.err[-1500:]!r}"
    assert r.code in codes, "undocumented exit code\n" + context
    assert "Traceback" not in r.err, "traceback on stderr\n" + context
    assert not BUG_LINE.search(r.err), "unexpected error (a bug)\n" + context
    if r.code != 0:
        errors = [line for line in r.err.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, "a failure prints exactly one 'Error: ' line\n" + context
        assert r.out == "", "nothing on stdout when it fails\n" + context


# --------------------------------------------------------------------------------------- value strategies

SURROGATES = ["\udcff", "\udc80", "\udcc3"]  # invalid UTF-8 bytes in argv arrive as these (surrogateescape)
TEXT = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20),
    st.text(st.sampled_from(list("ab -=_/.\t\n") + ["é", "中", "\u202e", "\U0001f600", "\ufeff"]), max_size=12),
    st.text(st.sampled_from(list("ab ") + SURROGATES), min_size=1, max_size=6),
    st.sampled_from(["", " ", "\n", "-", "--", "a" * 3000]),
)
FLOAT_TEXT = st.one_of(
    st.sampled_from(
        ["0", "-0", "0.0", "1e-5", "9.99e-6", "1e-6", "-1", "1", "1.0000001", "2", "0.5", "1e39", "1e308", "1e309",
         "nan", "NaN", "inf", "-inf", "Infinity", "", " ", "abc", "1e-320", "5e-324", "0x10", " 0.5 ", "1_000",
         "1,5", "٣", "+1", ".", "1e", "--1"]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(-3, 3).map(lambda x: f"{x:g}"),
)
INT_TEXT = st.one_of(
    st.sampled_from(
        ["0", "1", "-1", "2", "5", "50", "100", "101", str(2**63 - 1), str(2**63), str(2**64), "1e3", "1.5", "",
         " 3", "abc", "0x10", "٣", "+2", "007", "nan"]
    ),
    st.integers(-(10**20), 10**20).map(str),
)
MAX_TOKENS_TEXT = st.sampled_from(["1", "2", "3", "4", "5", "0", "-1", "-5", "", "x", "1.0", "nan", " 5", "+3", "05"])


def path_values(*good: str, extra: Sequence[str] = ()) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([*good, *extra, "missing/nowhere.pt", "", "."]), TEXT)


@dataclass(frozen=True)
class Files:
    """Files the generate fuzzing can point at (made once in a temporary directory)."""

    prompts_plain: str
    prompts_json: str
    prompts_bad: str
    template_ok: str
    template_bad: str
    text_file: str


def valued_options(files: Files) -> dict[str, st.SearchStrategy[str]]:
    """Every value-taking option of ``generate text`` → the values to try."""
    model = path_values(str(MODEL_PT), str(BEST_CKPT), str(FIXTURE), "demo", extra=[files.text_file, str(TOKENIZER_DIR)])
    tokenizer = path_values(str(TOKENIZER_DIR), extra=[str(MODEL_PT), files.text_file, str(TOKENIZER_DIR / "tokenizer.model")])
    return {
        "--model": model,
        "-m": model,
        "--tokenizer": tokenizer,
        "-t": tokenizer,
        "--device": st.one_of(
            st.sampled_from(["cpu", "auto", "CPU", "cuda", "cuda:0", "cuda:-1", "cuda:x", "mps", "tpu", "", "gpu"]), TEXT
        ),
        "--dtype": st.one_of(
            st.sampled_from(["auto", "float32", "bfloat16", "float16", "FLOAT32", "fp16", "int8", ""]), TEXT
        ),
        "--profile": st.one_of(st.sampled_from(["work", "default", "nope", "", "../x", "a" * 65, "-P"]), TEXT),
        "--num-heads": INT_TEXT,
        "--threads": st.sampled_from(["1", "2", "0", "-1", "auto", "x", "", "1.5", str(2**31), str(10**20)]),  # 10**5: see below
        "--prompt": TEXT,
        "-p": TEXT,
        "--temperature": FLOAT_TEXT,
        "--top-k": INT_TEXT,
        "--top-p": FLOAT_TEXT,
        "--repetition-penalty": FLOAT_TEXT,
        "--seed": INT_TEXT,
        "--max-tokens": MAX_TOKENS_TEXT,
        "--min-tokens": st.one_of(MAX_TOKENS_TEXT, INT_TEXT),
        "--stop": TEXT,
        "--top-logprobs": INT_TEXT,
        "--prompts-file": st.one_of(
            st.sampled_from(["-", files.prompts_plain, files.prompts_json, files.prompts_bad, files.text_file,
                             str(FIXTURE), "missing.txt", ""]),
            TEXT,
        ),
        "--system": TEXT,
        "--chat-template": st.one_of(
            st.sampled_from(["auto", "none", "", files.template_ok, files.template_bad, "missing.jinja", "AUTO"]), TEXT
        ),
    }


def valid_values(files: Files) -> dict[str, st.SearchStrategy[str]]:
    """Values each option accepts, so that many examples get past validation and really generate."""
    def num(lo: float, hi: float) -> st.SearchStrategy[str]:
        return st.floats(lo, hi).map(lambda x: f"{x:.3g}")

    return {
        "--model": st.sampled_from([str(MODEL_PT), str(BEST_CKPT), str(FIXTURE)]),
        "--tokenizer": st.just(str(TOKENIZER_DIR)),
        "--device": st.sampled_from(["cpu", "auto"]),
        "--dtype": st.sampled_from(["auto", "float32", "bfloat16", "float16"]),
        "--profile": st.sampled_from(["work", "default"]),
        "--num-heads": st.sampled_from(["1", "2", "4"]),
        "--threads": st.sampled_from(["1", "2"]),
        "--prompt": TEXT,
        "--temperature": st.one_of(st.just("0"), num(1e-5, 3.0)),
        "--top-k": st.integers(0, 80).map(str),
        "--top-p": num(1e-6, 1.0),
        "--repetition-penalty": num(0.01, 5.0),
        "--seed": st.integers(0, 2**63 - 1).map(str),
        "--max-tokens": st.integers(1, 5).map(str),
        "--min-tokens": st.integers(0, 3).map(str),
        "--stop": TEXT,
        "--top-logprobs": st.integers(1, 100).map(str),
        "--prompts-file": st.sampled_from(["-", files.prompts_plain, files.prompts_json]),
        "--system": TEXT,
        "--chat-template": st.sampled_from(["auto", "none", files.template_ok]),
    }


FLAGS = ["--echo", "--no-echo", "--plain", "--quiet", "-q", "--greedy", "--sample", "--ignore-eos", "--show-probs",
         "--json", "--jsonl", "--interactive", "-i", "--chat", "--setup", "--help"]
UNKNOWN = ["--bogus", "-z", "--temp", "--max_tokens", "--top-k=", "extra", "--", "-", "--no-plain", "--json=1",
           "--greedy=yes", "-pp", "---prompt", "--TEMPERATURE"]
STDIN = st.one_of(
    st.sampled_from(
        [b"", b"hello", b"hello\nworld\n", b"\n", b"   \n", b"/help\n", b"/set temperature nan\nhi\n",
         b"/set max_tokens 3\nhi\n", b"/params\n/quit\n", b"/set top_k -1\n/reset\nhi\n", b"\xff\xfe bad\n",
         b"ok\n\xc3(\n", b"a\x00b\n", b"\r\n", b"x" * 2000]
    ),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30).map(
        lambda s: s.encode("utf-8")
    ),
)


@st.composite
def generate_argv(draw, files: Files) -> tuple[list[str], bytes]:
    options = valued_options(files)
    valid = valid_values(files)
    argv = ["generate", "text", "-m", str(MODEL_PT), "-t", str(TOKENIZER_DIR)]
    hostility = draw(st.sampled_from([0.0, 0.2, 0.5, 1.0]))  # share of values drawn from the hostile table
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["valued", "valued", "valued", "flag", "flag"] + ["unknown"] * (hostility > 0)))
        if kind == "valued":
            name = draw(st.sampled_from(sorted(options)))
            long_name = {"-m": "--model", "-t": "--tokenizer", "-p": "--prompt"}.get(name, name)
            hostile = draw(st.floats(0, 1)) < hostility
            value = draw(options[name] if hostile else valid[long_name])
            if name.startswith("--") and draw(st.booleans()):
                argv.append(f"{name}={value}")
            else:
                argv += [name, value]
            if not hostile and long_name in ("--system", "--chat-template"):
                argv.append(draw(st.sampled_from(["--chat", "--interactive"])))  # what they need
            elif not hostile and long_name == "--prompts-file":
                argv.append("--jsonl")
        elif kind == "flag":
            argv.append(draw(st.sampled_from(FLAGS)))
        else:
            argv.append(draw(st.sampled_from(UNKNOWN)))
    if not any(a == "--max-tokens" or a.startswith("--max-tokens=") for a in argv):
        argv += ["--max-tokens", str(draw(st.integers(1, 5)))]  # keep each example fast
    return argv, draw(STDIN)


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory) -> Files:
    d = tmp_path_factory.mktemp("fuzz-files")

    def write(name: str, text: str) -> str:
        (d / name).write_text(text, encoding="utf-8")
        return str(d / name)

    return Files(
        prompts_plain=write("plain.txt", "Once upon a time\n\nthe fox\n"),
        prompts_json=write(
            "prompts.jsonl",
            '{"id": 1, "prompt": "hello", "max_new_tokens": 2}\n{"prompt": "a fox", "temperature": 0, "stop": ["x"]}\n',
        ),
        prompts_bad=write("bad.jsonl", '{"prompt": "x", "temperature": -1}\n{"prompt": \n{"prompt": "y", "top_q": 1}\n'),
        template_ok=write("ok.jinja", "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:"),
        template_bad=write("bad.jinja", "{% for m in messages %}{{ m.content "),
        text_file=write("notes.txt", "just some text\n"),
    )


class home_dir:
    """Point LLMBUILDER_HOME at ``path`` for a block (the settings file and state markers live there)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        self.saved = os.environ.get("LLMBUILDER_HOME")
        os.environ["LLMBUILDER_HOME"] = str(self.path)
        return self.path

    def __exit__(self, *exc) -> None:
        if self.saved is None:
            os.environ.pop("LLMBUILDER_HOME", None)
        else:
            os.environ["LLMBUILDER_HOME"] = self.saved


# --------------------------------------------------------------------------------------- CLI properties

BASE_ARGV = ["generate", "text", "-m", str(MODEL_PT), "-t", str(TOKENIZER_DIR), "--max-tokens", "2"]


@pytest.mark.slow
def test_generate_text_with_fuzzed_arguments(fuzz_files, tmp_path_factory):
    """``generate text`` with random options and values: a documented exit code, never a traceback."""
    home = tmp_path_factory.mktemp("fuzz-home")
    (home / "settings.toml").write_text(
        '[profiles.work]\ntemperature = 0.5\nmax_new_tokens = 3\n', encoding="utf-8"
    )

    @fuzz_settings(MIN_EXAMPLES["cli_generate"])
    @example((BASE_ARGV + ["-p", "ab\udcffc"], b""))  # invalid UTF-8 in argv (a lone surrogate) in the prompt
    @example((BASE_ARGV + ["-i"], b"ok\n\xc3(\n"))  # invalid UTF-8 on stdin in the chat
    @example((BASE_ARGV + ["-p", "x", "--threads", str(2**31)], b""))  # beyond a C int
    @example((BASE_ARGV + ["-p", "x", "-m", "a" * 300], b""))  # a file name longer than NAME_MAX
    @example((BASE_ARGV + ["-p", "x", "-t", "a" * 300], b""))
    @given(generate_argv(fuzz_files))
    def fuzz(case: tuple[list[str], bytes]) -> None:
        argv, stdin = case
        with home_dir(home):
            result = run_cli(argv, stdin)
        assert_clean_exit(result, argv)
        RAN["cli_generate"] += 1

    fuzz()
    check_count("cli_generate")


CONFIG_KEYS = ["model", "tokenizer", "device", "dtype", "threads", "system", "max_new_tokens", "min_new_tokens",
               "temperature", "top_k", "top_p", "repetition_penalty", "do_sample", "seed", "stop", "ignore_eos",
               "max_tokens", "min_tokens", "max-tokens", "top-k", "TEMPERATURE", " temperature ", "_seed",
               "--max-tokens", "temp", "nope", "", "profiles", "default_profile"]
CONFIG_VALUES = st.one_of(
    FLOAT_TEXT,
    INT_TEXT,
    st.sampled_from(["auto", "cpu", "cuda:1", "mps", "float16", "bf16", "true", "false", "yes", "maybe", "none", "off",
                     "null", "a|b", "|", "||x", str(MODEL_PT), str(TOKENIZER_DIR), "demo", "~", '"quoted"', "[1, 2]",
                     "x = 1\n[evil]", "'''", "\\u0000"]),
    TEXT,
)


def config_valid_values() -> dict[str, st.SearchStrategy[str]]:
    """A value each key accepts, so that many examples really write the file."""
    def num(lo: float, hi: float) -> st.SearchStrategy[str]:
        return st.floats(lo, hi).map(lambda x: f"{x:.3g}")

    boolean = st.sampled_from(["true", "false", "yes", "no", "1", "0", "on", "off", "TRUE"])
    return {
        "model": st.sampled_from([str(MODEL_PT), str(FIXTURE), "demo"]),
        "tokenizer": st.just(str(TOKENIZER_DIR)),
        "device": st.sampled_from(["cpu", "auto", "cuda", "cuda:1", "mps"]),
        "dtype": st.sampled_from(["auto", "float32", "bfloat16", "float16"]),
        "threads": st.sampled_from(["1", "4", "auto"]),
        "system": TEXT,
        "max_new_tokens": st.integers(1, 500).map(str),
        "min_new_tokens": st.integers(0, 10).map(str),
        "temperature": st.one_of(st.just("0"), num(1e-5, 3.0)),
        "top_k": st.one_of(st.integers(0, 100).map(str), st.sampled_from(["none", "off"])),
        "top_p": st.one_of(num(1e-6, 1.0), st.sampled_from(["none", "1.0"])),
        "repetition_penalty": num(0.01, 5.0),
        "do_sample": boolean,
        "seed": st.one_of(st.integers(0, 2**63 - 1).map(str), st.sampled_from(["none", ""])),
        "stop": st.one_of(TEXT, st.sampled_from(["a|b", "User:", "\\n\\n"])),
        "ignore_eos": boolean,
    }


@st.composite
def config_commands(draw) -> list[list[str]]:
    """1-4 ``config set`` commands (one settings directory per example), hostile or valid."""
    valid = config_valid_values()
    commands = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            key = draw(st.sampled_from(sorted(valid)))
            value = draw(valid[key])
            key = draw(st.sampled_from([key, key.replace("_", "-"), key.upper()]))
        else:
            key = draw(st.one_of(st.sampled_from(CONFIG_KEYS), TEXT))
            value = draw(CONFIG_VALUES)
        argv = ["config", "set", key, value]
        if draw(st.integers(0, 3)) == 0:
            profiles = st.one_of(st.sampled_from(["work", "a.b", "x" * 65, "", "-bad", "default"]), TEXT)
            argv += [draw(st.sampled_from(["--profile", "-P"])), draw(profiles)]
        commands.append(argv)
    return commands


@pytest.mark.slow
def test_config_set_with_fuzzed_keys_and_values(tmp_path_factory):
    """``config set KEY VALUE``: exit 0 or 2, one clean line, and the settings file always still parses."""
    base = tmp_path_factory.mktemp("fuzz-config")

    @fuzz_settings(MIN_EXAMPLES["cli_config_set"])
    @example([["config", "set", "system", "ab\udcffc"]])  # invalid UTF-8 in argv
    @example([["config", "set", "model", "a" * 300]])  # a file name longer than NAME_MAX
    @given(config_commands())
    def fuzz(commands: list[list[str]]) -> None:
        home = base / f"h{RAN['cli_config_attempts']}"
        RAN["cli_config_attempts"] += 1
        home.mkdir()
        with home_dir(home):
            for argv in commands:
                result = run_cli(argv)
                assert_clean_exit(result, argv, codes={0, 2})
                path = home / "settings.toml"
                if path.exists():
                    text = path.read_text(encoding="utf-8")
                    tomlkit.parse(text)  # still TOML
                    from llmbuilder_cli import settings as st_

                    st_.Settings.read(path)  # and still settings this program accepts
            shown = run_cli(["config", "show", "--json"])
            assert_clean_exit(shown, ["config", "show", "--json"], codes={0, 2})
            if shown.code == 0:
                json.loads(shown.out)
        RAN["cli_config_set"] += 1

    fuzz()
    check_count("cli_config_set")


@pytest.mark.slow
@pytest.mark.parametrize("threads", ["100000", str(2**31)])
def test_absurd_thread_counts_end_cleanly(threads):
    """``--threads`` far beyond the machine (torch crashes the process at 100000): a subprocess, since a
    crash there would take the test run down with it. Refused (2) or run (0), never a crash."""
    args = [*BASE_ARGV, "-p", "x", "--threads", threads]
    proc = subprocess.run(cli_cmd(*args), capture_output=True, env=cli_env(), timeout=300, check=False)
    r = CliResult(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))
    assert_clean_exit(r, args, codes={0, 2})
