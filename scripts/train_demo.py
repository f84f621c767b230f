"""Train the built-in demo model: corpus → byte-level BPE tokenizer → small GPT in llmbuilder's format.

Run from the repository root (the defaults rebuild exactly what ships in ``llmbuilder_cli/demo_model/``):

    python scripts/train_demo.py

Steps, all seeded, so the same seed gives the same files on the same torch build and thread count:

1. Stories from ``scripts/demo_corpus.py``: ``--stories`` for training (seed ``--seed``) and
   ``--heldout`` fresh ones (seed ``--seed + 1``, any story also present in training dropped) that
   the model never sees, for the validation loss and perplexity.
2. A byte-level BPE tokenizer trained with the ``tokenizers`` library, with ``<|endoftext|>`` as EOS
   (``tokenizer.json`` + ``tokenizer_config.json``). Every story ends with EOS, so the model learns
   to stop.
3. llmbuilder's GPT (same parameter names, shapes, tied head and ``causal_mask`` buffers, so
   llmbuilder itself loads the file) trained with AdamW on windows of ``--block-size`` tokens; most
   windows start at the beginning of a story, as a prompt does.
4. ``model.pt`` in llmbuilder's format A (+ ``model.metadata.json``), weights stored in float16 to keep
   the package small (the engine, like llmbuilder, runs them in float32), and ``training.json``: the
   recipe, the corpus hash, losses, perplexity and timings.
5. The greedy continuations the shipped model gives for a few prompts, written to
   ``--expected`` for the test suite (which must not regenerate them any other way).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import time
import warnings
from collections import OrderedDict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")  # torch without NumPy: harmless

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import demo_corpus  # noqa: E402

EOS = "<|endoftext|>"
EXPECTED_PROMPTS = ("Once upon a time", "The little fox", "One sunny morning,", "Mia and her grandmother")
EXPECTED_TOKENS = 60


# ------------------------------------------------------------------------------------------- tokenizer
def train_tokenizer(stories: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (``tokenizers``) with ``<|endoftext|>`` as id 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(stories, trainer=trainer, length=len(stories))
    return tok


def encode_stories(tok, stories: list[str]) -> tuple[list[int], list[int]]:
    """One token stream (each story followed by EOS) and the offset where each story starts."""
    eos = tok.token_to_id(EOS)
    stream: list[int] = []
    starts: list[int] = []
    for enc in tok.encode_batch(stories, add_special_tokens=False):
        starts.append(len(stream))
        stream.extend(enc.ids)
        stream.append(eos)
    return stream, starts


# ------------------------------------------------------------------------------------------------ model
class Attention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv_proj = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.out_proj = nn.Linear(n_embd, n_embd)
        # llmbuilder keeps this (unused by us) buffer in its state dict; strict loading needs it.
        self.register_buffer("causal_mask", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv_proj(x).split(C, dim=2)  # each (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D), scale 1/sqrt(D)
        return self.out_proj(o.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_embd, 4 * n_embd)
        self.fc2 = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU, as llmbuilder


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)  # eps 1e-5
        self.attn = Attention(n_embd, n_head, block_size)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TrainGPT(nn.Module):
    """llmbuilder's GPTModel for training: identical state-dict names and shapes, tied output head."""

    def __init__(self, vocab_size: int, n_layer: int, n_head: int, n_embd: int, block_size: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.position_embedding = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, block_size) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # tied
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("out_proj.weight", "fc2.weight")) else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]  # ids: (B, T)
        x = self.token_embedding(ids) + self.position_embedding.weight[:T]  # (B, T, C)
        for blk in self.blocks:
            x = blk(x)
        return self.lm_head(self.ln_f(x))  # (B, T, V)


# --------------------------------------------------------------------------------------------- training
def sample_batch(
    stream: torch.Tensor, starts: torch.Tensor, batch: int, length: int, story_start_p: float, gen: torch.Generator
) -> torch.Tensor:
    """(batch, length + 1) windows of the stream; most begin where a story begins."""
    limit = len(stream) - length - 1
    from_story = torch.rand(batch, generator=gen) < story_start_p
    story = starts[torch.randint(len(starts), (batch,), generator=gen)].clamp(max=limit)
    anywhere = torch.randint(limit + 1, (batch,), generator=gen)
    offsets = torch.where(from_story, story, anywhere)  # (batch,)
    return torch.stack([stream[o : o + length + 1] for o in offsets.tolist()])


@torch.no_grad()
def evaluate(model: TrainGPT, stream: torch.Tensor, length: int, max_windows: int | None = None) -> tuple[float, int]:
    """Mean next-token cross-entropy over consecutive windows of ``stream`` (and the tokens scored)."""
    model.eval()
    total, count = 0.0, 0
    n = (len(stream) - 1) // length
    if max_windows is not None:
        n = min(n, max_windows)
    for b in range(0, n, 16):
        rows = [stream[i * length : i * length + length + 1] for i in range(b, min(n, b + 16))]
        x = torch.stack(rows)  # (B, length + 1)
        logits = model(x[:, :-1])  # (B, length, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
        total += loss.item()
        count += x[:, 1:].numel()
    model.train()
    return total / max(count, 1), count


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(args: argparse.Namespace, train_stream: list[int], starts: list[int], val_stream: list[int], vocab: int):
    torch.manual_seed(args.seed)
    model = TrainGPT(vocab, args.n_layer, args.n_head, args.n_embd, args.block_size)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    gen = torch.Generator().manual_seed(args.seed)
    data = torch.tensor(train_stream, dtype=torch.long)
    story_starts = torch.tensor(starts, dtype=torch.long)
    val = torch.tensor(val_stream, dtype=torch.long)
    history = []
    t0 = time.perf_counter()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        x = sample_batch(data, story_starts, args.batch_size, args.block_size, 0.75, gen)  # (B, P + 1)
        logits = model(x[:, :-1])  # (B, P, V)
        loss = F.cross_entropy(logits.reshape(-1, vocab), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        last = step + 1 == args.steps
        if (step + 1) % args.eval_every == 0 or last:
            val_loss, _ = evaluate(model, val, args.block_size, max_windows=None if last else 32)
            elapsed = time.perf_counter() - t0
            history.append({"step": step + 1, "train_loss": round(loss.item(), 4), "val_loss": round(val_loss, 4)})
            print(
                f"step {step + 1:5d}/{args.steps}  train {loss.item():.3f}  val {val_loss:.3f}  "
                f"lr {opt.param_groups[0]['lr']:.2e}  {elapsed:6.0f}s",
                flush=True,
            )
    return model, history, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------ files
def save_llmbuilder_model(model: TrainGPT, args: argparse.Namespace, vocab: int, file: Path) -> None:
    """Format A (llmbuilder ``save_model``), float16 weights, plus the ``.metadata.json`` side file."""
    state = OrderedDict((k, v.detach().to(torch.float16).contiguous()) for k, v in model.state_dict().items())
    state["lm_head.weight"] = state["token_embedding.weight"]  # one storage in the file, as llmbuilder writes it
    n_params = sum(p.numel() for p in model.parameters())
    model_config = {
        "vocab_size": vocab,
        "num_layers": args.n_layer,
        "num_heads": args.n_head,
        "embedding_dim": args.n_embd,
        "max_seq_length": args.block_size,
        "dropout": 0.0,
        "model_type": "gpt",
    }
    metadata = {
        "vocab_size": vocab,
        "n_layer": args.n_layer,
        "n_head": args.n_head,
        "n_embd": args.n_embd,
        "block_size": args.block_size,
        "dropout": 0.0,
        "num_parameters": n_params,
        "model_type": "gpt",
        "version": "1.0",
    }
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": state, "model_config": model_config, "metadata": metadata, "model_type": "gpt"}, file)
    file.with_suffix(".metadata.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def save_tokenizer(tok, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOS, "bos_token": None, "unk_token": None}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def expected_greedy(out: Path) -> dict:
    """Greedy continuations of the shipped files, through the same engine users run."""
    from llmbuilder_cli import api

    loaded = api.load_model(out, out / "tokenizer", device="cpu")
    cases = []
    for prompt in EXPECTED_PROMPTS:
        r = api.generate(loaded, prompt=prompt, max_new_tokens=EXPECTED_TOKENS, do_sample=False)
        cases.append(
            {"prompt": prompt, "max_new_tokens": EXPECTED_TOKENS, "token_ids": list(r.token_ids), "text": r.text,
             "finish_reason": r.finish_reason.value}
        )
    return {"model_sha256": sha256(out / "model.pt"), "cases": cases}


def format_expected(data: dict) -> str:
    """JSON with one line per case (token lists stay readable in diffs)."""
    cases = ",\n".join("    " + json.dumps(c, ensure_ascii=False) for c in data["cases"])
    return f'{{\n  "model_sha256": "{data["model_sha256"]}",\n  "cases": [\n{cases}\n  ]\n}}\n'


# ------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "llmbuilder_cli" / "demo_model", help="output directory")
    p.add_argument("--expected", type=Path, default=ROOT / "tests" / "data" / "demo_expected.json",
                   help="where to write the greedy outputs the tests check ('' to skip)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--stories", type=int, default=80000, help="training stories")
    p.add_argument("--heldout", type=int, default=600, help="held-out stories for validation")
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-head", type=int, default=6)
    p.add_argument("--n-embd", type=int, default=192)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=3200)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (part of the reproducibility recipe)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    t_start = time.perf_counter()

    stories = demo_corpus.generate_stories(args.seed, args.stories)
    seen = set(stories)
    heldout_all = demo_corpus.generate_stories(args.seed + 1, args.heldout)
    heldout = [s for s in heldout_all if s not in seen]
    corpus_sha = hashlib.sha256(demo_corpus.corpus_text(stories).encode("utf-8")).hexdigest()
    print(f"corpus: {len(stories)} training stories, {len(heldout)} held-out ({len(heldout_all) - len(heldout)} "
          f"dropped as duplicates of training stories)", flush=True)

    tok = train_tokenizer(stories, args.vocab_size)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    train_stream, starts = encode_stories(tok, stories)
    val_stream, _ = encode_stories(tok, heldout)
    print(f"tokenizer: {vocab} tokens; {len(train_stream)} training tokens, {len(val_stream)} held-out tokens",
          flush=True)

    model, history, train_s = train(args, train_stream, starts, val_stream, vocab)

    out: Path = args.out
    save_tokenizer(tok, out / "tokenizer")
    save_llmbuilder_model(model, args, vocab, out / "model.pt")

    # Score the files as shipped (float16 weights run in float32), not the training copy.
    from llmbuilder_cli.engine.loading import read_checkpoint

    _, shipped, _, _ = read_checkpoint(out / "model.pt")
    model.load_state_dict({k: v for k, v in shipped.items()}, strict=False)
    val_loss, val_tokens = evaluate(model, torch.tensor(val_stream, dtype=torch.long), args.block_size)
    report = {
        "recipe": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "expected")},
        "corpus": {
            "generator": "scripts/demo_corpus.py",
            "version": demo_corpus.CORPUS_VERSION,
            "train_stories": len(stories),
            "train_tokens": len(train_stream),
            "train_sha256": corpus_sha,
            "heldout_stories": len(heldout),
            "heldout_tokens": val_tokens,
        },
        "tokenizer": {"type": "byte-level BPE (tokenizers)", "vocab_size": vocab, "eos_token": EOS},
        "model": {
            "architecture": "llmbuilder GPT",
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "stored_dtype": "float16",
            "sha256": sha256(out / "model.pt"),
        },
        "results": {
            "heldout_loss": round(val_loss, 4),
            "heldout_perplexity": round(math.exp(val_loss), 3),
            "tokens_seen": args.steps * args.batch_size * args.block_size,
            "history": history,
        },
        "environment": {"torch": torch.__version__, "python": platform.python_version(), "threads": args.threads},
        "timing_s": {"training": round(train_s, 1), "total": round(time.perf_counter() - t_start, 1)},
    }
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"held-out loss {val_loss:.4f}, perplexity {math.exp(val_loss):.3f} over {val_tokens} tokens", flush=True)

    if str(args.expected):
        args.expected.parent.mkdir(parents=True, exist_ok=True)
        args.expected.write_text(format_expected(expected_greedy(out)), encoding="utf-8")
    print(f"wrote {out} in {time.perf_counter() - t_start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
