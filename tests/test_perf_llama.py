"""The fast Llama path equals the plain one.

`plain_logits` below is the straightforward formulation (as transformers writes it): separate q/k/v and
gate/up products, ``rotate_half``, RMSNorm written out, cos/sin computed for every call, a key/value cache
grown by concatenation. The engine's `Llama` fuses, tabulates and shortcuts all of that; in float32 its
logits must be *identical*, bit for bit, for prefill and for every cached decode step, on tiny random
models covering grouped/multi-query attention, tied heads, biases and the RoPE variants. 16-bit dtypes
and the int8 layers are checked for closeness instead (they have no exact reference).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmbuilder_cli.engine.kernels import Concat, Linear, dense, fuses_layers
from llmbuilder_cli.engine.models.llama import Llama, LlamaConfig, rope_frequencies

BASE = dict(model_type="llama", vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64, rms_norm_eps=1e-5)
CASES = {
    "gqa-untied": dict(num_key_value_heads=2),
    "mqa-tied-head_dim24": dict(num_key_value_heads=1, head_dim=24, tie_word_embeddings=True),
    "llama-biases": dict(attention_bias=True, mlp_bias=True),
    "qwen2-tied": dict(model_type="qwen2", num_key_value_heads=2, tie_word_embeddings=True),
    "rope-linear": dict(rope_scaling={"rope_type": "linear", "factor": 2.0}, rope_theta=500.0),
    "rope-llama3": dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "rope-yarn": dict(rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}),
}
PROMPT = [5, 17, 33, 8, 60, 91, 12]
STEPS = 12


def random_model(case: str, seed: int = 0) -> tuple[LlamaConfig, dict[str, torch.Tensor]]:
    cfg = LlamaConfig.from_hf({**BASE, **CASES[case]})
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in cfg.tensor_shapes().items():
        if name.endswith("norm.weight"):
            sd[name] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            sd[name] = 0.2 * torch.randn(shape, generator=g)
    return cfg, sd


# ----------------------------------------------------------------------------------- the plain path
def _rms(x, w, eps):
    xf = x.float()
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def plain_logits(cfg: LlamaConfig, sd, ids: list[int], start: int, past: list | None) -> torch.Tensor:
    """Last-position logits (V,) for ``ids`` at positions start.. with ``past`` [(k, v)] per layer
    (appended to in place; None = a full forward from 0)."""
    H, KVH, D, eps = cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.rms_norm_eps
    T = len(ids)
    inv, scale = rope_frequencies(cfg.rope, D, cfg.max_position_embeddings)
    pos = torch.arange(start, start + T, dtype=torch.float32)
    freqs = pos[:, None] * inv[None, :]
    ang = torch.cat((freqs, freqs), dim=-1)
    cos, sin = ang.cos() * scale if scale != 1 else ang.cos(), ang.sin() * scale if scale != 1 else ang.sin()
    x = sd["model.embed_tokens.weight"][torch.tensor([ids])]  # (1, T, C)
    for i in range(cfg.n_layer):
        p = f"model.layers.{i}."
        h = _rms(x, sd[p + "input_layernorm.weight"], eps)
        q = F.linear(h, sd[p + "self_attn.q_proj.weight"], sd.get(p + "self_attn.q_proj.bias"))
        k = F.linear(h, sd[p + "self_attn.k_proj.weight"], sd.get(p + "self_attn.k_proj.bias"))
        v = F.linear(h, sd[p + "self_attn.v_proj.weight"], sd.get(p + "self_attn.v_proj.bias"))
        q = q.view(1, T, H, D).transpose(1, 2)
        k = k.view(1, T, KVH, D).transpose(1, 2)
        v = v.view(1, T, KVH, D).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if past is not None:
            if len(past) <= i:
                past.append((k, v))
            else:
                past[i] = (torch.cat((past[i][0], k), dim=2), torch.cat((past[i][1], v), dim=2))
            k, v = past[i]
        mask = None
        if T > 1 and start > 0:
            mask = torch.ones(T, start + T, dtype=torch.bool).tril_(start)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=T > 1 and start == 0,
                                           scale=1 / math.sqrt(D), enable_gqa=H != KVH)
        x = x + F.linear(o.transpose(1, 2).reshape(1, T, H * D), sd[p + "self_attn.o_proj.weight"],
                         sd.get(p + "self_attn.o_proj.bias"))
        h = _rms(x, sd[p + "post_attention_layernorm.weight"], eps)
        gate = F.linear(h, sd[p + "mlp.gate_proj.weight"], sd.get(p + "mlp.gate_proj.bias"))
        up = F.linear(h, sd[p + "mlp.up_proj.weight"], sd.get(p + "mlp.up_proj.bias"))
        x = x + F.linear(F.silu(gate) * up, sd[p + "mlp.down_proj.weight"], sd.get(p + "mlp.down_proj.bias"))
    last = _rms(x[:, -1], sd["model.norm.weight"], eps)
    head = sd["model.embed_tokens.weight"] if cfg.tie_word_embeddings else sd["lm_head.weight"]
    return F.linear(last, head)[0]


def _greedy_trace(step, steps: int = STEPS) -> list[torch.Tensor]:
    """Logits of a prefill of PROMPT then ``steps`` greedy decode steps; ``step(ids, start)`` → (V,)."""
    out = [step(PROMPT, 0)]
    for t in range(steps):
        out.append(step([int(out[-1].argmax())], len(PROMPT) + t))
    return out


# ----------------------------------------------------------------------------------------- float32
@pytest.mark.parametrize("case", sorted(CASES))
def test_float32_fast_path_is_bit_identical_to_the_plain_path(case):
    cfg, sd = random_model(case)
    model = Llama(cfg, dict(sd))
    assert not fuses_layers(torch.float32, None) and isinstance(model.blocks[0].qkv, Concat)
    past: list = []
    cache = model.new_cache(len(PROMPT) + STEPS)
    with torch.inference_mode():
        ours = _greedy_trace(lambda ids, s: model.forward(torch.tensor([ids]), s, cache)[0])
        plain = _greedy_trace(lambda ids, s: plain_logits(cfg, sd, ids, s, past))
        full_ours = model.forward(torch.tensor([PROMPT]))[0]  # no cache
        full_plain = plain_logits(cfg, sd, PROMPT, 0, None)
    for t, (a, b) in enumerate(zip(ours, plain)):
        assert torch.equal(a, b), (case, t, (a - b).abs().max().item())
    assert torch.equal(full_ours, full_plain)


def test_rope_tables_grow_and_equal_the_per_call_formula():
    cfg, _ = random_model("rope-yarn")
    model = Llama(cfg, dict(random_model("rope-yarn")[1]))
    inv, scale = rope_frequencies(cfg.rope, cfg.head_dim, cfg.max_position_embeddings)
    cos, sin = model.rotary.cos_sin(130, 140, torch.float32)  # past the first table (128 positions)
    pos = torch.arange(130, 140, dtype=torch.float32)
    ang = torch.cat((pos[:, None] * inv, pos[:, None] * inv), dim=-1)
    half = cfg.head_dim // 2
    assert torch.equal(cos, ang.cos() * scale)
    assert torch.equal(sin[:, half:], ang.sin()[:, half:] * scale)
    assert torch.equal(sin[:, :half], -(ang.sin()[:, :half] * scale))


def test_consume_empties_the_state_and_builds_the_same_model():
    cfg, sd = random_model("gqa-untied")
    kept = Llama(cfg, sd)
    taken = dict(sd)
    consumed = Llama(cfg, taken, consume=True)
    assert taken == {}
    ids = torch.tensor([PROMPT])
    with torch.inference_mode():
        assert torch.equal(kept.forward(ids), consumed.forward(ids))


# -------------------------------------------------------------------------------- 16-bit and int8
@pytest.mark.parametrize("case", ["gqa-untied", "llama-biases", "qwen2-tied"])
def test_bfloat16_fused_path_stays_close_to_float32(case):
    cfg, sd = random_model(case)
    f32 = Llama(cfg, dict(sd))
    bf16 = Llama(cfg, {k: v.bfloat16() for k, v in sd.items()})
    assert isinstance(bf16.blocks[0].qkv, Linear) and bf16.dtype == torch.bfloat16  # fused
    c32, c16 = f32.new_cache(32), bf16.new_cache(32)
    with torch.inference_mode():
        a = _greedy_trace(lambda ids, s: f32.forward(torch.tensor([ids]), s, c32)[0], 4)
        b = _greedy_trace(lambda ids, s: bf16.forward(torch.tensor([ids]), s, c16)[0], 4)
    for x, y in zip(a, b):
        assert y.dtype == torch.float32
        assert (x - y).abs().max() <= 0.05 * x.abs().max()


def test_bfloat16_one_row_product_equals_f_linear():
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(48, 64, generator=g).bfloat16(), torch.randn(48, generator=g).bfloat16()
    x = torch.randn(1, 1, 64, generator=g).bfloat16()
    lin = Linear(w, b)
    y = lin(x)
    assert y.shape == (1, 1, 48)
    torch.testing.assert_close(y, F.linear(x, w, b), rtol=1e-2, atol=1e-2)
    x2 = torch.randn(1, 3, 64, generator=g).bfloat16()  # several rows: F.linear itself
    assert torch.equal(lin(x2), F.linear(x2, w, b))


@pytest.mark.skipif(dense._native_bf16(), reason="this CPU has native bfloat16 products: F.linear is kept")
@pytest.mark.parametrize("shape", [(1536, 576), (576, 1536), (1000, 64)])
def test_several_bfloat16_rows_are_the_float32_product_rounded_once(shape):
    """From BLOCKED_MIN_ROWS rows, on a CPU without bfloat16 instructions, the product runs in float32 on
    weight blocks (faster than bfloat16 F.linear there): exactly the float32 product of the bfloat16
    values, taken as ``W @ x.T`` (the weight's rows split among threads), rounded to bfloat16 once, so
    cutting the weight into blocks changes nothing; fewer rows keep their path."""
    g = torch.Generator().manual_seed(2)
    N, K = shape
    w, b = (0.05 * torch.randn(N, K, generator=g)).bfloat16(), torch.randn(N, generator=g).bfloat16()
    for bias in (None, b):
        lin = Linear(w, bias)
        x = torch.randn(2, 5, K, generator=g).bfloat16()  # 10 rows
        y = lin(x)
        assert y.shape == (2, 5, N) and y.dtype == torch.bfloat16
        whole = (w.float() @ x.reshape(-1, K).float().t().contiguous()).t()  # (10, N): one float32 product
        if bias is not None:
            whole = whole + bias.float()
        assert torch.equal(y, whole.bfloat16().view(2, 5, N))
        torch.testing.assert_close(y.float(), F.linear(x.float(), w.float(), None if bias is None else bias.float()),
                                   rtol=1e-2, atol=1e-2)
        few = x.reshape(-1, K)[: dense.BLOCKED_MIN_ROWS - 1]
        assert torch.equal(lin(few), F.linear(few, w, bias))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", ["gqa-untied", "mqa-tied-head_dim24", "llama-biases"])
def test_int8_model_stays_close_to_its_dense_model(case, dtype):
    cfg, sd = random_model(case)
    dense = Llama(cfg, {k: v.to(dtype) for k, v in sd.items()})
    q8 = Llama(cfg, {k: v.to(dtype) for k, v in sd.items()}, quantize="int8")
    assert q8.quantization == "int8" and q8.dtype == dtype
    assert q8.weight_bytes < dense.weight_bytes * (0.5 if dtype == torch.float32 else 0.75)  # an untied embedding stays dense
    ids = torch.tensor([PROMPT])
    with torch.inference_mode():
        a, b = dense.forward(ids)[0], q8.forward(ids)[0]
        cache = q8.new_cache(16)
        q8.forward(ids, 0, cache)
        step = q8.forward(torch.tensor([[3]]), len(PROMPT), cache)[0]
    assert (a - b).abs().max() <= 0.1 * a.abs().max()
    assert torch.isfinite(step).all()


# ------------------------------------------------------------------------------ one-position decoding
def test_rms_norm_equals_the_reference_formula_in_float32_and_is_close_in_bfloat16():
    from llmbuilder_cli.engine.models.llama import _rms_norm

    g = torch.Generator().manual_seed(3)
    for shape in [(1, 1, 576), (2, 5, 64), (1, 1, 12, 24)]:
        x = torch.randn(shape, generator=g) * 3
        w = 1.0 + 0.1 * torch.randn(shape[-1], generator=g)
        assert torch.equal(_rms_norm(x, w, 1e-5), _rms(x, w, 1e-5))
        y = _rms_norm(x.bfloat16(), w.bfloat16(), 1e-5)
        assert y.dtype == torch.bfloat16
        torch.testing.assert_close(y.float(), F.rms_norm(x, (shape[-1],), w, 1e-5), rtol=2e-2, atol=2e-2)
    # Qwen3's per-head norm: one weight row per head, broadcast over the rows
    x = torch.randn(1, 1, 6, 16, generator=g)
    w = torch.randn(6, 16, generator=g)
    assert torch.equal(_rms_norm(x, w, 1e-6), _rms(x, torch.ones(16), 1e-6) * w)


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_bfloat16_one_query_attention_regrouped_equals_grouped_query_attention(kv_heads):
    from llmbuilder_cli.engine.models.llama import _ONE_TOKEN

    cfg, sd = random_model("gqa-untied")
    model = Llama(cfg, {k: v.bfloat16() for k, v in sd.items()})
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 1, 16, generator=g).bfloat16()  # (B, H, 1, D)
    k, v = (torch.randn(2, kv_heads, 9, 16, generator=g).bfloat16() for _ in range(2))  # (B, KVH, S, D)
    model.gqa = True
    got = model._attend(model.blocks[0], q, k, v, 8, _ONE_TOKEN)
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=model.scale, enable_gqa=True)
    assert got.shape == (2, 4, 1, 16) and got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)


def test_cache_update_writes_each_layer_and_returns_its_prefix():
    from llmbuilder_cli.engine.models.llama import KVCache

    cache = KVCache(3, 2, 4, 10, dtype=torch.float32, device=torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    written = {}
    for start, T in [(0, 3), (3, 1), (4, 1), (2, 2)]:  # a prompt, two steps, then a rewrite of positions 2-3
        for layer in range(3):
            k, v = (torch.randn(1, 2, T, 4, generator=g) for _ in range(2))
            ck, cv = cache.update(layer, start, k, v)
            for t in range(T):
                written[layer, start + t] = (k[:, :, t], v[:, :, t])
            assert ck.shape == cv.shape == (1, 2, start + T, 4)
            for p in range(start + T):
                assert torch.equal(ck[:, :, p], written[layer, p][0]) and torch.equal(cv[:, :, p], written[layer, p][1])
    cache.k = cache.k.clone()  # replaced storage: the next update must not write through views of the old one
    cache.update(1, 4, torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    assert torch.equal(cache.k[1, :, :, 4], torch.ones(1, 2, 4))


@pytest.mark.skipif(dense._native_bf16(), reason="this CPU has native bfloat16 products: F.linear is kept")
def test_plain_weight_products_take_the_same_paths():
    """`dense.linear` (llmbuilder's GPT multiplies its plain weight tensors with it): float32 and a few
    bfloat16 rows are F.linear itself; from BLOCKED_MIN_ROWS bfloat16 rows, the float32 product rounded once."""
    g = torch.Generator().manual_seed(4)
    w, b = (0.05 * torch.randn(700, 64, generator=g)), torch.randn(700, generator=g)
    x = torch.randn(12, 64, generator=g)
    assert torch.equal(dense.linear(x, w, b), F.linear(x, w, b))
    wb, bb, xb = w.bfloat16(), b.bfloat16(), x.bfloat16()
    few = xb[: dense.BLOCKED_MIN_ROWS - 1]
    assert torch.equal(dense.linear(few, wb, bb), F.linear(few, wb, bb))
    expected = (wb.float() @ xb.float().t().contiguous() + bb.float()[:, None]).t().bfloat16()  # (12, 700)
    assert torch.equal(dense.linear(xb, wb, bb), expected)
