"""The Llama family of decoders (Llama, SmolLM/SmolLM2, TinyLlama, Mistral, Qwen2, Qwen3, Phi-3) for inference,
with a KV cache.

One class covers them all; they differ only in configuration:

* pre-RMSNorm blocks (statistics in float32, as in the reference implementation), a SwiGLU MLP
  ``down(act(gate(x)) * up(x))``, a final RMSNorm and an output head that may be tied to the embedding;
* grouped-query attention: ``num_key_value_heads`` (KVH) key/value heads shared by H query heads, each of
  width ``head_dim`` (D, given or C / H); projection biases on q/k/v (Qwen2; Llama's ``attention_bias`` adds
  one to the output projection too) and optional MLP biases (``mlp_bias``);
* Qwen3: per-head RMSNorm on queries and keys (``q_norm``/``k_norm``, width D) before the rotation;
* Phi-3: q|k|v stored as one ``qkv_proj`` weight and gate|up as one ``gate_up_proj`` weight, used as stored
  (the same row layout as the fused layers below); its ``longrope`` scaling is refused like other types;
* rotary position embeddings in the "rotate half" layout, base ``rope_theta``, optionally rescaled by
  ``rope_scaling`` of type ``linear`` (positions divided by ``factor``), ``dynamic`` (NTK: the base grows
  with the sequence once it passes ``max_position_embeddings``), ``llama3`` (Llama 3.1's per-frequency
  blend) or ``yarn`` (frequency ramp plus an attention factor on cos/sin). Other types are refused.

Context length (``block_size``): ``max_position_embeddings``; for ``dynamic`` RoPE, whose only purpose is
to run past the trained length, that times ``factor``.

Sliding-window attention (Mistral, Phi-3 with ``sliding_window``; Qwen2/Qwen3 with ``use_sliding_window``, in
the layers ``layer_types`` names, by default those from ``max_window_layers`` on): in a sliding layer the
query at position i sees keys j with i - W < j <= i (W = ``sliding_window``, the query's own position
included), as transformers' masks do. The cache keeps every position (full layers need them); a sliding
layer reads only the last W of them for one new token and uses a banded mask for several.

`forward` runs ``T`` new tokens at absolute positions ``start .. start+T-1`` with the same contract as
``llmbuilder_gpt.py``: with a `KVCache` earlier positions come from the cache, without one the call is a
full forward from position 0; only the last position's logits are computed, returned in float32.
Attention is ``torch.nn.functional.scaled_dot_product_attention`` (the kernel transformers uses by default,
so float32 results match it closely).

Decoding one token is a few hundred small torch calls, so the layer is laid out to need few of them
(float32 results stay bit-identical to the straightforward formulation; tests/test_perf_llama.py):
q|k|v and gate|up each act as one linear layer (fused into one weight except in float32, where it does
not pay; ``engine/kernels/`` picks the product per dtype, or int8 weight-only with ``quantize="int8"``),
queries and keys are rotated together with cos/sin tables computed once, RMSNorm avoids the slow CPU
composite of ``F.rms_norm`` (see `_rms_norm`), and the cache cuts its per-layer views once per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple

import torch
import torch.nn.functional as F

from ...errors import ModelLoadError
from ..kernels import QUANTIZATIONS, Concat, LinearLike, fuses_layers, is_int4, make_linear, quantize_blocks
from ..limits import check_cache
from ..prefill import packed_layout

__all__ = ["LlamaConfig", "KVCache", "Llama", "LAYER_TYPES", "ROPE_TYPES", "MODEL_TYPES"]

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "phi3")
ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")

# Defaults of the reference configuration classes, for keys a config.json leaves out.
_DEFAULT_CONTEXT = {"llama": 2048, "mistral": 4096 * 32, "qwen2": 32768, "qwen3": 32768, "phi3": 4096}
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


def config_bool(cfg: Mapping[str, Any], key: str, source: str, default: bool) -> bool:
    """A true/false config field: JSON true or false (null or absent: ``default``); anything else, such as
    the string "false" (which Python would read as true), is refused with the field's name."""
    value = cfg.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad_config(source, f"{key} must be true or false (got {value!r})")
    return value


LAYER_TYPES = ("full_attention", "sliding_attention")


def _layer_types(cfg: Mapping[str, Any], mt: str, n_layer: int, source: str) -> tuple[int | None, tuple[str, ...]]:
    """The sliding window W and each layer's attention kind, as transformers' configuration classes
    derive them: Mistral and Phi-3 slide in every layer when ``sliding_window`` is set (Mistral's default
    4096; null switches it off); Qwen2/Qwen3 only with ``use_sliding_window``, in the layers ``layer_types``
    marks, else those from ``max_window_layers`` on. ``(None, ())`` when no layer slides."""
    if mt in ("mistral", "phi3"):
        window = cfg.get("sliding_window", 4096 if mt == "mistral" else None)
        types: Any = None
    elif mt in ("qwen2", "qwen3") and config_bool(cfg, "use_sliding_window", source, False):
        window = cfg.get("sliding_window", 4096)
        types = cfg.get("layer_types")
        if types is None:
            first = cfg.get("max_window_layers", 28)
            if not isinstance(first, int) or isinstance(first, bool) or first < 0:
                raise _bad_config(source, f"max_window_layers must be a whole number >= 0 (got {first!r})")
            types = ["sliding_attention" if i >= first else "full_attention" for i in range(n_layer)]
    else:
        return None, ()
    if window is None:
        return None, ()
    window = _int({"sliding_window": window}, "sliding_window", source)
    if types is None:
        types = ["sliding_attention"] * n_layer
    if not isinstance(types, (list, tuple)) or len(types) != n_layer or any(t not in LAYER_TYPES for t in types):
        raise _bad_config(source, f"layer_types must list {n_layer} entries, each one of {', '.join(LAYER_TYPES)}")
    if "sliding_attention" not in types:
        return None, ()
    return window, tuple(types)


# Numeric RoPE parameters and the least value each may take (None: any finite number).
_ROPE_NUMBERS: dict[str, float | None] = {
    "factor": 0.0, "low_freq_factor": 0.0, "high_freq_factor": 0.0, "original_max_position_embeddings": 0.0,
    "beta_fast": None, "beta_slow": None, "attention_factor": 0.0, "mscale": None, "mscale_all_dim": None,
}


def _check_rope_numbers(merged: Mapping[str, Any], source: str) -> None:
    for key, low in _ROPE_NUMBERS.items():
        value = merged.get(key)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise _bad_config(source, f"RoPE parameter {key} must be a number (got {value!r})")
        if low is not None and value <= low:
            raise _bad_config(source, f"RoPE parameter {key} must be positive (got {value!r})")
    if merged.get("original_max_position_embeddings") is not None and not isinstance(
            merged["original_max_position_embeddings"], int):
        raise _bad_config(source, "RoPE parameter original_max_position_embeddings must be a whole number "
                                  f"(got {merged['original_max_position_embeddings']!r})")


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
        _check_rope_numbers(merged, source)
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
    """cos/sin tables for a range of positions, in the layout `_rope` uses; for ``dynamic`` RoPE it keeps
    the reference's state (the frequencies grow with the longest sequence seen and reset once a sequence
    fits the trained length).

    The tables are computed once for positions 0..n-1 (n grows by doubling as sequences get longer) and
    sliced per call, with the values the per-call formula gives (the same float32 products, cos and sin).
    ``sin`` is stored with its first half negated, so that rotating needs one swap of the halves of x:
    ``x·cos + swap(x)·sin`` equals ``x·cos + rotate_half(x)·sin`` exactly (−a·b = a·(−b) in IEEE)."""

    def __init__(self, spec: RopeSpec, dim: int, max_pos: int, device: torch.device) -> None:
        self.spec, self.dim, self.max_pos, self.device = spec, dim, max_pos, device
        inv, self.scale = rope_frequencies(spec, dim, max_pos)
        self.inv_freq = self.original = inv.to(device)  # (D/2,) float32
        self.longest = max_pos
        self._tables: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}  # dtype → (n, D) cos, sin

    def _update_dynamic(self, seq_len: int) -> None:
        inv = self.inv_freq
        if seq_len > self.longest:
            self.inv_freq = rope_frequencies(self.spec, self.dim, self.max_pos, seq_len)[0].to(self.device)
            self.longest = seq_len
        if seq_len < self.max_pos < self.longest:
            self.inv_freq, self.longest = self.original, self.max_pos
        if self.inv_freq is not inv:
            self._tables.clear()

    def _compute(self, start: int, end: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.arange(start, end, device=self.device, dtype=torch.float32)  # (T,)
        freqs = pos[:, None] * self.inv_freq[None, :]  # (T, D/2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (T, D)
        cos, sin = angles.cos(), angles.sin()
        if self.scale != 1.0:
            cos, sin = cos * self.scale, sin * self.scale
        half = self.dim // 2
        sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)  # first half negated (see the class doc)
        return cos.to(dtype), sin.to(dtype)

    def cos_sin(self, start: int, end: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and (half-negated) sin for positions start..end-1, each (T, D) in ``dtype``."""
        if self.spec.kind == "dynamic":
            self._update_dynamic(end)
        table = self._tables.get(dtype)
        if table is None or table[0].shape[0] < end:
            n = max(end, 2 * (table[0].shape[0] if table is not None else 128))
            table = self._tables[dtype] = self._compute(0, n, dtype)
        return table[0][start:end], table[1][start:end]


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (B, T, N, D) by cos/sin (T, 1, D) from `_Rotary` (sin with its first half negated)."""
    swapped = torch.roll(x, x.shape[-1] // 2, -1)  # halves exchanged (one call; a flip needs two views too)
    if x.dtype == torch.float32:
        return x * cos + swapped * sin  # the reference's roundings (tests/test_perf_llama.py: bit-identical)
    return torch.addcmul(x * cos, swapped, sin)  # 16-bit: one call fewer (and one rounding fewer)


def _band_mask(start: int, end: int, window: int, device: torch.device) -> torch.Tensor:
    """SDPA boolean mask (True = may attend), (T, end), for queries at start..end-1 of a sliding layer:
    key j is visible to the query at i when i - window < j <= i."""
    q_pos = torch.arange(start, end, device=device)[:, None]  # (T, 1)
    k_pos = torch.arange(end, device=device)[None, :]  # (1, end)
    return (k_pos <= q_pos) & (k_pos > q_pos - window)  # (T, end)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension, statistics in float32: in float32 the reference arithmetic exactly,
    ``weight * (x · rsqrt(mean(x²) + eps))``; in 16-bit dtypes all of it in float32 and rounded once at the end
    (closer to the float32 result than the reference's rounding before the weight too).

    Written out rather than ``F.rms_norm``: on CPU that is a composite of about a dozen calls, two of them
    with Python-number operands (slow: each wraps the number into a tensor); here the divisor and eps are
    0-dim tensors made once, the mean and eps one ``addcdiv``, and the float32 results are the same bits
    (tests/test_perf_llama.py)."""
    n, e = _norm_constants(x.shape[-1], eps, x.device)
    xf = x if x.dtype == torch.float32 else x.float()
    ss = (xf * xf).sum(-1, keepdim=True)  # (..., 1) float32: Σx²
    r = torch.addcdiv(e, ss, n).rsqrt_()  # eps + Σx²/C: the mean as torch.mean divides, then eps (1·q is exact)
    if xf is x:
        return weight * (x * r)
    return (xf * r * weight).to(x.dtype)  # the weight widened to float32 inside the product


_NORM_CONSTANTS: dict[tuple[int, float, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def _norm_constants(width: int, eps: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The width and eps of an RMSNorm as 0-dim float32 tensors on ``device``, made once."""
    key = (width, eps, device)
    c = _NORM_CONSTANTS.get(key)
    if c is None:
        c = _NORM_CONSTANTS[key] = (torch.tensor(float(width), device=device),
                                    torch.tensor(eps, dtype=torch.float32, device=device))
    return c


# ------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class LlamaConfig:
    model_type: str  # one of MODEL_TYPES
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
    sliding_window: int | None = None  # W: positions a sliding layer sees, the query's own included
    layer_types: tuple[str, ...] = ()  # per layer, one of LAYER_TYPES; empty when no layer slides
    qk_norm: bool = False  # RMSNorm over each query and key head before RoPE (Qwen3)
    fused_weights: bool = False  # qkv_proj and gate_up_proj stored as one weight each (Phi-3)

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
        if not isinstance(act, str) or act not in _ACTIVATIONS:
            raise ModelLoadError(f"{source}: hidden_act {act!r} is not supported",
                                 hint=f"supported: {', '.join(_ACTIVATIONS)}")
        max_pos = _int(cfg, "max_position_embeddings", source, _DEFAULT_CONTEXT[mt])
        rope = RopeSpec.from_hf(cfg, source)
        context = max_pos
        if rope.kind == "dynamic":
            context = int(max_pos * float(rope.params["factor"]))
        n_layer = _int(cfg, "num_hidden_layers", source)
        window, layer_types = _layer_types(cfg, mt, n_layer, source)
        attention_bias = config_bool(cfg, "attention_bias", source, False)
        return cls(
            model_type=mt,
            vocab_size=_int(cfg, "vocab_size", source),
            n_layer=n_layer,
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
            qkv_bias=mt == "qwen2" or (mt in ("llama", "qwen3") and attention_bias),
            o_bias=mt in ("llama", "qwen3") and attention_bias,
            mlp_bias=mt == "llama" and config_bool(cfg, "mlp_bias", source, False),
            tie_word_embeddings=config_bool(cfg, "tie_word_embeddings", source, False),
            sliding_window=window,
            layer_types=layer_types,
            qk_norm=mt == "qwen3",
            fused_weights=mt == "phi3",
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
            if self.fused_weights:
                shapes[p + "self_attn.qkv_proj.weight"] = ((H + 2 * KVH) * D, C)
            else:
                for name, rows in (("q_proj", H * D), ("k_proj", KVH * D), ("v_proj", KVH * D)):
                    shapes[p + f"self_attn.{name}.weight"] = (rows, C)
                    if self.qkv_bias:
                        shapes[p + f"self_attn.{name}.bias"] = (rows,)
            if self.qk_norm:
                shapes[p + "self_attn.q_norm.weight"] = (D,)
                shapes[p + "self_attn.k_norm.weight"] = (D,)
            shapes[p + "self_attn.o_proj.weight"] = (C, H * D)
            if self.o_bias:
                shapes[p + "self_attn.o_proj.bias"] = (C,)
            if self.fused_weights:
                shapes[p + "mlp.gate_up_proj.weight"] = (2 * I, C)
            else:
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
        check_cache(shape, dtype)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, KVH, S, D)
        self.v = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, KVH, S, D)
        self.max_len = max_len
        self._step: tuple[int, int, torch.Tensor, torch.Tensor] | None = None  # (start, T, k, v) of the views below
        self._write: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer: (B, KVH, T, D) at start..end-1
        self._read: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer: (B, KVH, end, D) at 0..end-1

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``, ``v`` (B, KVH, T, D) of positions start..start+T-1 for ``layer``; returns the layer's
        keys and values of positions 0..start+T-1, (B, KVH, start+T, D) views of the cache.

        A step calls this once per layer with the same positions: the views of every layer are cut once
        per step (two calls per layer remain, the copies), not four times per layer."""
        T = k.shape[2]
        step = self._step
        if step is None or step[0] != start or step[1] != T or step[2] is not self.k or step[3] is not self.v:
            end = start + T
            self._write = list(zip(self.k.narrow(3, start, T).unbind(0), self.v.narrow(3, start, T).unbind(0)))
            self._read = list(zip(self.k.narrow(3, 0, end).unbind(0), self.v.narrow(3, 0, end).unbind(0)))
            self._step = (start, T, self.k, self.v)  # the tensors too: views of replaced ones would be stale
        wk, wv = self._write[layer]
        wk.copy_(k)
        wv.copy_(v)
        return self._read[layer]


# -------------------------------------------------------------------------------------------- model
def quantize_from_state(state: Any, names: list[str], shapes: list[tuple[int, ...]], quantize: str,
                        bias: torch.Tensor | None, dtype: torch.dtype, device: torch.device) -> LinearLike:
    """One quantized layer from the weights ``names`` (of ``shapes``) of a lazy state, stacked by rows and
    read a block of rows at a time (``state.row_blocks``), so no float copy of the whole weight is held.
    An int4 layer takes a weight the state holds in 4-bit groups (``state.int4_row_blocks``: GGUF's
    Q4_0, Q4_1, Q4_K) as it is stored, neither dequantized nor quantized again."""
    shape = (sum(s[0] for s in shapes), shapes[0][1])
    as_stored = is_int4(quantize, shape, device) and hasattr(state, "int4_row_blocks")

    def blocks_of(name: str) -> Any:
        stored = state.int4_row_blocks(name) if as_stored else None
        return state.row_blocks(name) if stored is None else stored

    offsets = [sum(s[0] for s in shapes[:i]) for i in range(len(shapes))]
    blocks = ((off + r0, rows) for n, off in zip(names, offsets) for r0, rows in blocks_of(n))
    return quantize_blocks(quantize, shape, blocks, bias, dtype, device=device)


class _Masks(NamedTuple):
    """SDPA boolean masks (True = may attend), (T, end), for T new tokens at start..end-1: ``full`` for
    layers that see every earlier position (None when ``is_causal`` or a single token does it), ``band``
    for sliding layers past their window with T > 1 (None otherwise)."""

    full: torch.Tensor | None
    band: torch.Tensor | None


_ONE_TOKEN = _Masks(None, None)  # one new token needs no mask: it sees every cached position (or the last W)


class _Block:
    """One decoder layer: its norms and its linear layers, q|k|v and gate|up each acting as one layer
    (fused into one weight, or kept separate for float32: see ``kernels.fuses_layers``; weights stored
    fused, as Phi-3's, stay fused), and Qwen3's per-head query/key norms."""

    __slots__ = ("ln1", "ln2", "qkv", "o", "gate_up", "down", "q_norm", "k_norm", "qk_norm", "sliding")

    def __init__(self, take: Callable[[str], Any], linear: Callable[..., LinearLike], p: str,
                 quantize: str | None, config: "LlamaConfig", dtype: torch.dtype) -> None:
        fuse = fuses_layers(dtype, quantize)

        def fused(*names: str) -> LinearLike | Concat:
            if not fuse and len(names) > 1:
                return Concat([fused(n) for n in names])
            bs = [take(p + n + ".bias") for n in names]
            b = None if bs[0] is None else bs[0] if len(bs) == 1 else torch.cat(bs)
            return linear([p + n + ".weight" for n in names], b)

        self.ln1 = take(p + "input_layernorm.weight")  # (C,)
        self.ln2 = take(p + "post_attention_layernorm.weight")  # (C,)
        if config.fused_weights:
            self.qkv = fused("self_attn.qkv_proj")  # (H·D + 2·KVH·D, C)
            self.gate_up = fused("mlp.gate_up_proj")  # (2I, C)
        else:
            self.qkv = fused("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")  # (H·D + 2·KVH·D, C)
            self.gate_up = fused("mlp.gate_proj", "mlp.up_proj")  # (2I, C)
        self.o = fused("self_attn.o_proj")  # (C, H·D)
        self.q_norm = self.k_norm = self.qk_norm = None
        if config.qk_norm:
            self.q_norm = take(p + "self_attn.q_norm.weight")  # (D,)
            self.k_norm = take(p + "self_attn.k_norm.weight")  # (D,)
            H, KVH, D = config.n_head, config.n_kv_head, config.head_dim
            # Both as one weight per rotated head, for the fused layout: (H + KVH, D)
            self.qk_norm = torch.cat((self.q_norm.expand(H, D), self.k_norm.expand(KVH, D)))
        self.down = fused("mlp.down_proj")  # (C, I)
        self.sliding = False  # attends through the sliding window (set by the model from layer_types)


class Llama:
    """Inference-only Llama-family decoder, built from a state dict with transformers' tensor names
    (validated by ``engine/formats/hf_dir.py``), all tensors already in the dtype and on the device to run on.

    ``quantize="int8"`` stores every linear layer (and a tied head/embedding) as int8 weights with
    per-row scales (``engine/kernels/``); ``"int4"`` as 4-bit codes per group of 32 (``engine/kernels/int4.py``;
    layers torch's int4 kernel cannot take stay int8); norms, attention and the residual stream stay in
    the dtype.
    ``consume=True`` removes entries from ``state_dict`` (a dict) as they are used, so the unfused copies
    are freed layer by layer instead of at the end (peak memory: the weights plus one layer). A state with
    a ``stacked(names)`` method (``weights_io.LazyState``) reads fused weights in place."""

    def __init__(self, config: LlamaConfig, state_dict: Mapping[str, torch.Tensor], *,
                 quantize: str | None = None, consume: bool = False) -> None:
        if quantize not in QUANTIZATIONS:
            raise ValueError(f"unknown quantization {quantize!r}; expected one of {QUANTIZATIONS}")
        sd = state_dict

        def take(name: str) -> Any:  # the tensor, or None for an absent (optional) bias
            return sd.pop(name, None) if consume and isinstance(sd, dict) else sd.get(name)

        def linear(names: list[str], bias: torch.Tensor | None = None, quantize: str | None = quantize) -> LinearLike:
            """One layer from the weights ``names`` stacked by rows; a lazy state reads them in place, or
            (quantized) in blocks quantized as they arrive, so no float copy of the whole weight is held."""
            if quantize is not None and hasattr(sd, "row_blocks"):
                return quantize_from_state(sd, names, [tuple(config_shapes[n]) for n in names], quantize, bias,
                                           dtype, self.norm.device)
            if len(names) > 1 and hasattr(sd, "stacked"):
                w = sd.stacked(names)
            else:
                parts = [take(n) for n in names]
                w = parts[0] if len(parts) == 1 else torch.cat(parts)  # (ΣN, K)
            return make_linear(w, bias, quantize=quantize, dtype=dtype)

        config_shapes = config.tensor_shapes()
        self.config = config
        self.architecture = config.model_type
        self.quantization = quantize
        self.norm = take("model.norm.weight")  # (C,)
        dtype = self.norm.dtype
        # The output head decides every token: with int4 layers it stays int8 (as llama.cpp's 4-bit files
        # keep it at 6-8 bits). Measured on SmolLM2: top-1 agreement with float32 62/78 with an int4 head.
        head_quantize = "int8" if quantize == "int4" else quantize
        if config.tie_word_embeddings:
            self.lm_head = linear(["model.embed_tokens.weight"], quantize=head_quantize)  # (V, C), also the embedding
            self._embed: torch.Tensor | None = None
        else:
            self.lm_head = linear(["lm_head.weight"], quantize=head_quantize)  # (V, C)
            self._embed = take("model.embed_tokens.weight")  # (V, C)
        self.blocks = [_Block(take, linear, f"model.layers.{i}.", quantize, config, dtype)
                       for i in range(config.n_layer)]
        for blk, kind in zip(self.blocks, config.layer_types):
            blk.sliding = kind == "sliding_attention"
        self.act = _ACTIVATIONS[config.hidden_act]
        self.rotary = _Rotary(config.rope, config.head_dim, config.max_position_embeddings, self.norm.device)
        self.scale = 1.0 / math.sqrt(config.head_dim)
        self.gqa = config.n_kv_head != config.n_head
        # `decode_step` runs several sequences at their own positions; dynamic RoPE rescales with the
        # longest sequence seen, a state one batch of different lengths cannot share: those run alone.
        self.batched_decode = config.rope.kind != "dynamic"

    @property
    def device(self) -> torch.device:
        return self.norm.device

    @property
    def dtype(self) -> torch.dtype:
        return self.norm.dtype

    @property
    def weight_bytes(self) -> int:
        """Bytes of every weight the model holds (what one decoded token streams from memory, about)."""
        layers = [self.lm_head] + [lin for b in self.blocks for lin in (b.qkv, b.o, b.gate_up, b.down)]
        norms = [self.norm] + [t for b in self.blocks for t in (b.ln1, b.ln2, b.q_norm, b.k_norm) if t is not None]
        if self._embed is not None:
            norms.append(self._embed)
        return sum(lin.nbytes for lin in layers) + sum(t.numel() * t.element_size() for t in norms)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, T, C) of ``ids`` (B, T)."""
        return self.lm_head.rows(ids) if self._embed is None else self._embed[ids]

    def new_cache(self, max_len: int, batch: int = 1) -> KVCache:
        c = self.config
        return KVCache(c.n_layer, c.n_kv_head, c.head_dim, min(max_len, c.block_size), batch,
                       dtype=self.dtype, device=self.device)

    def _qkv(self, blk: _Block, h: torch.Tensor, cos: torch.Tensor,
             sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotated queries (B, H, T, D), rotated keys and values (B, KVH, T, D) of the normed input h (B, T, C);
        cos/sin broadcast against (B, T, heads, D). Qwen3's q/k norms are applied before the rotation."""
        cfg = self.config
        H, KVH, D, eps = cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.rms_norm_eps
        B, T, _ = h.shape
        NQK = H + KVH  # heads that are rotated: the queries, then the keys
        if type(blk.qkv) is Concat:  # separate weights: three products; q and k side by side for one rotation
            q_lin, k_lin, v_lin = blk.qkv.layers
            qk = torch.cat((q_lin(h), k_lin(h)), dim=-1).view(B, T, NQK, D)  # (B, T, H + KVH, D)
            v = v_lin(h).view(B, T, KVH, D)  # (B, T, KVH, D)
        else:
            qkv = blk.qkv(h)  # (B, T, (H + 2·KVH)·D)
            qk = qkv[..., : NQK * D].view(B, T, NQK, D)
            v = qkv[..., NQK * D :].view(B, T, KVH, D)
        if blk.qk_norm is not None:  # normalised per head, then each head's own weight (H + KVH, D)
            qk = _rms_norm(qk, blk.qk_norm, eps)  # (B, T, H + KVH, D)
        qk = _rope(qk, cos, sin)  # (B, T, H + KVH, D)
        q = qk[:, :, :H].transpose(1, 2)  # (B, H, T, D)
        k = qk[:, :, H:].transpose(1, 2)  # (B, KVH, T, D)
        return q, k, v.transpose(1, 2)  # v: (B, KVH, T, D)

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

        x = self.embed(ids)  # (B, T, C)
        cos, sin = self.rotary.cos_sin(start, end, x.dtype)  # (T, D) each
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (T, 1, D)
        masks = self._masks(start, T, ids.device)
        for i, blk in enumerate(self.blocks):
            q, k, v = self._qkv(blk, _rms_norm(x, blk.ln1, eps), cos, sin)  # (B, H|KVH, T, D)
            if cache is not None:
                k, v = cache.update(i, start, k, v)  # (B, KVH, end, D)
            o = self._attend(blk, q, k, v, start, masks)  # (B, H, T, D)
            x = self._mlp(blk, x + blk.o(o.transpose(1, 2).reshape(B, T, H * D)))  # (B, T, C)
        last = _rms_norm(x[:, -1:, :], self.norm, eps)  # (B, 1, C)
        return self.lm_head(last)[:, 0].float()  # (B, V)

    def decode_step(self, ids: torch.Tensor, positions: list[int], caches: list[KVCache]) -> torch.Tensor:
        """Float32 logits (B, V) of one new token per sequence: ``ids`` (B,), row b at position
        ``positions[b]`` with the keys and values of its earlier positions in ``caches[b]`` (batch-1 caches).

        The linear layers run on all rows at once (the weights are read once per step); rotary angles
        are taken per row, and attention runs per row on that row's cache, as a one-sequence step does."""
        cfg = self.config
        (B,) = ids.shape
        if not self.batched_decode:
            raise ValueError("this model's rotary embedding cannot run sequences of different lengths together")
        if max(positions) >= cfg.block_size:
            raise ValueError(f"position {max(positions)} exceeds the context length {cfg.block_size}")
        H, KVH, D, eps = cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.rms_norm_eps
        x = self.embed(ids.unsqueeze(1))  # (B, 1, C)
        cos, sin = self.rotary.cos_sin(0, max(positions) + 1, x.dtype)  # (n, D) each
        pos = torch.tensor(positions, dtype=torch.long, device=ids.device)  # (B,)
        cos, sin = cos[pos].view(B, 1, 1, D), sin[pos].view(B, 1, 1, D)  # (B, 1, 1, D): broadcast per row
        for i, blk in enumerate(self.blocks):
            q, k, v = self._qkv(blk, _rms_norm(x, blk.ln1, eps), cos, sin)  # (B, H|KVH, 1, D)
            rows = []
            for b, (start, cache) in enumerate(zip(positions, caches)):
                kb, vb = cache.update(i, start, k[b : b + 1], v[b : b + 1])  # (1, KVH, start+1, D)
                rows.append(self._attend(blk, q[b : b + 1], kb, vb, start, _ONE_TOKEN))  # (1, H, 1, D)
            o = torch.cat(rows)  # (B, H, 1, D)
            x = self._mlp(blk, x + blk.o(o.transpose(1, 2).reshape(B, 1, H * D)))
        return self.lm_head(_rms_norm(x, self.norm, eps))[:, 0].float()  # (B, V)

    def _masks(self, start: int, T: int, device: torch.device) -> "_Masks":
        """The SDPA masks for T new tokens at positions start..start+T-1 (see `_Masks`)."""
        end, W = start + T, self.config.sliding_window
        full = torch.ones(T, end, dtype=torch.bool, device=device).tril_(start) if T > 1 and start > 0 else None
        band = _band_mask(start, end, W, device) if W is not None and end > W and T > 1 else None
        return _Masks(full, band)

    def _attend(self, blk: _Block, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int,
                masks: "_Masks") -> torch.Tensor:
        """Attention (B, H, T, D) of the queries q (B, H, T, D) at positions start.. over the keys and values
        k, v (B, KVH, end, D) of every position so far. A sliding layer past its window reads only the last
        W positions for one new token and uses the banded mask for several; otherwise plain causal.

        One query position in a 16-bit dtype with grouped heads: the H / KVH queries that share a key/value
        head are passed as that head's rows (B, KVH, H / KVH, D), one ordinary attention call with nothing
        to mask (SDPA's grouped-query mode is several times slower there in bfloat16 on CPU: 1.25 ms vs
        0.26 ms at 300 positions, SmolLM2's heads). Float32 keeps the grouped-query call, whose results
        the reference implementations reproduce bit for bit; regrouped they differ in the last bits."""
        B, H, T, D = q.shape
        end, W = k.shape[2], self.config.sliding_window
        sliding = blk.sliding and W is not None and end > W
        if sliding and T == 1:
            k, v = k[:, :, end - W :], v[:, :, end - W :]  # (B, KVH, W, D)
        if T == 1 and self.gqa and q.dtype != torch.float32:
            KVH = k.shape[1]
            o = F.scaled_dot_product_attention(q.reshape(B, KVH, H // KVH, D), k, v, scale=self.scale)
            return o.view(B, H, 1, D)
        if sliding:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=masks.band, scale=self.scale,
                                                  enable_gqa=self.gqa)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=masks.full, is_causal=T > 1 and start == 0,
                                              scale=self.scale, enable_gqa=self.gqa)

    def _mlp(self, blk: _Block, x: torch.Tensor) -> torch.Tensor:
        """The residual stream x (B, T, C) after the block's MLP (the same calls as `forward`)."""
        h = _rms_norm(x, blk.ln2, self.config.rms_norm_eps)
        if type(blk.gate_up) is Concat:
            gate, up = (lin(h) for lin in blk.gate_up.layers)  # (B, T, I) each
        else:
            gate, up = blk.gate_up(h).chunk(2, dim=-1)  # (B, T, I) each
        return x + blk.down(self.act(gate) * up)

    def row_products(self) -> list[tuple[Callable[[torch.Tensor], torch.Tensor], int]]:
        """The linear layers of one block with their input widths: what `prefill` runs on packed rows
        (``engine/prefill.py`` probes which row counts they compute exactly as a larger product does)."""
        cfg, blk = self.config, self.blocks[0]
        C, HD = cfg.n_embd, cfg.n_head * cfg.head_dim
        return [(blk.qkv, C), (blk.o, HD), (blk.gate_up, C), (blk.down, cfg.intermediate_size)]

    def prefill(self, ids: list[torch.Tensor], starts: list[int], caches: list[KVCache]) -> torch.Tensor:
        """Float32 logits (S, V) of the last position of each of S sequences, their new tokens run as one
        packed sequence: ``ids[s]`` (T_s,) at positions ``starts[s] .. starts[s]+T_s-1``, with the keys and
        values of earlier positions in ``caches[s]`` (batch-1 caches), where its own are written.

        Everything but attention runs on the packed (1, ΣT) rows, each token with its own rotary angles;
        attention runs per sequence on its own cache with the call `forward` makes for it alone, and the
        output head runs on each sequence's last row alone (as `forward`), so a sequence's keys, values and
        logits are bit-identical to its own `forward` whenever the linear layers compute its rows as they do
        alone (see ``engine/prefill.py``)."""
        cfg = self.config
        if not self.batched_decode:
            raise ValueError("this model's rotary embedding cannot run sequences of different lengths together")
        lengths, ends, offsets, pos = packed_layout(ids, starts, cfg.block_size, "context length", self.device)
        H, D, eps = cfg.n_head, cfg.head_dim, cfg.rms_norm_eps
        N = sum(lengths)
        x = self.embed(torch.cat(ids).unsqueeze(0))  # (1, N, C)
        cos, sin = self.rotary.cos_sin(0, max(ends), x.dtype)  # (n, D) each
        cos, sin = cos[pos].unsqueeze(1), sin[pos].unsqueeze(1)  # (N, 1, D): each token its own angles
        masks = [self._masks(s, n, x.device) for s, n in zip(starts, lengths)]  # as `forward` for each alone
        for i, blk in enumerate(self.blocks):
            q, k, v = self._qkv(blk, _rms_norm(x, blk.ln1, eps), cos, sin)  # (1, H|KVH, N, D)
            rows = []
            for off, n, start, cache, m in zip(offsets, lengths, starts, caches, masks):
                kb, vb = cache.update(i, start, k[:, :, off : off + n], v[:, :, off : off + n])  # (1, KVH, end, D)
                rows.append(self._attend(blk, q[:, :, off : off + n], kb, vb, start, m))  # (1, H, T_s, D)
            o = torch.cat(rows, dim=2)  # (1, H, N, D)
            x = self._mlp(blk, x + blk.o(o.transpose(1, 2).reshape(1, N, H * D)))
        lasts = [off + n - 1 for off, n in zip(offsets, lengths)]
        return torch.cat([self.lm_head(_rms_norm(x[:, j : j + 1], self.norm, eps))[:, 0]
                          for j in lasts]).float()  # (S, V)
