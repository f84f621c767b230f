"""Gemma 3 text decoders (``gemma3_text``, e.g. Gemma 3 270M/1B) for inference, with a KV cache.

Where it differs from the Llama family (``llama.py``, whose rotary tables, cache and linear layers it reuses):

* token embeddings are multiplied by ``sqrt(hidden_size)`` (rounded to the weights' dtype first, as the
  reference does);
* every RMSNorm multiplies by ``1 + weight`` (transformers' names and values: a GGUF file stores
  ``1 + weight`` and its reader subtracts the 1 back); statistics in float32;
* queries and keys get their own RMSNorm over the head width (``q_norm``, ``k_norm``) before the rotation;
* "sandwich" norms: the attention output and the MLP output are each normed again before they join the
  residual stream (``post_attention_layernorm``, ``post_feedforward_layernorm``; the MLP input is normed
  by ``pre_feedforward_layernorm``);
* the MLP is ``down(gelu_tanh(gate(x)) * up(x))``;
* attention scores are scaled by ``query_pre_attn_scalar ** -0.5`` instead of ``head_dim ** -0.5``;
* layers alternate between sliding-window attention (a query sees the last ``sliding_window`` positions,
  itself included) with the local rope base ``rope_local_base_freq`` and full attention with the global
  base (and rope scaling, if any); by ``layer_types``, else every ``sliding_window_pattern``-th layer
  (default 6) is global;
* optional tanh soft-capping of the final logits (``final_logit_softcapping``). Soft-capping of the
  attention scores (Gemma 2) is refused: SDPA cannot apply it.

`forward` has the contract of the other models: ``T`` new tokens at positions ``start .. start+T-1``, with a
`KVCache` for earlier positions (it keeps every position; sliding layers mask the older ones), float32
logits of the last position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ...errors import ModelLoadError
from ..kernels import QUANTIZATIONS, LinearLike, make_linear
from .llama import (_ACTIVATIONS, KVCache, RopeSpec, _bad_config, _band_mask, _float, _int, _rms_norm, _rope,
                    _Rotary, config_bool, quantize_from_state)

__all__ = ["Gemma3Config", "Gemma3", "MODEL_TYPES"]

MODEL_TYPES = ("gemma3_text",)
_LAYER_TYPES = ("sliding_attention", "full_attention")


def _optional_float(cfg: Mapping[str, Any], key: str, source: str) -> float | None:
    if cfg.get(key) is None:
        return None
    return _float(cfg, key, source, 1.0)


def _layer_types(cfg: Mapping[str, Any], n_layer: int, source: str) -> tuple[str, ...]:
    types = cfg.get("layer_types")
    if types is None:
        pattern = _int(cfg, "sliding_window_pattern", source, 6)
        return tuple("sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n_layer))
    if not isinstance(types, (list, tuple)) or len(types) != n_layer or any(t not in _LAYER_TYPES for t in types):
        raise _bad_config(source, f"layer_types must list {n_layer} of {', '.join(_LAYER_TYPES)}")
    return tuple(types)


def _rope_specs(cfg: Mapping[str, Any], source: str) -> tuple[RopeSpec, RopeSpec]:
    """(global, local) rotary settings, from ``rope_parameters`` per layer type or the older keys
    ``rope_theta`` + ``rope_scaling`` (global) and ``rope_local_base_freq`` (local)."""
    params = cfg.get("rope_parameters")
    if isinstance(params, Mapping) and any(isinstance(v, Mapping) for v in params.values()):
        full, sliding = params.get("full_attention") or {}, params.get("sliding_attention") or {}
        if not isinstance(full, Mapping) or not isinstance(sliding, Mapping):
            raise _bad_config(source, "rope_parameters must map layer types to objects")
        glob = RopeSpec.from_hf({"rope_parameters": {"rope_theta": 1_000_000.0, **full}}, source)
        local = RopeSpec.from_hf({"rope_parameters": {"rope_theta": 10_000.0, **sliding}}, source)
    else:
        glob = RopeSpec.from_hf({"rope_theta": 1_000_000.0, **cfg}, source)
        base = _float(cfg, "rope_local_base_freq", source, 10_000.0)
        local = RopeSpec(kind="default", theta=base)
    if glob.kind == "dynamic" or local.kind == "dynamic":
        raise ModelLoadError(f"{source}: dynamic RoPE scaling is not supported for Gemma 3",
                             hint="use the model's own config.json")
    return glob, local


@dataclass(frozen=True)
class Gemma3Config:
    model_type: str  # "gemma3_text"
    vocab_size: int  # V
    n_layer: int  # L
    n_head: int  # H: query heads
    n_kv_head: int  # KVH: key/value heads; divides H
    n_embd: int  # C: model width (hidden_size)
    head_dim: int  # D
    intermediate_size: int  # I
    block_size: int  # P: context length (max_position_embeddings)
    max_position_embeddings: int
    rms_norm_eps: float
    rope: RopeSpec  # full-attention layers
    rope_local: RopeSpec  # sliding-window layers
    sliding_window: int  # W: positions a sliding layer sees, the query's own included
    layer_types: tuple[str, ...]  # per layer: "sliding_attention" | "full_attention"
    query_pre_attn_scalar: float
    hidden_act: str = "gelu_pytorch_tanh"
    final_logit_softcapping: float | None = None
    tie_word_embeddings: bool = True

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any], source: str = "config.json") -> "Gemma3Config":
        """Validate a ``gemma3_text`` config.json dict (or the same keys read from a GGUF file)."""
        mt = cfg.get("model_type")
        if mt not in MODEL_TYPES:
            raise _bad_config(source, f"model_type {mt!r} is not one of {', '.join(MODEL_TYPES)}")
        C = _int(cfg, "hidden_size", source)
        H = _int(cfg, "num_attention_heads", source)
        KVH = _int(cfg, "num_key_value_heads", source, H)
        if H % KVH:
            raise _bad_config(source, f"num_key_value_heads {KVH} does not divide num_attention_heads {H}")
        D = _int(cfg, "head_dim", source, 256)
        if D % 2:
            raise _bad_config(source, f"head_dim {D} must be even for rotary embeddings")
        act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
        if not isinstance(act, str) or act not in _ACTIVATIONS:
            raise ModelLoadError(f"{source}: hidden_activation {act!r} is not supported",
                                 hint=f"supported: {', '.join(_ACTIVATIONS)}")
        if cfg.get("attn_logit_softcapping") is not None:
            raise ModelLoadError(f"{source}: attention logit soft-capping is not supported",
                                 hint="Gemma 3 models do not use it; this config is of another variant")
        if config_bool(cfg, "use_bidirectional_attention", source, False):
            raise ModelLoadError(f"{source}: bidirectional attention is not supported",
                                 hint="use a causal (text-generation) Gemma 3 model")
        n_layer = _int(cfg, "num_hidden_layers", source)
        max_pos = _int(cfg, "max_position_embeddings", source, 131_072)
        glob, local = _rope_specs(cfg, source)
        return cls(
            model_type=mt,
            vocab_size=_int(cfg, "vocab_size", source),
            n_layer=n_layer,
            n_head=H,
            n_kv_head=KVH,
            n_embd=C,
            head_dim=D,
            intermediate_size=_int(cfg, "intermediate_size", source),
            block_size=max_pos,
            max_position_embeddings=max_pos,
            rms_norm_eps=_float(cfg, "rms_norm_eps", source, 1e-6),
            rope=glob,
            rope_local=local,
            sliding_window=_int(cfg, "sliding_window", source, 4096),
            layer_types=_layer_types(cfg, n_layer, source),
            query_pre_attn_scalar=_float(cfg, "query_pre_attn_scalar", source, 256.0),
            hidden_act=act,
            final_logit_softcapping=_optional_float(cfg, "final_logit_softcapping", source),
            tie_word_embeddings=config_bool(cfg, "tie_word_embeddings", source, True),
        )

    @property
    def rope_theta(self) -> float:
        return self.rope.theta

    @property
    def rope_type(self) -> str:
        return self.rope.kind

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the model needs, by its transformers name, with its shape (lm_head only if untied)."""
        V, C, H, KVH, D, I = self.vocab_size, self.n_embd, self.n_head, self.n_kv_head, self.head_dim, self.intermediate_size
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (V, C), "model.norm.weight": (C,)}
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (V, C)
        for i in range(self.n_layer):
            p = f"model.layers.{i}."
            for norm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                         "post_feedforward_layernorm"):
                shapes[p + norm + ".weight"] = (C,)
            shapes[p + "self_attn.q_norm.weight"] = (D,)
            shapes[p + "self_attn.k_norm.weight"] = (D,)
            shapes[p + "self_attn.q_proj.weight"] = (H * D, C)
            shapes[p + "self_attn.k_proj.weight"] = (KVH * D, C)
            shapes[p + "self_attn.v_proj.weight"] = (KVH * D, C)
            shapes[p + "self_attn.o_proj.weight"] = (C, H * D)
            shapes[p + "mlp.gate_proj.weight"] = (I, C)
            shapes[p + "mlp.up_proj.weight"] = (I, C)
            shapes[p + "mlp.down_proj.weight"] = (C, I)
        return shapes

    @property
    def num_parameters(self) -> int:
        """Parameters stored, the tied head counted once."""
        return sum(math.prod(s) for s in self.tensor_shapes().values())


def _norm(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """Gemma's RMSNorm with ``scale = 1 + weight`` precomputed in float32: statistics in float32, the
    result in x's dtype (the reference computes the same products in the same order). The Llama family's
    written-out RMSNorm gives the bits of ``F.rms_norm`` on the float32 input, rounded once, in 6 calls
    instead of about 13 (Gemma 3 270M normalizes 109 times per token: 8-11 ms of a token on 2 vCPUs)."""
    return _rms_norm(x, scale, eps)


class _Block:
    __slots__ = ("ln_in", "ln_post_attn", "ln_pre_ffw", "ln_post_ffw", "q_norm", "k_norm",
                 "q", "k", "v", "o", "gate", "up", "down", "sliding")

    def __init__(self, take: Any, linear: Any, norm_scale: Any, p: str, sliding: bool) -> None:
        self.ln_in = norm_scale(p + "input_layernorm.weight")  # (C,) float32: 1 + weight
        self.ln_post_attn = norm_scale(p + "post_attention_layernorm.weight")
        self.ln_pre_ffw = norm_scale(p + "pre_feedforward_layernorm.weight")
        self.ln_post_ffw = norm_scale(p + "post_feedforward_layernorm.weight")
        self.q_norm = norm_scale(p + "self_attn.q_norm.weight")  # (D,)
        self.k_norm = norm_scale(p + "self_attn.k_norm.weight")  # (D,)
        self.q = linear(p + "self_attn.q_proj.weight")  # (H·D, C)
        self.k = linear(p + "self_attn.k_proj.weight")  # (KVH·D, C)
        self.v = linear(p + "self_attn.v_proj.weight")  # (KVH·D, C)
        self.o = linear(p + "self_attn.o_proj.weight")  # (C, H·D)
        self.gate = linear(p + "mlp.gate_proj.weight")  # (I, C)
        self.up = linear(p + "mlp.up_proj.weight")  # (I, C)
        self.down = linear(p + "mlp.down_proj.weight")  # (C, I)
        self.sliding = sliding


class Gemma3:
    """Inference-only Gemma 3 text decoder, built from a state dict with transformers' names and values
    (validated against `Gemma3Config.tensor_shapes`), tensors already in the dtype and on the device to run
    on. ``quantize`` ("int8"/"int4") makes the linear layers weight-only quantized as for Llama
    (``engine/kernels/``); a tied head stays int8 with int4 layers."""

    architecture = "gemma3_text"

    def __init__(self, config: Gemma3Config, state_dict: Mapping[str, torch.Tensor], *,
                 quantize: str | None = None, consume: bool = False) -> None:
        if quantize not in QUANTIZATIONS:
            raise ValueError(f"unknown quantization {quantize!r}; expected one of {QUANTIZATIONS}")
        sd = state_dict

        def take(name: str) -> torch.Tensor:
            return sd.pop(name) if consume and isinstance(sd, dict) else sd[name]

        def norm_scale(name: str) -> torch.Tensor:
            return 1.0 + take(name).float()  # (N,) float32, as the reference computes it on every call

        norm = take("model.norm.weight")  # (C,)
        dtype, device = norm.dtype, norm.device
        config_shapes = config.tensor_shapes()

        def linear(name: str, q: str | None = quantize) -> LinearLike:
            if q is not None and hasattr(sd, "row_blocks"):  # a lazy state: quantized block by block
                return quantize_from_state(sd, [name], [config_shapes[name]], q, None, dtype, device)
            return make_linear(take(name), None, quantize=q, dtype=dtype)

        self.config = config
        self.architecture = config.model_type
        self.quantization = quantize
        self._dtype, self._device = dtype, device
        self.norm = 1.0 + norm.float()  # (C,) float32
        head_quantize = "int8" if quantize == "int4" else quantize
        if config.tie_word_embeddings:
            self.lm_head = linear("model.embed_tokens.weight", head_quantize)  # (V, C), also the embedding
            self._embed: torch.Tensor | None = None
        else:
            self.lm_head = linear("lm_head.weight", head_quantize)
            self._embed = take("model.embed_tokens.weight")  # (V, C)
        self.blocks = [_Block(take, linear, norm_scale, f"model.layers.{i}.", t == "sliding_attention")
                       for i, t in enumerate(config.layer_types)]
        # sqrt(C) as a float32 scalar rounded to the weights' dtype (the reference's embed_scale buffer).
        self.embed_scale = torch.tensor(config.n_embd**0.5, dtype=torch.float32).to(dtype)
        self.act = _ACTIVATIONS[config.hidden_act]
        self.rotary = _Rotary(config.rope, config.head_dim, config.max_position_embeddings, device)
        self.rotary_local = _Rotary(config.rope_local, config.head_dim, config.max_position_embeddings, device)
        self.scale = config.query_pre_attn_scalar**-0.5
        self.gqa = config.n_kv_head != config.n_head

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def weight_bytes(self) -> int:
        """Bytes of every weight the model holds."""
        layers = [self.lm_head] + [lin for b in self.blocks for lin in (b.q, b.k, b.v, b.o, b.gate, b.up, b.down)]
        n = sum(lin.nbytes for lin in layers)
        n += self.norm.numel() * 4 + sum(4 * t.numel() for b in self.blocks for t in (
            b.ln_in, b.ln_post_attn, b.ln_pre_ffw, b.ln_post_ffw, b.q_norm, b.k_norm))
        if self._embed is not None:
            n += self._embed.numel() * self._embed.element_size()
        return n

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Scaled token embeddings (B, T, C) of ``ids`` (B, T)."""
        rows = self.lm_head.rows(ids) if self._embed is None else self._embed[ids]
        return rows * self.embed_scale

    def new_cache(self, max_len: int, batch: int = 1) -> KVCache:
        c = self.config
        return KVCache(c.n_layer, c.n_kv_head, c.head_dim, min(max_len, c.block_size), batch,
                       dtype=self.dtype, device=self.device)

    def forward(self, ids: torch.Tensor, start: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        """Float32 logits of the last position, (B, V), for ``ids`` (B, T) at positions start..start+T-1."""
        cfg = self.config
        B, T = ids.shape
        end = start + T
        if end > cfg.block_size:
            raise ValueError(f"positions {start}..{end - 1} exceed the context length {cfg.block_size}")
        if cache is None and start != 0:
            raise ValueError("a forward without a cache must start at position 0")
        H, KVH, D, eps, W = cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.rms_norm_eps, cfg.sliding_window

        x = self.embed(ids)  # (B, T, C)
        tables = {}
        for sliding, rot in ((False, self.rotary), (True, self.rotary_local)):
            cos, sin = rot.cos_sin(start, end, x.dtype)  # (T, D) each
            tables[sliding] = (cos.unsqueeze(1), sin.unsqueeze(1))  # (T, 1, D)
        # SDPA boolean masks (True = may attend), (T, end): key j is visible to the query at position i
        # when j <= i, and for sliding layers also i - j < W.
        causal = torch.ones(T, end, dtype=torch.bool, device=ids.device).tril_(start)  # (T, end)
        masks = {False: causal, True: _band_mask(start, end, W, ids.device)}
        if T == 1:
            masks[False] = None  # one new token sees every cached position
        if end <= W:
            masks[True] = masks[False]
        for i, blk in enumerate(self.blocks):
            cos, sin = tables[blk.sliding]
            h = _norm(x, blk.ln_in, eps)  # (B, T, C)
            q = _norm(blk.q(h).view(B, T, H, D), blk.q_norm, eps)  # (B, T, H, D)
            k = _norm(blk.k(h).view(B, T, KVH, D), blk.k_norm, eps)  # (B, T, KVH, D)
            q = _rope(q, cos, sin).transpose(1, 2)  # (B, H, T, D)
            k = _rope(k, cos, sin).transpose(1, 2)  # (B, KVH, T, D)
            v = blk.v(h).view(B, T, KVH, D).transpose(1, 2)  # (B, KVH, T, D)
            if cache is not None:
                k, v = cache.update(i, start, k, v)  # (B, KVH, end, D)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=masks[blk.sliding], scale=self.scale,
                                               enable_gqa=self.gqa)  # (B, H, T, D)
            o = blk.o(o.transpose(1, 2).reshape(B, T, H * D))  # (B, T, C)
            x = x + _norm(o, blk.ln_post_attn, eps)
            h = _norm(x, blk.ln_pre_ffw, eps)
            m = blk.down(self.act(blk.gate(h)) * blk.up(h))  # (B, T, C)
            x = x + _norm(m, blk.ln_post_ffw, eps)
        last = _norm(x[:, -1:, :], self.norm, eps)  # (B, 1, C)
        logits = self.lm_head(last)[:, 0].float()  # (B, V)
        cap = cfg.final_logit_softcapping
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits
