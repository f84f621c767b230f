"""Weight-only int8 (engine/kernels/int8.py): the quantization itself, the kernel against a dequantized product,
the guard around torch's kernel, and, on SmolLM2, the quality: perplexity of a fixed text and teacher-forced
top-1 agreement with float32."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmbuilder_cli.engine.kernels import dense
from llmbuilder_cli.engine.kernels import (
    Int8Linear,
    has_int8_kernel,
    make_linear,
    quantize_int8,
    quantize_int8_blocks,
)
from llmbuilder_cli.engine.loading import load
from llmbuilder_cli.errors import UsageError
from conftest import MODEL_PT, TOKENIZER_DIR
from real_models import smollm2_gguf


def _weights(n: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05


def test_quantization_error_is_at_most_half_a_step_per_row():
    w = _weights(70, 48)
    w[3] = 0.0  # an all-zero row must not divide by zero
    lin = quantize_int8(w, None, torch.float32)
    q, s = lin.qweight, lin.scale
    assert q.dtype == torch.int8 and q.shape == w.shape and s.shape == (70,)
    assert int(q.abs().max()) == 127 and torch.equal(q[3], torch.zeros(48, dtype=torch.int8))
    err = (q.float() * s[:, None] - w).abs()
    assert bool((err <= s[:, None] / 2 + 1e-7).all())
    assert torch.equal(lin.rows(torch.tensor([[0, 5]])), (q[[0, 5]].float() * s[[0, 5], None])[None])


def test_block_quantization_equals_whole_quantization():
    w = _weights(33, 64, seed=1)
    whole = quantize_int8(w, None, torch.bfloat16)
    blocks = [(0, w[:10].clone()), (10, w[10:11].clone()), (11, w[11:].clone())]
    parts = quantize_int8_blocks((33, 64), blocks, None, torch.bfloat16)
    assert torch.equal(whole.qweight, parts.qweight) and torch.equal(whole.scale, parts.scale)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("k", [64, 24])  # 24: not a multiple of 16, torch's kernel is not used
@pytest.mark.parametrize("rows", [1, 5, 20])  # 20: a prompt, the dense path
def test_int8_product_equals_the_dequantized_product(dtype, k, rows):
    w, b = _weights(40, k, seed=2), torch.randn(40) * 0.1
    lin = quantize_int8(w, b.to(dtype), dtype)
    assert lin._kernel == (k % 16 == 0 and hasattr(torch.ops.aten, "_weight_int8pack_mm"))
    x = torch.randn(1, rows, k, generator=torch.Generator().manual_seed(3)).to(dtype)
    deq = (lin.qweight.float() * lin.scale.float()[:, None])  # (40, k)
    expected = F.linear(x.float(), deq, b.to(dtype).float())
    got = lin(x)
    assert got.shape == (1, rows, 40) and got.dtype == dtype
    torch.testing.assert_close(got.float(), expected, rtol=0.02, atol=0.02)


def test_kernel_guard():
    cpu = torch.device("cpu")
    assert not has_int8_kernel(cpu, torch.bfloat16, 24)
    assert not has_int8_kernel(cpu, torch.float32, 64)  # float32 goes through bfloat16 (Int8Linear)
    assert not has_int8_kernel(torch.device("meta"), torch.bfloat16, 64)
    assert isinstance(make_linear(_weights(4, 16), quantize="int8"), Int8Linear)
    with pytest.raises(ValueError):
        make_linear(_weights(4, 16), quantize="int2")


def test_load_refuses_unknown_and_unsupported_quantizations():
    with pytest.raises(UsageError, match="unknown quantization"):
        load(MODEL_PT, TOKENIZER_DIR, device="cpu", quantize="int2")
    with pytest.raises(UsageError, match="not available for llmbuilder-gpt"):
        load(MODEL_PT, TOKENIZER_DIR, device="cpu", quantize="int8")


# ------------------------------------------------------------------------------------ real model
TEXT = ("The water cycle describes how water moves between the oceans, the air and the land. Heat from the sun "
        "evaporates water from seas and lakes; the vapour rises, cools and condenses into clouds. When the "
        "droplets grow heavy they fall as rain or snow, which flows back through rivers and ground water to "
        "the sea, and the cycle begins again.")
PROMPTS = ["The capital of France is", "def fibonacci(n):\n    "]


def _teacher_forced(loaded, ids: list[int]) -> tuple[float, list[int]]:
    """Summed negative log-likelihood of ids[1:] and the argmax after each prefix, one token at a time."""
    model = loaded.model
    cache = model.new_cache(len(ids))
    nll, tops = 0.0, []
    with torch.inference_mode():
        for t in range(len(ids) - 1):
            logits = model.forward(torch.tensor([[ids[t]]]), t, cache)[0].float()
            nll -= float(torch.log_softmax(logits, -1)[ids[t + 1]])
            tops.append(int(logits.argmax()))
    return nll, tops


def perplexity_and_top1(loaded) -> tuple[float, list[int]]:
    """Perplexity over TEXT and PROMPTS, teacher-forced, and the argmax after every prefix."""
    seqs = [loaded.tokenizer.encode(TEXT)] + [loaded.tokenizer.encode(p) for p in PROMPTS]
    nll, tops, n = 0.0, [], 0
    for ids in seqs:
        a, b = _teacher_forced(loaded, ids)
        nll, tops, n = nll + a, tops + b, n + len(ids) - 1
    return math.exp(nll / n), tops


@pytest.mark.realmodel
@pytest.mark.slow
def test_int8_quality_on_smollm2_perplexity_and_top1_agreement():
    """Measured on SmolLM2-135M (its GGUF, dequantized), 78 predicted tokens: perplexity float32 16.64,
    int8 16.63 (bfloat16 16.78); top-1 agreement with float32 77/78 (bfloat16 77/78)."""
    path = smollm2_gguf()
    results = {q: perplexity_and_top1(load(path, device="cpu", dtype="float32", quantize=q)) for q in (None, "int8")}
    (ppl32, top32), (ppl8, top8) = results[None], results["int8"]
    agreement = sum(a == b for a, b in zip(top32, top8)) / len(top32)
    assert ppl8 <= ppl32 * 1.03, (ppl8, ppl32)
    assert agreement >= 0.9, agreement


@pytest.mark.skipif(not dense.float_products_pay(torch.device("cpu"), torch.bfloat16),
                    reason="this CPU has native bfloat16 products: the dense path keeps F.linear")
@pytest.mark.parametrize("n", [40, 1100])  # 1100 rows of output: several weight blocks
def test_a_bfloat16_prompt_is_the_float32_product_rounded_once(n):
    """A prompt (16 rows or more) with bfloat16 activations on a CPU without bfloat16 products: float32
    products over blocks of the int8 codes, scaled and biased in float32, rounded to bfloat16 once (the
    bfloat16 F.linear it replaces took 16 s for a 512-token SmolLM2 prompt)."""
    w, b = _weights(n, 64, seed=5), torch.randn(n) * 0.1
    lin = quantize_int8(w, b.bfloat16(), torch.bfloat16)
    x = torch.randn(2, 20, 64, generator=torch.Generator().manual_seed(6)).bfloat16()
    xt = x.reshape(-1, 64).float().t().contiguous()  # (64, 40)
    expected = (lin.qweight.float() @ xt) * lin.scale.float()[:, None] + b.bfloat16().float()[:, None]  # (n, 40)
    got = lin(x)
    assert got.shape == (2, 20, n) and got.dtype == torch.bfloat16
    assert torch.equal(got, expected.t().bfloat16().view(2, 20, n))
