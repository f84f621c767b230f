"""llmbuilder's GPT (``llmbuilder.model.gpt.GPTModel``), bit-faithful in float32, with a KV cache.

The architecture is fixed by llmbuilder 2.0.0 (see the format reference): pre-LayerNorm blocks with eps
1e-5, a fused bias-free q|k|v projection split in that order, head-major channels, attention scores
multiplied by 1/sqrt(D) after the matmul, exact (erf) GELU, learned absolute positions, and an output
head tied to the token embedding. Every dropout is identity at inference.

`forward` runs ``T`` new tokens at absolute positions ``start .. start+T-1``. With a `KVCache` the keys
and values of earlier positions come from the cache; without one (``cache=None``) the call is a plain
full forward of a window starting at position 0, which is what llmbuilder does once the running
sequence is longer than the block size (the caller handles that policy, see ``engine/generate.py``).
Only the logits of the last position are computed. `decode_step` runs one new token of each of several
sequences at their own positions, each with its own cache, and `prefill` the new tokens of several
sequences packed into one (see ``engine/batching.py``). Products are ``F.linear`` except several bfloat16
rows on a CPU without bfloat16 instructions (``kernels.dense.linear``: float32 products over weight blocks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..kernels.dense import linear
from ..limits import check_cache
from ..prefill import packed_layout

__all__ = ["GPTConfig", "KVCache", "LLMBuilderGPT"]

LAYER_NORM_EPS = 1e-5  # llmbuilder ignores ModelConfig.layer_norm_eps: always 1e-5


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int  # V: rows of the token embedding
    n_layer: int  # L: transformer blocks
    n_head: int  # H: attention heads; must divide n_embd
    n_embd: int  # C: model width
    block_size: int  # P: context length = rows of the position embedding

    @property
    def head_dim(self) -> int:  # D = C / H
        return self.n_embd // self.n_head

    @property
    def num_parameters(self) -> int:
        """Parameter count with the tied head counted once: V·C + P·C + L·(12C² + 10C) + 2C."""
        c = self.n_embd
        return self.vocab_size * c + self.block_size * c + self.n_layer * (12 * c * c + 10 * c) + 2 * c


class KVCache:
    """Keys and values of every layer for one sequence, preallocated to ``max_len`` positions.

    ``k`` and ``v`` are (L, B, H, max_len, D). ``update`` writes positions ``start .. start+T-1`` of one
    layer and returns the views of positions ``0 .. start+T-1`` that attention reads.
    """

    def __init__(
        self, config: GPTConfig, max_len: int, batch: int = 1, *, dtype: torch.dtype, device: torch.device
    ) -> None:
        shape = (config.n_layer, batch, config.n_head, max_len, config.head_dim)
        check_cache(shape, dtype)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, H, S, D)
        self.v = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, H, S, D)
        self.max_len = max_len

    def update(
        self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + k.shape[2]  # k, v: (B, H, T, D)
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # (B, H, end, D)


class _Block:
    """Weights of one transformer block (plain tensors; no nn.Module bookkeeping per call)."""

    __slots__ = ("ln1_w", "ln1_b", "qkv_w", "out_w", "out_b", "ln2_w", "ln2_b", "fc1_w", "fc1_b", "fc2_w", "fc2_b")

    def __init__(self, sd: dict[str, torch.Tensor], prefix: str) -> None:
        self.ln1_w = sd[prefix + "ln1.weight"]  # (C,)
        self.ln1_b = sd[prefix + "ln1.bias"]  # (C,)
        self.qkv_w = sd[prefix + "attn.qkv_proj.weight"]  # (3C, C), rows: q | k | v
        self.out_w = sd[prefix + "attn.out_proj.weight"]  # (C, C)
        self.out_b = sd[prefix + "attn.out_proj.bias"]  # (C,)
        self.ln2_w = sd[prefix + "ln2.weight"]  # (C,)
        self.ln2_b = sd[prefix + "ln2.bias"]  # (C,)
        self.fc1_w = sd[prefix + "mlp.fc1.weight"]  # (4C, C)
        self.fc1_b = sd[prefix + "mlp.fc1.bias"]  # (4C,)
        self.fc2_w = sd[prefix + "mlp.fc2.weight"]  # (C, 4C)
        self.fc2_b = sd[prefix + "mlp.fc2.bias"]  # (C,)


class LLMBuilderGPT:
    """Inference-only llmbuilder GPT. Build it from a validated float state dict (see engine/formats/llmbuilder.py)."""

    architecture = "llmbuilder-gpt"
    batched_decode = True  # `decode_step` runs one token of several sequences at once

    def __init__(self, config: GPTConfig, state_dict: dict[str, torch.Tensor]) -> None:
        self.config = config
        self.tok_emb = state_dict["token_embedding.weight"]  # (V, C), also the output head
        self.pos_emb = state_dict["position_embedding.weight"]  # (P, C)
        self.lm_head = state_dict.get("lm_head.weight", self.tok_emb)  # (V, C)
        self.ln_f_w = state_dict["ln_f.weight"]  # (C,)
        self.ln_f_b = state_dict["ln_f.bias"]  # (C,)
        self.blocks = [_Block(state_dict, f"blocks.{i}.") for i in range(config.n_layer)]
        self.scale = 1.0 / math.sqrt(config.head_dim)

    @property
    def device(self) -> torch.device:
        return self.tok_emb.device

    @property
    def dtype(self) -> torch.dtype:
        return self.tok_emb.dtype

    def new_cache(self, max_len: int, batch: int = 1) -> KVCache:
        return KVCache(self.config, min(max_len, self.config.block_size), batch, dtype=self.dtype, device=self.device)

    def forward(self, ids: torch.Tensor, start: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        """Logits of the last position, (B, V), for ``ids`` (B, T) placed at positions start..start+T-1."""
        cfg = self.config
        B, T = ids.shape
        end = start + T
        if end > cfg.block_size:
            raise ValueError(f"positions {start}..{end - 1} exceed the block size {cfg.block_size}")
        if cache is None and start != 0:
            raise ValueError("a forward without a cache must start at position 0")
        H, D, C = cfg.n_head, cfg.head_dim, cfg.n_embd

        x = self.tok_emb[ids] + self.pos_emb[start:end]  # (B, T, C)
        mask = None
        if T > 1:
            # Query t (absolute start+t) may see keys u <= start+t.  (T, end), True = hidden
            mask = torch.ones(T, end, dtype=torch.bool, device=ids.device).triu_(start + 1)
        for i, blk in enumerate(self.blocks):
            h = F.layer_norm(x, (C,), blk.ln1_w, blk.ln1_b, LAYER_NORM_EPS)  # (B, T, C)
            qkv = linear(h, blk.qkv_w)  # (B, T, 3C)
            q, k, v = qkv.split(C, dim=2)  # each (B, T, C)
            q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
            k = k.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
            v = v.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
            if cache is not None:
                k, v = cache.update(i, start, k, v)  # (B, H, end, D)
            att = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, T, end)
            if mask is not None:
                att = att.masked_fill(mask, float("-inf"))
            att = torch.softmax(att, dim=-1)
            o = (att @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C), head-major channels
            x = x + linear(o, blk.out_w, blk.out_b)
            h = F.layer_norm(x, (C,), blk.ln2_w, blk.ln2_b, LAYER_NORM_EPS)
            x = x + linear(F.gelu(linear(h, blk.fc1_w, blk.fc1_b)), blk.fc2_w, blk.fc2_b)  # exact GELU
        last = F.layer_norm(x[:, -1, :], (C,), self.ln_f_w, self.ln_f_b, LAYER_NORM_EPS)  # (B, C)
        return linear(last, self.lm_head)  # (B, V)

    def decode_step(self, ids: torch.Tensor, positions: list[int], caches: list[KVCache]) -> torch.Tensor:
        """Logits (B, V) of one new token per sequence: ``ids`` (B,), row b at position ``positions[b]``
        with the keys and values of its earlier positions in ``caches[b]`` (a batch-1 cache each).

        The linear layers run on all rows at once (the weights are read once per step); attention runs
        per row on that row's cache, the same arithmetic as a one-sequence step."""
        cfg = self.config
        (B,) = ids.shape
        if max(positions) >= cfg.block_size:
            raise ValueError(f"position {max(positions)} exceeds the block size {cfg.block_size}")
        H, D, C = cfg.n_head, cfg.head_dim, cfg.n_embd
        pos = torch.tensor(positions, dtype=torch.long, device=ids.device)  # (B,)
        x = (self.tok_emb[ids] + self.pos_emb[pos]).unsqueeze(1)  # (B, 1, C)
        for i, blk in enumerate(self.blocks):
            h = F.layer_norm(x, (C,), blk.ln1_w, blk.ln1_b, LAYER_NORM_EPS)  # (B, 1, C)
            q, k, v = linear(h, blk.qkv_w).split(C, dim=2)  # each (B, 1, C)
            q = q.view(B, 1, H, D).transpose(1, 2)  # (B, H, 1, D)
            k = k.view(B, 1, H, D).transpose(1, 2)  # (B, H, 1, D)
            v = v.view(B, 1, H, D).transpose(1, 2)  # (B, H, 1, D)
            rows = []
            for b, (start, cache) in enumerate(zip(positions, caches)):
                kb, vb = cache.update(i, start, k[b : b + 1], v[b : b + 1])  # (1, H, start+1, D)
                att = torch.softmax((q[b : b + 1] @ kb.transpose(-2, -1)) * self.scale, dim=-1)  # (1, H, 1, start+1)
                rows.append(att @ vb)  # (1, H, 1, D)
            o = torch.cat(rows).transpose(1, 2).reshape(B, 1, C)  # (B, 1, C)
            x = x + linear(o, blk.out_w, blk.out_b)
            h = F.layer_norm(x, (C,), blk.ln2_w, blk.ln2_b, LAYER_NORM_EPS)
            x = x + linear(F.gelu(linear(h, blk.fc1_w, blk.fc1_b)), blk.fc2_w, blk.fc2_b)
        last = F.layer_norm(x[:, -1, :], (C,), self.ln_f_w, self.ln_f_b, LAYER_NORM_EPS)  # (B, C)
        return linear(last, self.lm_head)  # (B, V)

    def row_products(self) -> list[tuple[Callable[[torch.Tensor], torch.Tensor], int]]:
        """The linear layers of one block with their input widths: what `prefill` runs on packed rows
        (``engine/prefill.py`` probes which row counts they compute exactly as a larger product does)."""
        blk, C = self.blocks[0], self.config.n_embd
        return [(lambda h: linear(h, blk.qkv_w), C), (lambda h: linear(h, blk.out_w, blk.out_b), C),
                (lambda h: linear(h, blk.fc1_w, blk.fc1_b), C), (lambda h: linear(h, blk.fc2_w, blk.fc2_b), 4 * C)]

    def prefill(self, ids: list[torch.Tensor], starts: list[int], caches: list[KVCache]) -> torch.Tensor:
        """Logits (S, V) of the last position of each of S sequences, their new tokens run as one packed
        sequence: ``ids[s]`` (T_s,) at positions ``starts[s] .. starts[s]+T_s-1`` (each token its own learned
        position), earlier positions in ``caches[s]``, where its own keys and values are written.

        Norms, linear layers and the MLP run on the packed (1, ΣT) rows; attention runs per sequence on its
        own cache with the arithmetic `forward` uses for it alone, and the head on each last row alone, so the
        results are bit-identical to `forward` whenever the linear layers compute a sequence's rows as they
        do alone (see ``engine/prefill.py``)."""
        cfg = self.config
        dev = self.device
        lengths, ends, offsets, pos = packed_layout(ids, starts, cfg.block_size, "block size", dev)
        H, D, C = cfg.n_head, cfg.head_dim, cfg.n_embd
        N = sum(lengths)
        x = (self.tok_emb[torch.cat(ids)] + self.pos_emb[pos]).unsqueeze(0)  # (1, N, C)
        # As `forward`: query t (absolute start+t) may see keys u <= start+t.  (T_s, end_s), True = hidden
        masks = [torch.ones(n, e, dtype=torch.bool, device=dev).triu_(s + 1) if n > 1 else None
                 for s, e, n in zip(starts, ends, lengths)]
        for i, blk in enumerate(self.blocks):
            h = F.layer_norm(x, (C,), blk.ln1_w, blk.ln1_b, LAYER_NORM_EPS)  # (1, N, C)
            q, k, v = linear(h, blk.qkv_w).split(C, dim=2)  # each (1, N, C)
            q = q.view(1, N, H, D).transpose(1, 2)  # (1, H, N, D)
            k = k.view(1, N, H, D).transpose(1, 2)  # (1, H, N, D)
            v = v.view(1, N, H, D).transpose(1, 2)  # (1, H, N, D)
            rows = []
            for off, n, start, cache, mask in zip(offsets, lengths, starts, caches, masks):
                kb, vb = cache.update(i, start, k[:, :, off : off + n], v[:, :, off : off + n])  # (1, H, end, D)
                att = (q[:, :, off : off + n] @ kb.transpose(-2, -1)) * self.scale  # (1, H, T_s, end)
                if mask is not None:
                    att = att.masked_fill(mask, float("-inf"))
                rows.append(torch.softmax(att, dim=-1) @ vb)  # (1, H, T_s, D)
            o = torch.cat(rows, dim=2).transpose(1, 2).reshape(1, N, C)  # (1, N, C), head-major channels
            x = x + linear(o, blk.out_w, blk.out_b)
            h = F.layer_norm(x, (C,), blk.ln2_w, blk.ln2_b, LAYER_NORM_EPS)
            x = x + linear(F.gelu(linear(h, blk.fc1_w, blk.fc1_b)), blk.fc2_w, blk.fc2_b)  # exact GELU
        last = [F.layer_norm(x[:, off + n - 1, :], (C,), self.ln_f_w, self.ln_f_b, LAYER_NORM_EPS)
                for off, n in zip(offsets, lengths)]  # (1, C) each
        return torch.cat([linear(h, self.lm_head) for h in last])  # (S, V)
