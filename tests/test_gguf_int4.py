"""int4 layers from GGUF files stored in 4-bit groups of 32 (Q4_0, Q4_1, Q4_K): the stored codes are kept
with their groups' scale and zero point (rounded to bfloat16), never dequantized and quantized again. The
layers' weights are checked against the ``gguf`` package's dequantization of the same bytes, in a fused
Llama q|k|v (un-permuted rows, one part stored as float) and in Gemma 3's layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf.quants import dequantize as reference_dequantize  # noqa: E402
from gguf.quants import quantize as reference_quantize  # noqa: E402

from llmbuilder_cli.engine.formats.gguf.quants import int4_groups  # noqa: E402
from llmbuilder_cli.engine.kernels import Int4Linear, Int8Linear  # noqa: E402
from llmbuilder_cli.engine.kernels.int4 import GROUP, supports_int4  # noqa: E402
from llmbuilder_cli.engine.loading import load  # noqa: E402
from llmbuilder_cli.errors import ModelLoadError  # noqa: E402
from test_gguf import converter_permute, llama_meta, llama_state, llama_to_gguf, write_gguf  # noqa: E402

needs_kernel = pytest.mark.skipif(not supports_int4((16, 32), torch.device("cpu")),
                                  reason="this torch has no CPU int4 kernel")

HIDDEN = 256  # Q4_K rows are whole super-blocks of 256 values


def q4_k_blocks(n_blocks: int, rng: np.random.Generator, d: float = 2e-4) -> np.ndarray:
    """Q4_K super-blocks with random 6-bit scales/mins and codes, and d, dmin of about ``d`` (either sign)."""
    raw = rng.integers(0, 256, size=(n_blocks, 144), dtype=np.uint8)
    for at in (0, 2):
        raw[:, at : at + 2] = rng.uniform(-d, d, size=(n_blocks, 1)).astype(np.float16).view(np.uint8)
    return raw


def encode(qtype: Q, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A matrix as ``qtype`` bytes (rows, row bytes): gguf's own quantizer, or random Q4_K blocks."""
    if qtype == Q.Q4_K:
        return q4_k_blocks(a.size // 256, rng).reshape(a.shape[0], -1)
    return reference_quantize(a, qtype)


def unpermuted(a: np.ndarray, heads: int) -> np.ndarray:
    """The inverse of `converter_permute`: a file's Q/K rows in transformers' order."""
    return a.reshape(heads, a.shape[0] // heads // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def assert_groups_kept(lin: Int4Linear, rows: slice, want: np.ndarray) -> None:
    """The layer's dequantized ``rows`` equal ``want`` (the file's values) up to the bfloat16 rounding of
    each group's scale and zero point: |error| <= (8 |scale| + |zero|) / 2^8, far below the half step of
    quantizing again."""
    got = lin._dense(rows, torch.float32)  # (n, K)
    n, k = got.shape
    sz = lin.scale_zero[:, rows].float()  # (G, n, 2)
    bound = ((8 * sz[..., 0].abs() + sz[..., 1].abs()) / 256).t().unsqueeze(-1)  # (n, G, 1)
    err = (got - torch.from_numpy(want)).abs().view(n, k // GROUP, GROUP)
    assert bool((err <= bound).all()), float((err - bound).max())


@pytest.mark.parametrize("name", ["Q4_0", "Q4_1", "Q4_K"])
def test_groups_read_as_stored_equal_the_reference_dequantization(name):
    qtype, rng = Q[name], np.random.default_rng(0)
    a = rng.standard_normal((8, 512)).astype(np.float32) * 0.05
    raw = encode(qtype, a, rng)
    codes, scale, zero = int4_groups(torch.from_numpy(raw.reshape(-1)), int(qtype), (8, 512))
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 15 and codes.shape == (8, 512)
    assert scale.shape == zero.shape == (8, 512 // GROUP)
    values = (codes.float().view(8, -1, GROUP) - 8) * scale.unsqueeze(-1) + zero.unsqueeze(-1)
    torch.testing.assert_close(values.view(8, 512), torch.from_numpy(reference_dequantize(raw, qtype)),
                               rtol=1e-6, atol=1e-7)


@needs_kernel
@pytest.mark.parametrize("name", ["Q4_0", "Q4_1", "Q4_K"])
def test_llama_int4_layers_keep_the_stored_groups(tmp_path, name):
    """q|k|v fused from a 4-bit q and v and a float k (quantized here), the rows of q un-permuted: the
    stored groups come back within bfloat16 rounding; the float part within half a step."""
    qtype, rng = Q[name], np.random.default_rng(1)
    sd = llama_state(torch.Generator().manual_seed(0), hidden=HIDDEN, heads=4, kv=2, ffn=HIDDEN, layers=1)
    sd = {k: v * 0.05 for k, v in sd.items()}
    stored: dict[str, np.ndarray] = {}

    def enc(gname: str, a: np.ndarray):
        if a.ndim == 1 or gname in ("token_embd.weight", "blk.0.attn_k.weight"):
            return a
        raw = encode(qtype, a, rng)
        stored[gname] = reference_dequantize(raw, qtype)
        return raw, qtype

    path = write_gguf(tmp_path / "m.gguf", "llama", llama_to_gguf(sd, "llama", 4, 2, encode=enc),
                      llama_meta(hidden=HIDDEN, ffn=HIDDEN, layers=1))
    block = load(path, device="cpu", dtype="float32", quantize="int4").model.blocks[0]
    qkv = block.qkv
    assert isinstance(qkv, Int4Linear) and qkv.out_features == HIDDEN + 2 * 128
    assert np.array_equal(converter_permute(unpermuted(stored["blk.0.attn_q.weight"], 4), 4), stored["blk.0.attn_q.weight"])
    assert_groups_kept(qkv, slice(0, HIDDEN), unpermuted(stored["blk.0.attn_q.weight"], 4))  # transformers' rows
    assert_groups_kept(qkv, slice(HIDDEN + 128, None), stored["blk.0.attn_v.weight"])
    # k was stored as float32: quantized here, within half a step (plus rounding) of its values
    k_want = sd["model.layers.0.self_attn.k_proj.weight"]  # (128, K)
    k_got = qkv._dense(slice(HIDDEN, HIDDEN + 128), torch.float32)
    step = qkv.scale_zero[:, HIDDEN : HIDDEN + 128, 0].float().t().repeat_interleave(GROUP, dim=1)  # (128, K)
    assert bool(((k_got - k_want).abs() <= step * 0.5 + 1e-3 * float(k_want.abs().max())).all())
    for lin, gname in ((block.o, "blk.0.attn_output.weight"), (block.down, "blk.0.ffn_down.weight")):
        assert isinstance(lin, Int4Linear)
        assert_groups_kept(lin, slice(None), stored[gname])
    assert isinstance(block.gate_up, Int4Linear)
    assert_groups_kept(block.gate_up, slice(0, HIDDEN), stored["blk.0.ffn_gate.weight"])
    assert_groups_kept(block.gate_up, slice(HIDDEN, None), stored["blk.0.ffn_up.weight"])



@needs_kernel
def test_gemma3_int4_layers_keep_the_stored_groups_and_its_logits(tmp_path):
    """Gemma 3 with every layer weight in Q4_K: each int4 layer holds the file's groups, and the logits of
    the int4 model stay near those of the same file in float32 (bfloat16 activations and the int8 head
    are the difference)."""
    transformers = pytest.importorskip("transformers")  # noqa: F841
    from test_gemma3 import PROMPT, reference, write_gemma3_gguf

    ref = reference(2, hidden_size=HIDDEN, intermediate_size=HIDDEN, head_dim=64)  # q: 4 heads x 64 = 256
    rng = np.random.default_rng(3)
    stored: dict[str, np.ndarray] = {}

    def enc(gname: str, a: np.ndarray):
        raw = encode(Q.Q4_K, a, rng)
        stored[gname] = reference_dequantize(raw, Q.Q4_K)
        return raw, Q.Q4_K

    path = tmp_path / "gemma3-q4k.gguf"
    write_gemma3_gguf(path, ref, enc)
    int4 = load(path, device="cpu", dtype="float32", quantize="int4").model
    assert isinstance(int4.lm_head, Int8Linear)
    for i, b in enumerate(int4.blocks):
        for lin, gname in ((b.q, "attn_q"), (b.k, "attn_k"), (b.v, "attn_v"), (b.o, "attn_output"),
                           (b.gate, "ffn_gate"), (b.up, "ffn_up"), (b.down, "ffn_down")):
            assert isinstance(lin, Int4Linear), gname
            assert_groups_kept(lin, slice(None), stored[f"blk.{i}.{gname}.weight"])
    ids = torch.tensor([PROMPT])
    float32 = load(path, device="cpu", dtype="float32").model
    want, got = float32.forward(ids)[0], int4.forward(ids)[0]  # (V,) at the last position
    assert float((got - want).abs().max()) <= 0.05 * float(want.abs().max())
    assert torch.equal(got.argmax(-1), want.argmax(-1))
