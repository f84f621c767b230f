"""The Llama family of decoders (Llama, SmolLM/SmolLM2, TinyLlama, Mistral, Qwen2) for inference, with a KV cache.

One class covers them all; they differ only in configuration:

* pre-RMSNorm blocks (statistics in float32, as in the reference implementation), a SwiGLU MLP
  ``down(act(gate(x)) * up(x))``, a final RMSNorm and an output head that may be tied to the embedding;
* grouped-query attention: ``num_key_value_heads`` (KVH) key/value heads shared by H query heads, each of
  width ``head_dim`` (D, given or C / H); projection biases on q/k/v (Qwen2; Llama's ``attention_bias`` adds
  one to the output projection too) and optional MLP biases (``mlp_bias``);
* rotary position embeddings in the "rotate half" layout, base ``rope_theta``, optionally rescaled by
  ``rope_scaling`` of type ``linear`` (positions divided by ``factor``), ``dynamic`` (NTK: the base grows
  with the sequence once it passes ``max_position_embeddings``), ``llama3`` (Llama 3.1's per-frequency
  blend) or ``yarn`` (frequency ramp plus an attention factor on cos/sin). Other types are refused.

Context length (``block_size``): ``max_position_embeddings``; for ``dynamic`` RoPE, whose only purpose is
to run past the trained length, that times ``factor``. Mistral's (and Qwen2's, when switched on) sliding
window attention is not implemented: the context is capped at ``sliding_window`` instead, so attention
never reaches past the window and plain causal attention is exact.

`forward` runs ``T`` new tokens at absolute positions ``start .. start+T-1`` with the same contract as
``llmbuilder_gpt.py``: with a `KVCache` earlier positions come from the cache, without one the call is a
full forward from position 0; only the last position's logits are computed, returned in float32.
Attention is ``torch.nn.functional.scaled_dot_product_attention`` (the kernel transformers uses by default,
so float32 results match it closely).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from ...errors import ModelLoadError

__all__ = ["LlamaConfig", "KVCache", "Llama", "ROPE_TYPES", "MODEL_TYPES"]

MODEL_TYPES = ("llama", "mistral", "qwen2")
ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")

# Defaults of the reference configuration classes, for keys a config.json leaves out.
_DEFAULT_CONTEXT = {"llama": 2048, "mistral": 4096 * 32, "qwen2": 32768}
_DEFAULT_KV_HEADS = {"mistral": 8}  # others: as many as the query heads

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "swish": F.silu,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


def _bad_config(source: str, what: str) -> ModelLoadError:
    return ModelLoadError(f"{source}: {what}", hint="the model's config.json is damaged or of an unsupported variant")


def _int(cfg: Mapping[str, Any], key: str, source: str, default: int | None = None) -> int:
    value = cfg.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise _bad_config(source, f"{key} must be a whole number > 0 (got {value!r})")
    return value


def _float(cfg: Mapping[str, Any], key: str, source: str, default: float) -> float:
    value = cfg.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise _bad_config(source, f"{key} must be a positive number (got {value!r})")
    return float(value)


# --------------------------------------------------------------------------------------------- rope
@dataclass(frozen=True)
class RopeSpec:
    """Rotary embedding settings: ``kind`` in ROPE_TYPES, the base, and the scaling parameters."""

    kind: str
    theta: float
    params: Mapping[str, Any] = field(default_factory=dict)  # factor, low_freq_factor, beta_fast, ...

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any], source: str) -> "RopeSpec":
        """Read both spellings: ``rope_theta`` + ``rope_scaling`` (older files, GGUF) and ``rope_parameters``."""
        params = cfg.get("rope_parameters")
        scaling = cfg.get("rope_scaling")
        merged: dict[str, Any] = {}
        for part in (scaling, params):
            if part is None:
                continue
            if not isinstance(part, Mapping):
                raise _bad_config(source, f"rope settings must be an object (got {part!r})")
            if any(isinstance(v, Mapping) for v in part.values()):
                raise ModelLoadError(
                    f"{source}: per-layer RoPE settings are not supported",
                    hint=f"supported RoPE types: {', '.join(ROPE_TYPES)}",
                )
            merged.update(part)
        kind = merged.get("rope_type", merged.get("type")) or "default"
        if kind not in ROPE_TYPES:
            raise ModelLoadError(
                f"{source}: RoPE scaling type {kind!r} is not supported",
                hint=f"supported RoPE types: {', '.join(ROPE_TYPES)}",
            )
        theta = merged.get("rope_theta", cfg.get("rope_theta"))
        theta = _float({"rope_theta": theta}, "rope_theta", source, 10000.0)
        prf = merged.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
        if prf not in (None, 1, 1.0):
            raise ModelLoadError(f"{source}: partial rotary embeddings (partial_rotary_factor {prf}) are not supported",
                                 hint="only models that rotate the whole head are supported")
        if kind != "default" and not (kind == "yarn" and merged.get("factor") is None):
            if merged.get("factor") is None:
                raise _bad_config(source, f"{kind} RoPE scaling needs a factor")
            _float(merged, "factor", source, 1.0)
        if kind in ("llama3", "yarn") and cfg.get("original_max_position_embeddings") is not None:
            # A top-level value overrides the one in the rope settings (as transformers does).
            merged["original_max_position_embeddings"] = cfg["original_max_position_embeddings"]
        if kind == "llama3":
            for key in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
                if merged.get(key) is None:
                    raise _bad_config(source, f"llama3 RoPE scaling needs {key}")
        return cls(kind=kind, theta=theta, params={k: v for k, v in merged.items() if k not in ("rope_theta",)})


def rope_frequencies(spec: RopeSpec, dim: int, max_pos: int, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (dim/2,) in float32 and the cos/sin scale for ``spec``.

    ``seq_len`` matters only for ``dynamic``: the base is enlarged for sequences longer than ``max_pos``.
    """
    exponents = torch.arange(0, dim, 2, dtype=torch.float32) / dim  # (D/2,)
    base = spec.theta
    p = spec.params
    if spec.kind == "dynamic" and seq_len is not None and seq_len > max_pos:
        # The enlarged base, computed in float32 like the reference does while generating.
        factor = float(p["factor"])
        n = torch.tensor(float(seq_len))
        base = base * ((factor * n / max_pos) - (factor - 1)) ** (dim / (dim - 2))
    inv = 1.0 / (base**exponents)  # (D/2,)
    scale = 1.0
    if spec.kind == "linear":
        inv = inv / float(p["factor"])
    elif spec.kind == "llama3":
        factor = float(p["factor"])
        low, high = float(p["low_freq_factor"]), float(p["high_freq_factor"])
        old_ctx = float(p["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        # Long wavelengths are interpolated by the factor, short ones kept, the middle band blended.
        scaled = torch.where(wavelen > old_ctx / low, inv / factor, inv)
        smooth = (old_ctx / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        middle = (wavelen >= old_ctx / high) & (wavelen <= old_ctx / low)
        inv = torch.where(middle, blended, scaled)
    elif spec.kind == "yarn":
        orig = int(p.get("original_max_position_embeddings") or max_pos)
        factor = p.get("factor")
        factor = float(factor) if factor is not None else max_pos / orig

        def mscale(s: float, m: float = 1.0) -> float:
            return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0

        scale = p.get("attention_factor")
        if scale is None:
            ms, ms_all = p.get("mscale"), p.get("mscale_all_dim")
            scale = mscale(factor, ms) / mscale(factor, ms_all) if ms and ms_all else mscale(factor)
        scale = float(scale)
        beta_fast, beta_slow = float(p.get("beta_fast") or 32), float(p.get("beta_slow") or 1)

        def dim_for(rotations: float) -> float:  # the dimension whose wavelength fits `rotations` times
            return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(spec.theta))

        lo, hi = dim_for(beta_fast), dim_for(beta_slow)
        if p.get("truncate", True):
            lo, hi = math.floor(lo), math.ceil(hi)
        lo, hi = max(lo, 0), min(hi, dim - 1)
        if lo == hi:
            hi += 0.001
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - lo) / (hi - lo)).clamp(0, 1)  # (D/2,)
        keep = 1 - ramp  # 1: extrapolate (high frequencies), 0: interpolate
        powers = spec.theta**exponents
        inv = (1.0 / (factor * powers)) * (1 - keep) + (1.0 / powers) * keep
    return inv, scale


class _Rotary:
    """cos/sin tables for a range of positions; for ``dynamic`` RoPE it keeps the reference's state (the
    frequencies grow with the longest sequence seen and reset once a sequence fits the trained length)."""

    def __init__(self, spec: RopeSpec, dim: int, max_pos: int, device: torch.device) -> None:
        self.spec, self.dim, self.max_pos, self.device = spec, dim, max_pos, device
        inv, self.scale = rope_frequencies(spec, dim, max_pos)
        self.inv_freq = self.original = inv.to(device)  # (D/2,) float32
        self.longest = max_pos

    def _update_dynamic(self, seq_len: int) -> None:
        if seq_len > self.longest:
            self.inv_freq = rope_frequencies(self.spec, self.dim, self.max_pos, seq_len)[0].to(self.device)
            self.longest = seq_len
        if seq_len < self.max_pos < self.longest:
            self.inv_freq, self.longest = self.original, self.max_pos

    def cos_sin(self, start: int, end: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if self.spec.kind == "dynamic":
            self._update_dynamic(end)
        pos = torch.arange(start, end, device=self.device, dtype=torch.float32)  # (T,)
        freqs = pos[:, None] * self.inv_freq[None, :]  # (T, D/2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (T, D)
        cos, sin = angles.cos(), angles.sin()
        if self.scale != 1.0:
            cos, sin = cos * self.scale, sin * self.scale
        return cos.to(dtype), sin.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm with the statistics in float32 and the result cast back before the weight."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


# ------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class LlamaConfig:
    model_type: str  # "llama" | "mistral" | "qwen2"
    vocab_size: int  # V
    n_layer: int  # L
    n_head: int  # H: query heads
    n_kv_head: int  # KVH: key/value heads; divides H
    n_embd: int  # C: model width (hidden_size)
    head_dim: int  # D: width of one head (H·D need not equal C)
    intermediate_size: int  # I: width of the SwiGLU MLP
    block_size: int  # P: context length (see the module docstring)
    max_position_embeddings: int  # the trained context the RoPE scaling refers to
    rms_norm_eps: float
    rope: RopeSpec
    hidden_act: str = "silu"
    qkv_bias: bool = False  # biases on q/k/v (Qwen2; Llama with attention_bias)
    o_bias: bool = False  # bias on the output projection (Llama with attention_bias)
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    sliding_window: int | None = None  # when set, block_size is capped at it

    @property
    def rope_theta(self) -> float:
        return self.rope.theta

    @property
    def rope_type(self) -> str:
        return self.rope.kind

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any], source: str = "config.json") -> "LlamaConfig":
        """Validate an HF ``config.json`` dict (or the same keys read from a GGUF file)."""
        mt = cfg.get("model_type")
        if mt not in MODEL_TYPES:
            raise _bad_config(source, f"model_type {mt!r} is not one of {', '.join(MODEL_TYPES)}")
        C = _int(cfg, "hidden_size", source)
        H = _int(cfg, "num_attention_heads", source)
        KVH = _int(cfg, "num_key_value_heads", source, _DEFAULT_KV_HEADS.get(mt, H))
        if H % KVH:
            raise _bad_config(source, f"num_key_value_heads {KVH} does not divide num_attention_heads {H}")
        if cfg.get("head_dim") is None and C % H:
            raise _bad_config(source, f"num_attention_heads {H} does not divide hidden_size {C} and no head_dim is given")
        D = _int(cfg, "head_dim", source, C // H)
        if D % 2:
            raise _bad_config(source, f"head_dim {D} must be even for rotary embeddings")
        act = cfg.get("hidden_act", "silu")
        if act not in _ACTIVATIONS:
            raise ModelLoadError(f"{source}: hidden_act {act!r} is not supported",
                                 hint=f"supported: {', '.join(_ACTIVATIONS)}")
        max_pos = _int(cfg, "max_position_embeddings", source, _DEFAULT_CONTEXT[mt])
        rope = RopeSpec.from_hf(cfg, source)
        context = max_pos
        if rope.kind == "dynamic":
            context = int(max_pos * float(rope.params["factor"]))
        window = None
        if mt == "mistral":
            window = cfg.get("sliding_window", 4096)
        elif mt == "qwen2" and (cfg.get("use_sliding_window") or "sliding_attention" in (cfg.get("layer_types") or ())):
            window = cfg.get("sliding_window", 4096)
        if window is not None:
            window = _int({"sliding_window": window}, "sliding_window", source)
            context = min(context, window)
        attention_bias = bool(cfg.get("attention_bias", False))
        return cls(
            model_type=mt,
            vocab_size=_int(cfg, "vocab_size", source),
            n_layer=_int(cfg, "num_hidden_layers", source),
            n_head=H,
            n_kv_head=KVH,
            n_embd=C,
            head_dim=D,
            intermediate_size=_int(cfg, "intermediate_size", source),
            block_size=context,
            max_position_embeddings=max_pos,
            rms_norm_eps=_float(cfg, "rms_norm_eps", source, 1e-6),
            rope=rope,
            hidden_act=act,
            qkv_bias=mt == "qwen2" or (mt == "llama" and attention_bias),
            o_bias=mt == "llama" and attention_bias,
            mlp_bias=mt == "llama" and bool(cfg.get("mlp_bias", False)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            sliding_window=window,
        )

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the model needs, by its transformers name, with its shape (lm_head only if untied)."""
        V, C, H, KVH, D, I = self.vocab_size, self.n_embd, self.n_head, self.n_kv_head, self.head_dim, self.intermediate_size
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (V, C), "model.norm.weight": (C,)}
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (V, C)
        for i in range(self.n_layer):
            p = f"model.layers.{i}."
            shapes[p + "input_layernorm.weight"] = (C,)
            shapes[p + "post_attention_layernorm.weight"] = (C,)
            for name, rows in (("q_proj", H * D), ("k_proj", KVH * D), ("v_proj", KVH * D)):
                shapes[p + f"self_attn.{name}.weight"] = (rows, C)
                if self.qkv_bias:
                    shapes[p + f"self_attn.{name}.bias"] = (rows,)
            shapes[p + "self_attn.o_proj.weight"] = (C, H * D)
            if self.o_bias:
                shapes[p + "self_attn.o_proj.bias"] = (C,)
            shapes[p + "mlp.gate_proj.weight"] = (I, C)
            shapes[p + "mlp.up_proj.weight"] = (I, C)
            shapes[p + "mlp.down_proj.weight"] = (C, I)
            if self.mlp_bias:
                shapes[p + "mlp.gate_proj.bias"] = (I,)
                shapes[p + "mlp.up_proj.bias"] = (I,)
                shapes[p + "mlp.down_proj.bias"] = (C,)
        return shapes

    @property
    def num_parameters(self) -> int:
        """Parameters stored, the tied head counted once."""
        return sum(math.prod(s) for s in self.tensor_shapes().values())


# -------------------------------------------------------------------------------------------- cache
class KVCache:
    """Keys and values of every layer for one sequence, preallocated to ``max_len`` positions.

    ``k`` and ``v`` are (L, B, KVH, max_len, D): only the key/value heads are stored (grouped-query
    attention shares them between query heads).
    """

    def __init__(self, n_layer: int, n_kv_head: int, head_dim: int, max_len: int, batch: int = 1, *,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (n_layer, batch, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, KVH, S, D)
        self.v = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, KVH, S, D)
        self.max_len = max_len

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + k.shape[2]  # k, v: (B, KVH, T, D)
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # (B, KVH, end, D)


# -------------------------------------------------------------------------------------------- model
class _Block:
    """Weights of one decoder layer (plain tensors, transformers' names shortened)."""

    __slots__ = ("ln1", "ln2", "q_w", "q_b", "k_w", "k_b", "v_w", "v_b", "o_w", "o_b",
                 "gate_w", "gate_b", "up_w", "up_b", "down_w", "down_b")

    def __init__(self, sd: Mapping[str, torch.Tensor], p: str) -> None:
        self.ln1 = sd[p + "input_layernorm.weight"]  # (C,)
        self.ln2 = sd[p + "post_attention_layernorm.weight"]  # (C,)
        self.q_w, self.q_b = sd[p + "self_attn.q_proj.weight"], sd.get(p + "self_attn.q_proj.bias")  # (H·D, C)
        self.k_w, self.k_b = sd[p + "self_attn.k_proj.weight"], sd.get(p + "self_attn.k_proj.bias")  # (KVH·D, C)
        self.v_w, self.v_b = sd[p + "self_attn.v_proj.weight"], sd.get(p + "self_attn.v_proj.bias")  # (KVH·D, C)
        self.o_w, self.o_b = sd[p + "self_attn.o_proj.weight"], sd.get(p + "self_attn.o_proj.bias")  # (C, H·D)
        self.gate_w, self.gate_b = sd[p + "mlp.gate_proj.weight"], sd.get(p + "mlp.gate_proj.bias")  # (I, C)
        self.up_w, self.up_b = sd[p + "mlp.up_proj.weight"], sd.get(p + "mlp.up_proj.bias")  # (I, C)
        self.down_w, self.down_b = sd[p + "mlp.down_proj.weight"], sd.get(p + "mlp.down_proj.bias")  # (C, I)


class Llama:
    """Inference-only Llama-family decoder, built from a state dict with transformers' tensor names
    (validated by ``engine/hf_dir.py``), all tensors already in the dtype and on the device to run on."""

    def __init__(self, config: LlamaConfig, state_dict: Mapping[str, torch.Tensor]) -> None:
        self.config = config
        self.architecture = config.model_type
        self.embed = state_dict["model.embed_tokens.weight"]  # (V, C)
        self.lm_head = self.embed if config.tie_word_embeddings else state_dict["lm_head.weight"]  # (V, C)
        self.norm = state_dict["model.norm.weight"]  # (C,)
        self.blocks = [_Block(state_dict, f"model.layers.{i}.") for i in range(config.n_layer)]
        self.act = _ACTIVATIONS[config.hidden_act]
        self.rotary = _Rotary(config.rope, config.head_dim, config.max_position_embeddings, self.embed.device)
        self.scale = 1.0 / math.sqrt(config.head_dim)
        self.gqa = config.n_kv_head != config.n_head

    @property
    def device(self) -> torch.device:
        return self.embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.dtype

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
        H, KVH, D, eps = cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.rms_norm_eps

        x = self.embed[ids]  # (B, T, C)
        cos, sin = self.rotary.cos_sin(start, end, x.dtype)  # (T, D) each
        mask = None  # SDPA boolean mask: True = may attend
        if T > 1 and start > 0:
            mask = torch.ones(T, end, dtype=torch.bool, device=ids.device).tril_(start)  # (T, end)
        causal = T > 1 and start == 0
        for i, blk in enumerate(self.blocks):
            h = _rms_norm(x, blk.ln1, eps)  # (B, T, C)
            q = F.linear(h, blk.q_w, blk.q_b).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
            k = F.linear(h, blk.k_w, blk.k_b).view(B, T, KVH, D).transpose(1, 2)  # (B, KVH, T, D)
            v = F.linear(h, blk.v_w, blk.v_b).view(B, T, KVH, D).transpose(1, 2)  # (B, KVH, T, D)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            if cache is not None:
                k, v = cache.update(i, start, k, v)  # (B, KVH, end, D)
            o = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=causal, scale=self.scale, enable_gqa=self.gqa
            )  # (B, H, T, D)
            o = o.transpose(1, 2).reshape(B, T, H * D)  # (B, T, H·D)
            x = x + F.linear(o, blk.o_w, blk.o_b)
            h = _rms_norm(x, blk.ln2, eps)
            mlp = self.act(F.linear(h, blk.gate_w, blk.gate_b)) * F.linear(h, blk.up_w, blk.up_b)  # (B, T, I)
            x = x + F.linear(mlp, blk.down_w, blk.down_b)
        last = _rms_norm(x[:, -1, :], self.norm, eps)  # (B, C)
        return F.linear(last, self.lm_head).float()  # (B, V)
