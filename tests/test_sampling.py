"""Tests for the logits processors, token selection and generation settings.

Every test runs on hand-built float32 logits whose processed probabilities are known exactly (or to 1e-4
where the reference tables round), following:

  * llmbuilder 2.0.0's generation algorithm (format reference §4.3 "Per-step algorithm") and its worked
    examples: llmbuilder's order and boundary rules, which we reproduce bit for bit;
  * the sampling semantics reference §1-2 (parameter semantics, processor order, Example 1 and 2).

Layout:
  1. helpers
  2. temperature
  3. repetition penalty
  4. top-k
  5. top-p
  6. min_new_tokens and the vocabulary limit
  7. worked examples from the references
  8. the processor chain built from a config
  9. ``select`` (greedy, seeded sampling, overflow)
 10. ``GenerationConfig`` validation and ``parse_field_value``
 11. the fast paths (top-p on the tokens still in play, sampling without V exponentials) against the plain
     formulations (a full sort, ``torch.multinomial``), bit for bit, on large vocabularies and ties

No torch function is mocked. Sampling tests use an explicit seeded ``torch.Generator`` so they are
deterministic.
"""

from __future__ import annotations

import math

import pytest
import torch

from llmbuilder_cli.config import MIN_TEMPERATURE, PROCESSOR_ORDER, GenerationConfig, parse_field_value
from llmbuilder_cli.engine import sampling
from llmbuilder_cli.engine.sampling import (
    MinNewTokens,
    RepetitionPenalty,
    SamplingContext,
    SuppressTokens,
    Temperature,
    TopK,
    TopP,
    apply_processors,
    build_processors,
    probabilities,
    select,
)
from llmbuilder_cli.errors import ConfigError, GenerationError

NEG_INF = float("-inf")

# ----------------------------------------------------------------------------------------------- 1. helpers


def t(values) -> torch.Tensor:
    """A float32 logits vector (V,)."""
    return torch.tensor(values, dtype=torch.float32)


def ctx(vocab_size: int, ids=()) -> SamplingContext:
    return SamplingContext(vocab_size, "cpu", ids)


def run(logits: torch.Tensor, procs, ids=()) -> torch.Tensor:
    """Processed probabilities of ``logits`` after ``procs``, with ``ids`` already in the sequence."""
    return probabilities(apply_processors(logits, procs, ctx(logits.shape[-1], ids)))


def probs_for(config: GenerationConfig, logits: torch.Tensor, ids=(), **build_kwargs) -> torch.Tensor:
    return run(logits, build_processors(config, **build_kwargs), ids)


def names(procs) -> list[str]:
    return [p.name for p in procs]


def assert_probs(actual: torch.Tensor, expected, atol: float = 1e-6) -> None:
    torch.testing.assert_close(actual, t(expected), rtol=0, atol=atol)


# Worked-example logits of llmbuilder-format.md §4.3 (T = 1).
Z_FORMAT = [3.0, 2.0, 1.0, 0.0, -1.0, 1.0]
# sampling.md §2 Example 2.
Z_EXAMPLE2 = [3.0, 2.0, 1.5, 1.0, 0.5]


# ------------------------------------------------------------------------------------------- 2. temperature


class TestTemperature:
    def test_divides_logits(self):
        out = Temperature(0.5)(t([1.0, 2.0, -3.0, 0.0]), ctx(4))
        torch.testing.assert_close(out, t([2.0, 4.0, -6.0, 0.0]), rtol=0, atol=0)

    def test_high_temperature_flattens(self):
        out = Temperature(2.0)(t([1.0, 2.0, -3.0]), ctx(3))
        torch.testing.assert_close(out, t([0.5, 1.0, -1.5]), rtol=0, atol=0)

    def test_probabilities_are_softmax_of_z_over_t(self):
        z = [1.0, 0.0]
        p = probs_for(GenerationConfig(temperature=0.5, top_k=None, top_p=None), t(z))
        # softmax([2, 0]) = [e²/(e²+1), 1/(e²+1)]
        e2 = math.exp(2.0)
        assert_probs(p, [e2 / (e2 + 1), 1 / (e2 + 1)])

    def test_does_not_modify_input(self):
        z = t([1.0, 2.0])
        Temperature(0.25)(z, ctx(2))
        torch.testing.assert_close(z, t([1.0, 2.0]))

    def test_zero_temperature_is_greedy_and_builds_no_temperature(self):
        cfg = GenerationConfig(temperature=0)
        assert cfg.greedy
        assert cfg.temperature == 0.0
        assert "temperature" not in names(build_processors(cfg))

    def test_temperature_one_builds_nothing(self):
        assert names(build_processors(GenerationConfig(temperature=1.0, top_k=None, top_p=None))) == []

    def test_temperature_applies_in_greedy_mode_too(self):
        # llmbuilder divides by T in greedy mode as well (no effect on the argmax).
        procs = build_processors(GenerationConfig(temperature=0.5, do_sample=False))
        assert names(procs) == ["temperature"]


# ------------------------------------------------------------------------------------ 3. repetition penalty


class TestRepetitionPenalty:
    def test_spec_example_after_temperature(self):
        # format §4.3: z=[2,-1,.5,0,-.5] at T=.5 -> [4,-2,1,0,-1]; penalty 2 on {0,1,3} -> [2,-4,1,0,-1].
        z = t([2.0, -1.0, 0.5, 0.0, -0.5])
        c = ctx(5, [0, 1, 3])
        scaled = Temperature(0.5)(z, c)
        torch.testing.assert_close(scaled, t([4.0, -2.0, 1.0, 0.0, -1.0]), rtol=0, atol=0)
        penalised = RepetitionPenalty(2.0)(scaled, c)
        torch.testing.assert_close(penalised, t([2.0, -4.0, 1.0, 0.0, -1.0]), rtol=0, atol=0)

    def test_spec_example_through_build_processors(self):
        cfg = GenerationConfig(temperature=0.5, repetition_penalty=2.0, do_sample=False)
        procs = build_processors(cfg)
        assert names(procs) == ["temperature", "repetition_penalty"]
        out = apply_processors(t([2.0, -1.0, 0.5, 0.0, -0.5]), procs, ctx(5, [3, 0, 1]))
        torch.testing.assert_close(out, t([2.0, -4.0, 1.0, 0.0, -1.0]), rtol=0, atol=0)

    def test_once_per_distinct_id_whatever_its_count(self):
        z = t([2.0, -1.0, 0.5, 0.0, -0.5])
        once = RepetitionPenalty(2.0)(z, ctx(5, [0, 1, 3]))
        many = RepetitionPenalty(2.0)(z, ctx(5, [0, 0, 0, 1, 3, 1, 3, 0]))
        torch.testing.assert_close(many, once, rtol=0, atol=0)
        torch.testing.assert_close(many, t([1.0, -2.0, 0.5, 0.0, -0.5]), rtol=0, atol=0)

    def test_negative_multiplied_positive_divided_zero_unchanged(self):
        z = t([4.0, -4.0, 0.0, 4.0])
        out = RepetitionPenalty(4.0)(z, ctx(4, [0, 1, 2]))
        torch.testing.assert_close(out, t([1.0, -16.0, 0.0, 4.0]), rtol=0, atol=0)

    def test_penalty_below_one_rewards(self):
        out = RepetitionPenalty(0.5)(t([1.0, -1.0, 1.0]), ctx(3, [0, 1]))
        torch.testing.assert_close(out, t([2.0, -0.5, 1.0]), rtol=0, atol=0)

    def test_generated_tokens_count_as_seen(self):
        c = ctx(3, [0])
        c.add(2)
        assert c.new_tokens == 1
        out = RepetitionPenalty(2.0)(t([2.0, 2.0, 2.0]), c)
        torch.testing.assert_close(out, t([1.0, 2.0, 1.0]), rtol=0, atol=0)

    def test_removed_tokens_stay_removed(self):
        out = RepetitionPenalty(2.0)(t([NEG_INF, 1.0]), ctx(2, [0, 1]))
        torch.testing.assert_close(out, t([NEG_INF, 0.5]), rtol=0, atol=0)

    def test_penalty_one_builds_nothing(self):
        assert "repetition_penalty" not in names(build_processors(GenerationConfig(repetition_penalty=1.0)))


# ------------------------------------------------------------------------------------------------- 4. top-k


class TestTopK:
    def test_ties_at_the_threshold_survive(self):
        # format §4.3: top_k 1 on [1, 1, 1, 0] -> [1/3, 1/3, 1/3, 0].
        assert_probs(run(t([1.0, 1.0, 1.0, 0.0]), [TopK(1)]), [1 / 3, 1 / 3, 1 / 3, 0.0])

    def test_strictly_below_the_kth_largest_is_removed(self):
        out = TopK(2)(t([3.0, 1.0, 2.0, 2.0, 0.0]), ctx(5))
        torch.testing.assert_close(out, t([3.0, NEG_INF, 2.0, 2.0, NEG_INF]), rtol=0, atol=0)

    def test_exactly_k_without_ties(self):
        out = TopK(2)(t([0.0, 3.0, 1.0, 2.0]), ctx(4))
        torch.testing.assert_close(out, t([NEG_INF, 3.0, NEG_INF, 2.0]), rtol=0, atol=0)

    @pytest.mark.parametrize("k", [4, 5, 50, 10_000])
    def test_k_at_or_above_vocabulary_keeps_everything(self, k):
        z = t([0.5, -1.0, 2.0, 0.0])
        torch.testing.assert_close(TopK(k)(z, ctx(4)), z, rtol=0, atol=0)

    def test_through_config(self):
        p = probs_for(GenerationConfig(temperature=1.0, top_k=1, top_p=None), t([1.0, 1.0, 1.0, 0.0]))
        assert_probs(p, [1 / 3, 1 / 3, 1 / 3, 0.0])

    def test_top_k_zero_or_none_builds_nothing(self):
        for top_k in (0, None):
            assert "top_k" not in names(build_processors(GenerationConfig(top_k=top_k)))


# ------------------------------------------------------------------------------------------------- 5. top-p


class TestTopP:
    # probabilities exactly [0.5, 0.25, 0.25]: cumulative mass 0.5, 0.75, 1.0 (exact in float32).
    Z_HALF_QUARTERS = torch.log(t([0.5, 0.25, 0.25]))

    def test_construction_is_exact(self):
        p = probabilities(self.Z_HALF_QUARTERS)
        assert torch.cumsum(p, dim=-1).tolist() == [0.5, 0.75, 1.0]

    @pytest.mark.parametrize(
        "top_p, expected",
        [
            (0.49, [1.0, 0.0, 0.0]),  # mass before token 1 is 0.5 > 0.49: only the first stays
            (0.5, [2 / 3, 1 / 3, 0.0]),  # mass before token 1 == p: llmbuilder keeps it (HF would not)
            (0.51, [2 / 3, 1 / 3, 0.0]),
            (0.74, [2 / 3, 1 / 3, 0.0]),  # mass before token 2 is 0.75 > 0.74
            (0.75, [0.5, 0.25, 0.25]),  # mass before token 2 == p: kept
            (0.76, [0.5, 0.25, 0.25]),
        ],
    )
    def test_boundary_keeps_token_iff_mass_before_is_at_most_p(self, top_p, expected):
        assert_probs(run(self.Z_HALF_QUARTERS, [TopP(top_p)]), expected)

    def test_boundary_in_unsorted_order(self):
        z = torch.log(t([0.25, 0.5, 0.25]))  # the most likely token is not first; ties broken by the sort
        p = run(z, [TopP(0.5)])
        assert p[1].item() == pytest.approx(2 / 3, abs=1e-6)
        assert sorted(p.tolist()) == pytest.approx([0.0, 1 / 3, 2 / 3], abs=1e-6)

    def test_first_token_always_survives(self):
        assert_probs(run(t([0.0, 0.0, 0.0, 0.0]), [TopP(1e-9)]).sort(descending=True).values, [1, 0, 0, 0])

    def test_sees_the_distribution_after_earlier_filters(self):
        # [.5,.25,.25] -> top_k 2 renormalises to [2/3, 1/3]; top_p 0.6: mass before token 1 is 2/3 > 0.6.
        assert_probs(run(self.Z_HALF_QUARTERS, [TopK(1), TopP(0.6)]), [1.0, 0.0, 0.0])

    @pytest.mark.parametrize("top_p", [1.0, None])
    def test_top_p_one_or_none_builds_nothing(self, top_p):
        assert "top_p" not in names(build_processors(GenerationConfig(top_p=top_p)))


# ------------------------------------------------------------------------ 6. min_new_tokens and vocab limit


class TestMinNewTokens:
    def test_blocks_eos_until_reached_then_not(self):
        proc = MinNewTokens(2, (1, 3))
        z = t([0.0, 5.0, 1.0, 4.0])
        c = ctx(4, [0, 2])  # prompt ids do not count as new tokens
        assert c.new_tokens == 0
        torch.testing.assert_close(proc(z, c), t([0.0, NEG_INF, 1.0, NEG_INF]), rtol=0, atol=0)
        c.add(2)
        assert c.new_tokens == 1
        torch.testing.assert_close(proc(z, c), t([0.0, NEG_INF, 1.0, NEG_INF]), rtol=0, atol=0)
        c.add(0)
        assert c.new_tokens == 2
        torch.testing.assert_close(proc(z, c), z, rtol=0, atol=0)
        c.add(2)
        torch.testing.assert_close(proc(z, c), z, rtol=0, atol=0)

    def test_blocked_eos_has_zero_probability_and_is_never_greedy(self):
        cfg = GenerationConfig(min_new_tokens=1, do_sample=False, temperature=1.0)
        procs = build_processors(cfg, eos_ids=[2])
        assert names(procs) == ["min_new_tokens"]
        c = ctx(3)
        out = apply_processors(t([0.0, 1.0, 9.0]), procs, c)
        assert probabilities(out)[2].item() == 0.0
        assert select(out, cfg.greedy, None) == 1
        c.add(1)
        assert select(apply_processors(t([0.0, 1.0, 9.0]), procs, c), cfg.greedy, None) == 2

    def test_not_built_without_eos_ids_or_with_ignore_eos_or_zero(self):
        assert "min_new_tokens" not in names(build_processors(GenerationConfig(min_new_tokens=3)))
        assert "min_new_tokens" not in names(
            build_processors(GenerationConfig(min_new_tokens=3, ignore_eos=True), eos_ids=[2])
        )
        assert "min_new_tokens" not in names(build_processors(GenerationConfig(min_new_tokens=0), eos_ids=[2]))

    def test_does_not_modify_input(self):
        z = t([1.0, 2.0])
        MinNewTokens(1, (1,))(z, ctx(2))
        torch.testing.assert_close(z, t([1.0, 2.0]))


class TestSuppressTokens:
    def test_bans_ids_at_or_above_the_limit(self):
        out = SuppressTokens(4)(t([0.0, 1.0, 2.0, 3.0, 9.0, 8.0]), ctx(6))
        torch.testing.assert_close(out, t([0.0, 1.0, 2.0, 3.0, NEG_INF, NEG_INF]), rtol=0, atol=0)
        p = probabilities(out)
        assert p[4].item() == 0.0 and p[5].item() == 0.0
        assert select(out, True, None) == 3

    def test_limit_equal_to_vocabulary_changes_nothing(self):
        z = t([0.0, 1.0, 2.0])
        torch.testing.assert_close(SuppressTokens(3)(z, ctx(3)), z, rtol=0, atol=0)

    def test_built_first_from_vocab_limit(self):
        procs = build_processors(GenerationConfig(do_sample=False, temperature=1.0), vocab_limit=2)
        assert names(procs) == ["vocab_limit"]
        out = apply_processors(t([0.0, 1.0, 5.0, 7.0]), procs, ctx(4))
        assert select(out, True, None) == 1

    def test_does_not_modify_input(self):
        z = t([1.0, 2.0])
        SuppressTokens(1)(z, ctx(2))
        torch.testing.assert_close(z, t([1.0, 2.0]))


# ------------------------------------------------------------------------------------------ 7. worked examples


class TestWorkedExamples:
    """llmbuilder-format.md §4.3 table (to 1e-4) and sampling.md §2 examples."""

    @pytest.mark.parametrize(
        "top_k, top_p, expected",
        [
            (50, 0.9, [0.6103, 0.2245, 0.0826, 0.0, 0.0, 0.0826]),
            (3, None, [0.6103, 0.2245, 0.0826, 0.0, 0.0, 0.0826]),  # the tie at 1 keeps 4 tokens
            (None, 0.8, [0.7311, 0.2689, 0.0, 0.0, 0.0, 0.0]),
            (50, 0.8, [0.7311, 0.2689, 0.0, 0.0, 0.0, 0.0]),
            (None, 0.5, [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
        ],
    )
    def test_format_table(self, top_k, top_p, expected):
        cfg = GenerationConfig(temperature=1.0, top_k=top_k, top_p=top_p)
        assert_probs(probs_for(cfg, t(Z_FORMAT)), expected, atol=1e-4)

    def test_format_table_top_k_1_ties(self):
        cfg = GenerationConfig(temperature=1.0, top_k=1, top_p=None)
        assert_probs(probs_for(cfg, t([1.0, 1.0, 1.0, 0.0])), [1 / 3, 1 / 3, 1 / 3, 0.0], atol=1e-4)

    def test_sampling_example_1_temperature_first(self):
        # z=[3,2,1], top_p .8, T .5: p(z/T) = [.867,.117,.016], the first token alone passes .8.
        cfg = GenerationConfig(temperature=0.5, top_k=None, top_p=0.8)
        assert_probs(probs_for(cfg, t([3.0, 2.0, 1.0])), [1.0, 0.0, 0.0])

    def test_sampling_example_2_llmbuilder_hf_order(self):
        cfg = GenerationConfig(temperature=0.5, top_k=3, top_p=0.8)
        assert names(build_processors(cfg)) == ["temperature", "top_k", "top_p"]
        assert_probs(probs_for(cfg, t(Z_EXAMPLE2)), [1.0, 0.0, 0.0, 0.0, 0.0])

    def test_sampling_example_2_intermediate_top_k(self):
        # z/T = [6,4,3,2,1] -> top-3 -> p = [.844, .114, .042, 0, 0]
        cfg = GenerationConfig(temperature=0.5, top_k=3, top_p=None)
        assert_probs(probs_for(cfg, t(Z_EXAMPLE2)), [0.8438, 0.1142, 0.0420, 0.0, 0.0], atol=1e-4)


# ---------------------------------------------------------------------------------------- 8. processor chain


class TestBuildProcessors:
    def test_full_chain_order(self):
        cfg = GenerationConfig(temperature=0.7, repetition_penalty=1.3, min_new_tokens=2, top_k=5, top_p=0.9)
        procs = build_processors(cfg, eos_ids=[3], vocab_limit=10)
        assert names(procs) == ["vocab_limit", *PROCESSOR_ORDER]
        assert tuple(names(build_processors(cfg, eos_ids=[3]))) == PROCESSOR_ORDER

    def test_defaults(self):
        cfg = GenerationConfig()
        assert names(build_processors(cfg, eos_ids=[3])) == ["temperature", "top_k", "top_p"]

    @pytest.mark.parametrize(
        "config, expected",
        [
            (dict(do_sample=False), ["temperature", "repetition_penalty", "min_new_tokens"]),
            (dict(temperature=0.0), ["repetition_penalty", "min_new_tokens"]),
            (dict(temperature=0.0, do_sample=False), ["repetition_penalty", "min_new_tokens"]),
        ],
    )
    def test_greedy_builds_no_top_k_or_top_p(self, config, expected):
        cfg = GenerationConfig(repetition_penalty=1.2, min_new_tokens=1, top_k=5, top_p=0.5, **config)
        assert cfg.greedy
        assert names(build_processors(cfg, eos_ids=[0])) == expected

    @pytest.mark.parametrize(
        "config, expected",
        [
            (dict(top_k=None), ["temperature", "top_p"]),
            (dict(top_p=None), ["temperature", "top_k"]),
            (dict(top_p=1.0), ["temperature", "top_k"]),
            (dict(temperature=1.0), ["top_k", "top_p"]),
            (dict(repetition_penalty=0.9), ["temperature", "repetition_penalty", "top_k", "top_p"]),
            (dict(temperature=1.0, top_k=None, top_p=None), []),
        ],
    )
    def test_only_active_stages_in_order(self, config, expected):
        assert names(build_processors(GenerationConfig(**config))) == expected

    def test_processors_are_immutable(self):
        proc = TopK(3)
        with pytest.raises(Exception):
            proc.k = 4  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------ 9. select


class TestSelect:
    def test_greedy_first_index_among_equal_maxima(self):
        assert select(t([1.0, 3.0, 3.0, 2.0]), True, None) == 1
        assert select(t([5.0, 5.0]), True, None) == 0
        assert select(t([NEG_INF, 0.0, 0.0]), True, None) == 1

    def test_greedy_ignores_the_generator(self):
        g = torch.Generator().manual_seed(0)
        state = g.get_state()
        assert select(t([0.0, 2.0, 1.0]), True, g) == 1
        assert torch.equal(g.get_state(), state)

    def test_point_mass_is_always_picked(self):
        g = torch.Generator().manual_seed(1)
        z = t([0.0, 1.0, 2.0, 3.0])
        procs = [TopK(1)]
        for _ in range(50):
            assert select(apply_processors(z, procs, ctx(4)), False, g) == 3

    @staticmethod
    def _picks(seed: int, n: int = 64) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        z = torch.zeros(16)  # uniform over 16 tokens
        return [select(z, False, g) for _ in range(n)]

    def test_same_seed_same_sequence(self):
        assert self._picks(1234) == self._picks(1234)

    def test_different_seed_different_sequence(self):
        assert self._picks(1234) != self._picks(4321)

    def test_uses_the_given_generator_not_the_global_rng(self):
        torch.manual_seed(0)
        a = self._picks(7)
        torch.manual_seed(99)
        b = self._picks(7)
        assert a == b

    def test_empirical_frequencies_match_filtered_distribution(self):
        cfg = GenerationConfig(temperature=1.0, top_k=50, top_p=0.9, seed=2024)
        logits = apply_processors(t(Z_FORMAT), build_processors(cfg), ctx(6))
        expected = [0.6103, 0.2245, 0.0826, 0.0, 0.0, 0.0826]
        g = torch.Generator().manual_seed(cfg.seed)
        n = 20_000
        counts = [0] * 6
        for _ in range(n):
            counts[select(logits, cfg.greedy, g)] += 1
        assert counts[3] == 0 and counts[4] == 0  # removed (-inf) tokens are never picked
        for i, p in enumerate(expected):
            assert counts[i] / n == pytest.approx(p, abs=0.015), (i, counts)

    def test_overflowing_temperature_returns_argmax(self):
        # z / T overflows to +inf for the largest logit: softmax is NaN, select must not raise.
        z = t([3.0, 1e38, 0.0, -2.0])
        for do_sample in (True, False):
            cfg = GenerationConfig(temperature=MIN_TEMPERATURE, do_sample=do_sample)
            logits = apply_processors(z, build_processors(cfg), ctx(4))
            assert math.isinf(logits[1].item())
            assert select(logits, cfg.greedy, torch.Generator().manual_seed(0)) == 1

    def test_smallest_temperature_is_a_point_mass(self):
        cfg = GenerationConfig(temperature=MIN_TEMPERATURE)
        logits = apply_processors(t([1.0, 2.0, 0.0]), build_processors(cfg), ctx(3))
        g = torch.Generator().manual_seed(0)
        assert all(select(logits, cfg.greedy, g) == 1 for _ in range(20))

    # Temperatures between 0 and MIN_TEMPERATURE made z / T overflow for several logits (or round T to 0
    # in float32, giving 0/0 = NaN), so the argmax of the overflowed logits picked a wrong token. They are
    # rejected with a message that points to 0 (greedy) instead.
    @pytest.mark.parametrize("temperature", [1e-300, 1e-39, 1e-30, 1e-6])
    def test_temperatures_below_the_minimum_are_rejected(self, temperature):
        with pytest.raises(ConfigError, match="temperature must be 0 \\(greedy\\)"):
            GenerationConfig(temperature=temperature)


# --------------------------------------------------------------------------- 10. GenerationConfig and parsing


class TestGenerationConfig:
    def test_defaults_equal_llmbuilder(self):
        c = GenerationConfig()
        assert (c.max_new_tokens, c.min_new_tokens, c.temperature, c.top_k, c.top_p, c.repetition_penalty,
                c.do_sample) == (100, 0, 0.8, 50, 0.9, 1.0, True)
        assert (c.seed, c.stop, c.ignore_eos) == (None, (), False)

    @pytest.mark.parametrize(
        "kwargs, field",
        [
            (dict(max_new_tokens=0), "max_new_tokens"),
            (dict(max_new_tokens=-5), "max_new_tokens"),
            (dict(max_new_tokens=1.5), "max_new_tokens"),
            (dict(max_new_tokens=True), "max_new_tokens"),
            (dict(min_new_tokens=-1), "min_new_tokens"),
            (dict(min_new_tokens=11, max_new_tokens=10), "min_new_tokens"),
            (dict(temperature=-1), "temperature"),
            (dict(temperature=float("nan")), "temperature"),
            (dict(temperature=float("inf")), "temperature"),
            (dict(temperature="hot"), "temperature"),
            (dict(top_k=-1), "top_k"),
            (dict(top_k=2.5), "top_k"),
            (dict(top_p=0), "top_p"),
            (dict(top_p=-0.1), "top_p"),
            (dict(top_p=1.5), "top_p"),
            (dict(top_p=float("nan")), "top_p"),
            (dict(repetition_penalty=0), "repetition_penalty"),
            (dict(repetition_penalty=-1.0), "repetition_penalty"),
            (dict(repetition_penalty=float("inf")), "repetition_penalty"),
            (dict(do_sample="yes"), "do_sample"),
            (dict(ignore_eos=1), "ignore_eos"),
            (dict(seed=-1), "seed"),
            (dict(seed=2**63), "seed"),
            (dict(stop=""), "stop"),
            (dict(stop=["ok", ""]), "stop"),
        ],
    )
    def test_invalid_values_raise_config_error_naming_the_field(self, kwargs, field):
        with pytest.raises(ConfigError) as info:
            GenerationConfig(**kwargs)
        assert info.value.field == field
        assert field in info.value.message
        assert isinstance(info.value, ValueError)

    def test_replace_validates_again(self):
        with pytest.raises(ConfigError, match="top_p"):
            GenerationConfig().replace(top_p=0.0)
        assert GenerationConfig().replace(top_p=0.5).top_p == 0.5

    def test_top_k_zero_normalises_to_none(self):
        assert GenerationConfig(top_k=0).top_k is None
        assert GenerationConfig(top_k=None).top_k is None

    def test_numbers_normalised_to_float(self):
        c = GenerationConfig(temperature=1, top_p=1, repetition_penalty=2)
        assert isinstance(c.temperature, float) and isinstance(c.top_p, float)
        assert isinstance(c.repetition_penalty, float)

    def test_stop_normalised_to_tuple(self):
        assert GenerationConfig(stop="END").stop == ("END",)
        assert GenerationConfig(stop=["a", "b"]).stop == ("a", "b")
        assert GenerationConfig(stop=None).stop == ()

    def test_boundary_values_accepted(self):
        c = GenerationConfig(max_new_tokens=1, min_new_tokens=1, temperature=0, top_p=1.0, seed=0)
        assert c.min_new_tokens == c.max_new_tokens == 1
        GenerationConfig(seed=2**63 - 1, top_p=1e-6, repetition_penalty=1e-6)

    @pytest.mark.parametrize(
        "kwargs, greedy",
        [
            (dict(), False),
            (dict(do_sample=False), True),
            (dict(temperature=0), True),
            (dict(temperature=0.0, do_sample=False), True),
            (dict(temperature=MIN_TEMPERATURE), False),
        ],
    )
    def test_greedy_property(self, kwargs, greedy):
        assert GenerationConfig(**kwargs).greedy is greedy


class TestParseFieldValue:
    @pytest.mark.parametrize(
        "name, text, value",
        [
            ("max_new_tokens", "12", 12),
            ("max_new_tokens", " 7 ", 7),
            ("min_new_tokens", "0", 0),
            ("temperature", "0.5", 0.5),
            ("temperature", "1", 1.0),
            ("top_k", "40", 40),
            ("top_k", "off", None),
            ("top_k", "None", None),
            ("top_p", "0.95", 0.95),
            ("top_p", "", None),
            ("repetition_penalty", "1.1", 1.1),
            ("do_sample", "true", True),
            ("do_sample", "NO", False),
            ("ignore_eos", "1", True),
            ("ignore_eos", "off", False),
            ("seed", "42", 42),
            ("seed", "null", None),
            ("stop", "a|b", ("a", "b")),
            ("stop", "END", ("END",)),
            ("stop", "none", ()),
        ],
    )
    def test_parses_each_field_type(self, name, text, value):
        parsed = parse_field_value(name, text)
        assert parsed == value and type(parsed) is type(value)

    def test_parsed_values_build_a_config(self):
        c = GenerationConfig(**{n: parse_field_value(n, s) for n, s in [("top_k", "0"), ("temperature", "0")]})
        assert c.top_k is None and c.greedy

    @pytest.mark.parametrize(
        "name, text",
        [
            ("max_new_tokens", "ten"),
            ("max_new_tokens", "1.5"),
            ("min_new_tokens", ""),
            ("top_k", "2.5"),
            ("temperature", "hot"),
            ("top_p", "high"),
            ("repetition_penalty", ""),
            ("do_sample", "maybe"),
            ("ignore_eos", "2"),
            ("seed", "x"),
        ],
    )
    def test_rejects_bad_text(self, name, text):
        with pytest.raises(ConfigError) as info:
            parse_field_value(name, text)
        assert info.value.field == name
        assert name in info.value.message

    @pytest.mark.parametrize(
        "typo, suggestion",
        [("temprature", "temperature"), ("top-k", "top_k"), ("max_tokens", "max_new_tokens")],
    )
    def test_suggests_closest_name_for_misspelt_field(self, typo, suggestion):
        with pytest.raises(ConfigError) as info:
            parse_field_value(typo, "1")
        assert info.value.field == typo
        assert typo in info.value.message
        assert f"did you mean {suggestion!r}?" in info.value.hint
        assert suggestion in str(info.value)

    def test_unknown_field_without_close_match_lists_settings(self):
        with pytest.raises(ConfigError) as info:
            parse_field_value("zzzzzz", "1")
        for name in GenerationConfig.field_names():
            assert name in info.value.hint


# ------------------------------------------------------------------ 11. fast paths against plain formulations


def top_p_full_sort(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Top-p the plain way, as llmbuilder writes it: a full sort of the vocabulary (V,)."""
    sorted_logits, order = torch.sort(logits, descending=True)  # (V,), (V,)
    cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)  # (V,)
    remove = cumulative > p
    remove[1:] = remove[:-1].clone()  # a token goes when the mass before it is > p
    remove[0] = False
    out = logits.clone()
    out[order[remove]] = NEG_INF
    return out


def bits(z: torch.Tensor) -> torch.Tensor:
    """float32 (V,) as int32 (V,): equal means bit for bit (NaN and the sign of 0 included)."""
    return z.view(torch.int32)


def model_like(V: int, seed: int, kind: str = "float32") -> torch.Tensor:
    """Logits (V,) shaped like a model's: float32, rounded to bfloat16 (many ties among the top ones, as a
    bfloat16 model gives), or small whole numbers (huge runs of ties)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "int":
        return torch.randint(-6, 6, (V,), generator=g).float()
    z = torch.randn(V, generator=g) * 3
    return z.bfloat16().float() if kind == "bf16" else z


class TestFastPaths:
    @pytest.mark.parametrize("kind", ["float32", "bf16", "int"])
    @pytest.mark.parametrize("V", [37, 1000, 50257])
    def test_top_p_after_top_k_equals_the_full_sort(self, V, kind):
        for seed in range(40):
            z = Temperature(0.8)(model_like(V, seed, kind), ctx(V))
            k = [1, 2, 5, 15, 16, 17, 50, 63, 64, 65, 200, 2000][seed % 12]
            p = [0.9, 0.5, 0.95, 0.99, 1e-7, 0.9999999, 0.3][seed % 7]
            zk = TopK(k)(z, ctx(V))
            assert torch.equal(bits(TopP(p)(zk, ctx(V))), bits(top_p_full_sort(zk, p))), (V, kind, seed, k, p)

    @pytest.mark.parametrize("V", [49152, 128256, 50257])
    def test_top_p_alone_on_a_large_vocabulary_equals_the_full_sort(self, V):
        for seed, kind in enumerate(["float32", "bf16", "float32", "int"]):
            z = model_like(V, seed, kind) / 0.8
            if seed == 2:  # a few ids banned first: the tokens in play are not a multiple of 64
                z = SuppressTokens(V - 203)(z, ctx(V))
            for p in (0.5, 0.9, 0.999):
                assert torch.equal(bits(TopP(p)(z, ctx(V))), bits(top_p_full_sort(z, p))), (V, kind, seed, p)

    @pytest.mark.parametrize("V", [1000, 49152])
    def test_the_cut_is_exact_when_p_is_a_cumulative_mass(self, V):
        # p equal to (or one float below) the full sort's own cumulative mass at some token: a cumulative
        # mass off by one rounding step anywhere would keep one token more or less.
        for seed in range(30):
            zk = TopK(2 + seed * 3)(model_like(V, seed) / 0.8, ctx(V))  # 2..89 tokens in play
            cumulative = torch.cumsum(torch.softmax(torch.sort(zk, descending=True).values, dim=-1), dim=-1)
            for j in range(min(6, 2 + seed * 3)):
                c = cumulative[j]
                for p in (float(c), float(torch.nextafter(c, torch.tensor(0.0)))):
                    if 0.0 < p < 1.0:
                        assert torch.equal(bits(TopP(p)(zk, ctx(V))), bits(top_p_full_sort(zk, p))), (seed, j, p)

    def test_without_ties_at_the_cut_no_full_sort_is_needed(self, monkeypatch):
        def refuse(logits, p):
            raise AssertionError("the fast path fell back to the full sort")

        monkeypatch.setattr(sampling, "_top_p_sorted", refuse)
        V = 49152
        for seed in range(12):
            g = torch.Generator().manual_seed(seed)
            z = torch.randperm(V, generator=g).float() * 1e-3  # distinct logits: no ties anywhere
            for procs in ([TopK(50)], [TopK(3000)], [SuppressTokens(V - 5)], []):
                zk = apply_processors(z, procs, ctx(V))
                for p in (0.2, 0.9):
                    assert torch.equal(bits(TopP(p)(zk, ctx(V))), bits(top_p_full_sort(zk, p)))

    def test_a_cut_inside_a_run_of_equal_logits_follows_the_full_sort(self):
        # probabilities [.4, .2, .2, .2, 0]: at p = .5 the cut falls inside the run of .2s, one of them stays
        z = torch.log(t([0.4, 0.2, 0.2, 0.2, 0.0]))
        out = TopP(0.5)(z, ctx(5))
        assert int((out > NEG_INF).sum()) == 2 and out[0] == z[0]
        assert torch.equal(bits(out), bits(top_p_full_sort(z, 0.5)))

    @pytest.mark.parametrize("V", [1, 2, 16, 1000, 49152])
    def test_sampling_equals_torch_multinomial_and_moves_the_generator_alike(self, V):
        chains = [[], [TopK(50)], [TopK(50), TopP(0.9)], [TopP(0.5)], [Temperature(1e-3)], [TopK(1)]]
        g_ours, g_torch = torch.Generator().manual_seed(V), torch.Generator().manual_seed(V)
        for seed in range(36):  # one generator throughout: every draw starts where the last one left it
            z = model_like(V, seed, ["float32", "bf16"][seed % 2])
            logits = apply_processors(z, chains[seed % len(chains)], ctx(V))
            token = select(logits, False, g_ours)
            assert token == int(torch.multinomial(probabilities(logits), 1, generator=g_torch)), (V, seed)
            assert torch.equal(g_ours.get_state(), g_torch.get_state())

    def test_sampling_a_point_mass_of_overflowed_logits(self):
        z = torch.zeros(49152)
        z[[7, 40000]] = float("inf")
        g_ours, g_torch = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        for _ in range(20):
            token = select(z, False, g_ours)
            assert token in (7, 40000)
            assert token == int(torch.multinomial(probabilities(z), 1, generator=g_torch))

    def test_greedy_takes_the_first_of_equal_maxima_in_a_large_vocabulary(self):
        z = model_like(128256, 0)
        z[[70000, 5, 128255]] = float(z.max()) + 1.0
        assert select(z, True, None) == 5

    @pytest.mark.parametrize("greedy", [True, False])
    def test_one_nan_in_a_large_vocabulary_is_an_error(self, greedy):
        z = model_like(128256, 1)
        z[100_000] = float("nan")
        with pytest.raises(GenerationError, match="NaN"):
            select(z, greedy, torch.Generator().manual_seed(0))
