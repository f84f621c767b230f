"""Hugging Face GPT-2 (``GPT2LMHeadModel``) for inference, with a KV cache.

Pre-LayerNorm blocks (eps ``layer_norm_epsilon``), learned absolute positions, a fused q|k|v projection,
an MLP of width ``n_inner`` (default 4C) with the configured ``activation_function``, a final LayerNorm and
an output head tied to the token embedding unless ``tie_word_embeddings`` is false. Weights keep the file's
``Conv1D`` orientation, (in, out), and are applied as ``bias + x @ W``. Attention scores are scaled by
1/sqrt(D) when ``scale_attn_weights`` (the default) and further by 1/(layer index + 1) when
``scale_attn_by_inverse_layer_idx``. ``reorder_and_upcast_attn`` only changes rounding and is ignored.

Same interface as ``llmbuilder_gpt.py``: ``forward(ids, start, cache)`` → float32 logits of the last
position; the cache is llmbuilder_gpt's `KVCache` (one key/value head per query head).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from ...errors import ModelLoadError
from .llama import config_bool
from .llmbuilder_gpt import KVCache

__all__ = ["GPT2Config", "GPT2", "ACTIVATIONS"]


def _gelu_new(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of GELU written out (GPT-2's original formula)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def _gelu_fast(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


#: activation_function names understood, as transformers spells them.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu_new": _gelu_new,
    "gelu": F.gelu,  # exact (erf)
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": _gelu_fast,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def _positive_int(cfg: Mapping[str, Any], key: str, source: str, default: int | None = None) -> int:
    value = cfg.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ModelLoadError(f"{source}: {key} must be a whole number > 0 (got {value!r})",
                             hint="the model's config.json is damaged or of an unsupported variant")
    return value


@dataclass(frozen=True)
class GPT2Config:
    vocab_size: int  # V
    n_layer: int  # L
    n_head: int  # H; divides n_embd
    n_embd: int  # C
    block_size: int  # P: n_positions, rows of the position embedding
    n_inner: int  # I: MLP width
    layer_norm_epsilon: float = 1e-5
    activation_function: str = "gelu_new"
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    tie_word_embeddings: bool = True
    model_type: str = "gpt2"

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_kv_head(self) -> int:
        return self.n_head

    @property
    def rope_theta(self) -> None:
        return None

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any], source: str = "config.json") -> "GPT2Config":
        C = _positive_int(cfg, "n_embd", source, cfg.get("hidden_size", 768))
        H = _positive_int(cfg, "n_head", source, cfg.get("num_attention_heads", 12))
        if C % H:
            raise ModelLoadError(f"{source}: n_head {H} does not divide n_embd {C}",
                                 hint="the model's config.json is damaged")
        act = cfg.get("activation_function", "gelu_new")
        if not isinstance(act, str) or act not in ACTIVATIONS:
            raise ModelLoadError(f"{source}: activation_function {act!r} is not supported",
                                 hint=f"supported: {', '.join(ACTIVATIONS)}")
        if config_bool(cfg, "add_cross_attention", source, False):
            raise ModelLoadError(f"{source}: GPT-2 with cross-attention (an encoder-decoder part) is not supported",
                                 hint="use a plain decoder-only GPT-2 model")
        eps = cfg.get("layer_norm_epsilon", 1e-5)
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < 1:
            raise ModelLoadError(f"{source}: layer_norm_epsilon must be a small positive number (got {eps!r})",
                                 hint="the model's config.json is damaged")
        return cls(
            vocab_size=_positive_int(cfg, "vocab_size", source, 50257),
            n_layer=_positive_int(cfg, "n_layer", source, cfg.get("num_hidden_layers", 12)),
            n_head=H,
            n_embd=C,
            block_size=_positive_int(cfg, "n_positions", source, cfg.get("max_position_embeddings", 1024)),
            n_inner=_positive_int(cfg, "n_inner", source, 4 * C),
            layer_norm_epsilon=float(eps),
            activation_function=act,
            scale_attn_weights=config_bool(cfg, "scale_attn_weights", source, True),
            scale_attn_by_inverse_layer_idx=config_bool(cfg, "scale_attn_by_inverse_layer_idx", source, False),
            tie_word_embeddings=config_bool(cfg, "tie_word_embeddings", source, True),
        )

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the model needs, by its transformers name (Conv1D weights are (in, out))."""
        V, C, P, I = self.vocab_size, self.n_embd, self.block_size, self.n_inner
        shapes: dict[str, tuple[int, ...]] = {
            "transformer.wte.weight": (V, C),
            "transformer.wpe.weight": (P, C),
            "transformer.ln_f.weight": (C,),
            "transformer.ln_f.bias": (C,),
        }
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (V, C)
        for i in range(self.n_layer):
            p = f"transformer.h.{i}."
            shapes.update({
                p + "ln_1.weight": (C,), p + "ln_1.bias": (C,),
                p + "attn.c_attn.weight": (C, 3 * C), p + "attn.c_attn.bias": (3 * C,),
                p + "attn.c_proj.weight": (C, C), p + "attn.c_proj.bias": (C,),
                p + "ln_2.weight": (C,), p + "ln_2.bias": (C,),
                p + "mlp.c_fc.weight": (C, I), p + "mlp.c_fc.bias": (I,),
                p + "mlp.c_proj.weight": (I, C), p + "mlp.c_proj.bias": (C,),
            })
        return shapes

    @property
    def num_parameters(self) -> int:
        """Parameters stored, the tied head counted once."""
        return sum(math.prod(s) for s in self.tensor_shapes().values())


def _conv1d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``b + x @ w`` for x (..., in) and w (in, out), GPT-2's Conv1D."""
    out = torch.addmm(b, x.reshape(-1, x.shape[-1]), w)  # (N, out)
    return out.view(*x.shape[:-1], w.shape[1])


class GPT2:
    """Inference-only GPT-2 built from a validated state dict with transformers' names (see engine/formats/hf_dir.py)."""

    architecture = "gpt2"

    def __init__(self, config: GPT2Config, state_dict: Mapping[str, torch.Tensor]) -> None:
        self.config = config
        sd = state_dict
        self.wte = sd["transformer.wte.weight"]  # (V, C)
        self.wpe = sd["transformer.wpe.weight"]  # (P, C)
        self.lm_head = self.wte if config.tie_word_embeddings else sd["lm_head.weight"]  # (V, C)
        self.ln_f = (sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"])  # (C,), (C,)
        self.blocks = []
        for i in range(config.n_layer):
            p = f"transformer.h.{i}."
            self.blocks.append(tuple(sd[p + k] for k in (
                "ln_1.weight", "ln_1.bias",  # (C,)
                "attn.c_attn.weight", "attn.c_attn.bias",  # (C, 3C), (3C,)
                "attn.c_proj.weight", "attn.c_proj.bias",  # (C, C), (C,)
                "ln_2.weight", "ln_2.bias",  # (C,)
                "mlp.c_fc.weight", "mlp.c_fc.bias",  # (C, I), (I,)
                "mlp.c_proj.weight", "mlp.c_proj.bias",  # (I, C), (C,)
            )))
        self.act = ACTIVATIONS[config.activation_function]
        base = 1.0 / math.sqrt(config.head_dim) if config.scale_attn_weights else 1.0
        self.scales = [
            base / (i + 1) if config.scale_attn_by_inverse_layer_idx else base for i in range(config.n_layer)
        ]

    @property
    def device(self) -> torch.device:
        return self.wte.device

    @property
    def dtype(self) -> torch.dtype:
        return self.wte.dtype

    def new_cache(self, max_len: int, batch: int = 1) -> KVCache:
        return KVCache(self.config, min(max_len, self.config.block_size), batch, dtype=self.dtype, device=self.device)

    def forward(self, ids: torch.Tensor, start: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        """Float32 logits of the last position, (B, V), for ``ids`` (B, T) at positions start..start+T-1."""
        cfg = self.config
        B, T = ids.shape
        end = start + T
        if end > cfg.block_size:
            raise ValueError(f"positions {start}..{end - 1} exceed the context length {cfg.block_size}")
        if cache is None and start != 0:
            raise ValueError("a forward without a cache must start at position 0")
        H, D, C, eps = cfg.n_head, cfg.head_dim, cfg.n_embd, cfg.layer_norm_epsilon

        x = self.wte[ids] + self.wpe[start:end]  # (B, T, C)
        mask = None  # SDPA boolean mask: True = may attend
        if T > 1 and start > 0:
            mask = torch.ones(T, end, dtype=torch.bool, device=ids.device).tril_(start)  # (T, end)
        causal = T > 1 and start == 0
        for i, (ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, out_w, out_b) in enumerate(
            self.blocks
        ):
            h = F.layer_norm(x, (C,), ln1_w, ln1_b, eps)  # (B, T, C)
            q, k, v = _conv1d(h, qkv_w, qkv_b).split(C, dim=2)  # each (B, T, C)
            q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
            k = k.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
            v = v.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
            if cache is not None:
                k, v = cache.update(i, start, k, v)  # (B, H, end, D)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=self.scales[i])
            o = o.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
            x = x + _conv1d(o, proj_w, proj_b)
            h = F.layer_norm(x, (C,), ln2_w, ln2_b, eps)
            x = x + _conv1d(self.act(_conv1d(h, fc_w, fc_b)), out_w, out_b)
        last = F.layer_norm(x[:, -1, :], (C,), self.ln_f[0], self.ln_f[1], eps)  # (B, C)
        return F.linear(last, self.lm_head).float()  # (B, V)
