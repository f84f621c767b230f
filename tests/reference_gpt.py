"""An independent, deliberately naive implementation of llmbuilder's GPT and generation loop.

Written straight from the format reference (§1.2, §1.3, §4.3) with no KV cache, no shared code with
the engine, and a full forward of the whole window every step — the yardstick the tests compare the
cached engine against (as minGPT's parity test does).
"""

from __future__ import annotations

import math

import torch


def naive_logits(sd: dict, n_head: int, ids: list[int]) -> torch.Tensor:
    """Logits (T, V) of a window of ids at positions 0..T-1."""
    x = sd["token_embedding.weight"][ids] + sd["position_embedding.weight"][: len(ids)]
    T, C = x.shape
    D = C // n_head
    L = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})

    def ln(t, w, b):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + 1e-5) * w + b

    for i in range(L):
        p = f"blocks.{i}."
        h = ln(x, sd[p + "ln1.weight"], sd[p + "ln1.bias"])
        qkv = h @ sd[p + "attn.qkv_proj.weight"].T
        q, k, v = qkv[:, :C], qkv[:, C : 2 * C], qkv[:, 2 * C :]
        heads = []
        for n in range(n_head):
            sl = slice(n * D, (n + 1) * D)
            s = (q[:, sl] @ k[:, sl].T) * (1.0 / math.sqrt(D))
            s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
            heads.append(torch.softmax(s, -1) @ v[:, sl])
        x = x + torch.cat(heads, -1) @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = ln(x, sd[p + "ln2.weight"], sd[p + "ln2.bias"])
        f = h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"]
        f = 0.5 * f * (1 + torch.erf(f / math.sqrt(2)))
        x = x + f @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    x = ln(x, sd["ln_f.weight"], sd["ln_f.bias"])
    return x @ sd["token_embedding.weight"].T


def naive_greedy(sd: dict, n_head: int, block_size: int, ids: list[int], steps: int, temperature: float = 0.8,
                 repetition_penalty: float = 1.0) -> list[int]:
    """llmbuilder's greedy loop: window = last block_size tokens, z/T, penalty, argmax."""
    seq = list(ids)
    new = []
    with torch.no_grad():
        for _ in range(steps):
            w = seq if len(seq) <= block_size else seq[-block_size:]
            z = naive_logits(sd, n_head, w)[-1] / temperature
            if repetition_penalty != 1.0:
                for t in set(seq):
                    z[t] = z[t] * repetition_penalty if z[t] < 0 else z[t] / repetition_penalty
            nxt = int(torch.argmax(z))
            seq.append(nxt)
            new.append(nxt)
    return new


def random_llmbuilder_checkpoint(path, *, vocab=97, n_layer=2, n_head=4, n_embd=32, block_size=16, seed=0,
                                 std=0.3, extra: dict | None = None) -> dict:
    """Write a random model in llmbuilder's save_model format (format A) and return its state dict."""
    g = torch.Generator().manual_seed(seed)
    C = n_embd

    def r(*shape):
        return torch.randn(*shape, generator=g) * std

    sd = {"token_embedding.weight": r(vocab, C), "position_embedding.weight": r(block_size, C)}
    for i in range(n_layer):
        p = f"blocks.{i}."
        sd[p + "ln1.weight"] = 1 + r(C)
        sd[p + "ln1.bias"] = r(C)
        sd[p + "attn.causal_mask"] = torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size)
        sd[p + "attn.qkv_proj.weight"] = r(3 * C, C)
        sd[p + "attn.out_proj.weight"] = r(C, C)
        sd[p + "attn.out_proj.bias"] = r(C)
        sd[p + "ln2.weight"] = 1 + r(C)
        sd[p + "ln2.bias"] = r(C)
        sd[p + "mlp.fc1.weight"] = r(4 * C, C)
        sd[p + "mlp.fc1.bias"] = r(4 * C)
        sd[p + "mlp.fc2.weight"] = r(C, 4 * C)
        sd[p + "mlp.fc2.bias"] = r(C)
    sd["ln_f.weight"] = 1 + r(C)
    sd["ln_f.bias"] = r(C)
    sd["lm_head.weight"] = sd["token_embedding.weight"]
    cfg = {"vocab_size": vocab, "num_layers": n_layer, "num_heads": n_head, "embedding_dim": C,
           "max_seq_length": block_size, "dropout": 0.1, "model_type": "gpt"}
    ck = {"model_state_dict": sd, "model_config": cfg, "metadata": {}, "model_type": "gpt"}
    if extra:
        ck.update(extra)
    torch.save(ck, path)
    return sd
