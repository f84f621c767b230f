"""Greedy decoding on both sides of a parity test: transformers' own ``generate`` and our engine's model
driven step by step through its key/value cache (the prompt optionally fed in two chunks); and, for the
real-model tests, transformers' reading of a GGUF file as the reference (`gguf_reference`)."""

from __future__ import annotations

import torch


def reference_greedy(model, ids: list[int], n: int) -> list[int]:
    """transformers' greedy continuation of ``ids``: exactly ``n`` new ids (EOS held off)."""
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[0, len(ids):].tolist()


def engine_greedy(model, ids: list[int], n: int, split: int | None = None) -> list[int]:
    """Our model's greedy continuation through its cache; ``split``: feed the prompt as ids[:split] then
    ids[split:] (a prompt that arrives in chunks)."""
    cache = model.new_cache(64)
    chunks = [ids] if split is None else [ids[:split], ids[split:]]
    with torch.inference_mode():
        start = 0
        for chunk in chunks:
            logits = model.forward(torch.tensor([chunk]), start, cache)  # (1, V) at the chunk's last position
            start += len(chunk)
        out, pos = [], len(ids)
        for _ in range(n):
            out.append(int(logits[0].argmax()))
            logits = model.forward(torch.tensor([[out[-1]]]), pos, cache)
            pos += 1
    return out


def assert_same_logits(ours, ref, ids: list[int], split: int) -> None:
    """Our last-position float32 logits equal transformers', for the whole prompt in one forward and for
    the prompt fed as ids[:split] then ids[split:] through the cache."""
    prompt = torch.tensor([ids])
    with torch.no_grad():
        expected = ref(prompt).logits[0, -1]
    with torch.inference_mode():
        full = ours.forward(prompt)[0]
        cache = ours.new_cache(64)
        ours.forward(prompt[:, :split], 0, cache)
        chunked = ours.forward(prompt[:, split:], split, cache)[0]
    torch.testing.assert_close(full, expected, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(chunked, expected, atol=2e-4, rtol=1e-4)


def gguf_reference(gguf, prompts: list[str], new_tokens: int, folder) -> dict:
    """transformers' view of a real GGUF file: its tokenizer ids and ``new_tokens`` greedy ids per prompt
    (float32, EOS held off), and the same weights saved as a Hugging Face directory in ``folder``.
    Returns ``{"gguf", "dir", "expected": [(ids, greedy ids)], "tokenizer", "eos"}``; skips the test when
    transformers cannot read GGUF here."""
    import pytest

    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to read GGUF files")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.eval()
    expected = []
    for prompt in prompts:
        ids = tok(prompt)["input_ids"]
        expected.append((ids, reference_greedy(model, ids, new_tokens)))
    # A GGUF-loaded model refuses save_pretrained (it remembers its quantization): copy the dequantized
    # weights into a plain model of the same config and save that, with the tokenizer.
    config = model.config
    del config.quantization_config
    plain = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    plain.save_pretrained(folder)
    tok.save_pretrained(folder)
    eos = model.generation_config.eos_token_id
    return {"gguf": gguf, "dir": folder, "expected": expected, "tokenizer": tok,
            "eos": tuple(eos if isinstance(eos, list) else [eos])}
