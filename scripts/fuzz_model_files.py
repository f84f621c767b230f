"""Fuzz the model loaders with damaged and hostile files: every failure must be a domain error.

Run from the repository root:

    python scripts/fuzz_model_files.py --seed 0 --count 2000

Four small valid inputs are built in a temporary directory (`build_bases`): llmbuilder's ``model.pt``
(the test fixture), a tiny Llama GGUF with a byte-level BPE vocabulary, a tiny Llama Hugging Face
directory (``config.json`` + ``model.safetensors`` + ``tokenizer.json``), and that ``tokenizer.json``
on its own. Each case takes one of them and damages it (`mutate`): a truncation, a few flipped bits,
an overwritten header field (GGUF counts, lengths and types; a zip member's sizes and CRC; the
safetensors header length; the pickle inside ``model.pt``), or a JSON value replaced by a hostile one
(a wrong type, zero, a negative or enormous number, NaN, a deep structure) in ``config.json``,
``tokenizer.json`` or the safetensors header. The case is then loaded in this process exactly as the
command does (`load`, then a few greedy tokens; ``describe`` for a quarter of them), and its outcome
classified:

* ``ok``: it loaded and generated (a mutation can leave a file valid);
* ``error``: a domain error from ``llmbuilder_cli/errors.py`` (what the command prints as one line);
* ``FAIL``: any other exception (a traceback or "this is a bug" for the user), or a case over the time
  limit. Failures are printed with the case number; ``--case N`` reruns one case with its traceback.

Everything derives from ``--seed``: the same seed and count give the same cases. The process runs under
an address-space limit (``--memory-gib``, default 3), so a loader that allocates what a header declares
fails here with a MemoryError instead of making the machine swap. Exit status 0 when no case failed.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import resource
import shutil
import struct
import sys
import tempfile
import time
import traceback
import zipfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIXTURE = ROOT / "tests" / "fixtures" / "llmbuilder-tiny"
KINDS = ("model.pt", "gguf", "hf", "tokenizer.json")
VOCAB_WORDS = 60  # the tiny HF tokenizer: <unk>, <s>, </s>, then w3 .. w59


# ------------------------------------------------------------------------------------------ base files
def write_llama_gguf(path: Path, *, layers: int = 1, hidden: int = 32, heads: int = 4, kv: int = 2,
                     ffn: int = 64, meta: dict | None = None, tokens: list[str] | None = None,
                     seed: int = 0) -> Path:
    """A tiny random Llama GGUF with a byte-level BPE vocabulary (256 byte symbols, 3 merges, 2 specials)."""
    import gguf
    import numpy as np

    from llmbuilder_cli.engine.formats.gguf.tokenizer import _byte_alphabet

    rng = np.random.default_rng(seed)
    vocab = tokens if tokens is not None else _byte_alphabet() + ["Ġt", "he", "Ġthe", "<|endoftext|>", "<|im_end|>"]
    types = [1] * len(vocab)
    if tokens is None:
        types[-2:] = [3, 3]
    V, d = len(vocab), hidden // heads
    w = gguf.GGUFWriter(str(path), "llama")
    fields = {
        "llama.context_length": 128, "llama.embedding_length": hidden, "llama.block_count": layers,
        "llama.feed_forward_length": ffn, "llama.attention.head_count": heads,
        "llama.attention.head_count_kv": kv, "llama.rope.dimension_count": d,
        "llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.rope.freq_base": 10000.0,
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": vocab, "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": ["Ġ t", "h e", "Ġt he"] if tokens is None else [],
        "tokenizer.ggml.bos_token_id": V - 2, "tokenizer.ggml.eos_token_id": V - 1,
        **(meta or {}),
    }
    for key, value in fields.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_array(key, value)
    r = lambda *shape: rng.standard_normal(shape).astype(np.float32) * 0.2  # noqa: E731
    w.add_tensor("token_embd.weight", r(V, hidden))
    w.add_tensor("output_norm.weight", r(hidden) + 1)
    for i in range(layers):
        p = f"blk.{i}."
        for name, shape in (("attn_norm.weight", (hidden,)), ("ffn_norm.weight", (hidden,)),
                            ("attn_q.weight", (heads * d, hidden)), ("attn_k.weight", (kv * d, hidden)),
                            ("attn_v.weight", (kv * d, hidden)), ("attn_output.weight", (hidden, heads * d)),
                            ("ffn_gate.weight", (ffn, hidden)), ("ffn_up.weight", (ffn, hidden)),
                            ("ffn_down.weight", (hidden, ffn))):
            w.add_tensor(p + name, r(*shape))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_tokenizer_json(folder: Path, *, pre_tokenizer: object = None) -> Path:
    """A word-level tokenizer.json over "w3 w4 ..." with <unk>/<s>/</s> = 0/1/2, and its tokenizer_config."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, VOCAB_WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizer if pre_tokenizer is not None else pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}),
                                                  encoding="utf-8")
    return folder / "tokenizer.json"


LLAMA_CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 16,
                "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                "num_key_value_heads": 1, "vocab_size": VOCAB_WORDS, "max_position_embeddings": 64,
                "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False}


def write_hf_dir(folder: Path, config: dict | None = None, *, seed: int = 0) -> Path:
    """A tiny random Llama directory: config.json, model.safetensors (float32) and a tokenizer."""
    import torch
    from safetensors.torch import save_file

    cfg = {**LLAMA_CONFIG, **(config or {})}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    g = torch.Generator().manual_seed(seed)
    C, I, V = LLAMA_CONFIG["hidden_size"], LLAMA_CONFIG["intermediate_size"], VOCAB_WORDS
    H, KVH = LLAMA_CONFIG["num_attention_heads"], LLAMA_CONFIG["num_key_value_heads"]
    D = C // H
    r = lambda *s: torch.randn(*s, generator=g) * 0.2  # noqa: E731
    sd = {"model.embed_tokens.weight": r(V, C), "model.norm.weight": r(C) + 1, "lm_head.weight": r(V, C)}
    p = "model.layers.0."
    sd |= {p + "input_layernorm.weight": r(C) + 1, p + "post_attention_layernorm.weight": r(C) + 1,
           p + "self_attn.q_proj.weight": r(H * D, C), p + "self_attn.k_proj.weight": r(KVH * D, C),
           p + "self_attn.v_proj.weight": r(KVH * D, C), p + "self_attn.o_proj.weight": r(C, H * D),
           p + "mlp.gate_proj.weight": r(I, C), p + "mlp.up_proj.weight": r(I, C), p + "mlp.down_proj.weight": r(C, I)}
    save_file(sd, str(folder / "model.safetensors"))
    write_tokenizer_json(folder)
    return folder


def build_bases(d: Path) -> dict[str, Path]:
    """The four valid inputs every case starts from."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "pt").mkdir(exist_ok=True)
    shutil.copyfile(FIXTURE / "model.pt", d / "pt" / "model.pt")
    hf = write_hf_dir(d / "hf")
    return {"model.pt": d / "pt" / "model.pt", "gguf": write_llama_gguf(d / "m.gguf"), "hf": hf,
            "tokenizer.json": hf / "tokenizer.json"}


# --------------------------------------------------------------------------------------------- mutations
_INTERESTING_INTS = [0, 1, 2, 3, 7, 8, 9, 12, 255, 256, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40,
                     2**62, 2**63 - 1, 2**64 - 1, 10**7, 10**8]
_HOSTILE_JSON = [None, True, False, "false", "true", "", "x" * 300, 0, -1, -(2**63), 2**63, 10**7, 10**12,
                 10**30, 0.5, -0.5, 1e308, float("nan"), float("inf"), [], [1, 2], {}, {"a": 1}, [[[[[]]]]],
                 "llama", "gpt2", "yarn", "llama3", "dynamic", "linear", 1.0, 2, 4, 16]


def _flip_bits(data: bytearray, rng: random.Random, start: int = 0) -> str:
    n = rng.choice([1, 1, 1, 2, 4, 8])
    for _ in range(n):
        pos = rng.randrange(start, len(data))
        data[pos] ^= 1 << rng.randrange(8)
    return f"flip {n} bit(s)"


def _truncate(data: bytearray, rng: random.Random) -> tuple[bytearray, str]:
    cut = rng.choice([rng.randrange(len(data)), rng.randrange(min(len(data), 4096)), len(data) - rng.randrange(1, 64)])
    return data[: max(0, cut)], f"truncate at {cut}"


def _overwrite_int(data: bytearray, rng: random.Random, pos: int, width: int) -> str:
    value = rng.choice(_INTERESTING_INTS + [rng.randrange(1 << (8 * width))]) % (1 << (8 * width))
    data[pos : pos + width] = value.to_bytes(width, "little")
    return f"set {width}-byte field at {pos} to {value}"


def _gguf_field_positions(data: bytes) -> list[tuple[int, int]]:
    """(offset, width) of every count, length, type and dimension in a GGUF header."""
    out = [(4, 4), (8, 8), (16, 8)]
    pos = 24
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)

    def string() -> None:
        nonlocal pos
        out.append((pos, 8))
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8 + n

    def value(vtype: int) -> None:
        nonlocal pos
        sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
        if vtype in sizes:
            out.append((pos, sizes[vtype]))
            pos += sizes[vtype]
        elif vtype == 8:
            string()
        elif vtype == 9:
            out.append((pos, 4))
            (etype,) = struct.unpack_from("<I", data, pos)
            out.append((pos + 4, 8))
            (count,) = struct.unpack_from("<Q", data, pos + 4)
            pos += 12
            for i in range(count):
                if i < 8 or i == count - 1:
                    value(etype)
                elif etype in sizes:
                    pos += sizes[etype]
                else:
                    (n,) = struct.unpack_from("<Q", data, pos)
                    pos += 8 + n

    for _ in range(n_kv):
        string()
        out.append((pos, 4))
        (vtype,) = struct.unpack_from("<I", data, pos)
        pos += 4
        value(vtype)
    for _ in range(n_tensors):
        string()
        (n_dims,) = struct.unpack_from("<I", data, pos)
        out.append((pos, 4))
        pos += 4
        out += [(pos + 8 * i, 8) for i in range(n_dims)]
        pos += 8 * n_dims
        out += [(pos, 4), (pos + 4, 8)]
        pos += 12
    return out


def _zip_field_positions(data: bytes) -> list[tuple[int, int]]:
    """(offset, width) of the sizes, CRCs, name lengths and offsets in a zip's headers."""
    out = []
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        for info in z.infolist():
            h = info.header_offset
            out += [(h + 14, 4), (h + 18, 4), (h + 22, 4), (h + 26, 2), (h + 28, 2), (h + 8, 2)]
    end = data.rfind(b"PK\x05\x06")
    cd = struct.unpack_from("<I", data, end + 16)[0] if end >= 0 else None
    if cd is not None:
        pos = cd
        while data[pos : pos + 4] == b"PK\x01\x02":
            out += [(pos + 16, 4), (pos + 20, 4), (pos + 24, 4), (pos + 42, 4), (pos + 10, 2)]
            n, m, k = struct.unpack_from("<HHH", data, pos + 28)
            pos += 46 + n + m + k
        out += [(end + 8, 2), (end + 10, 2), (end + 12, 4), (end + 16, 4)]
    return out


def _mutate_json(value: object, rng: random.Random, path: str = "") -> tuple[object, str]:
    """``value`` with one randomly chosen entry (at any depth) replaced, removed or duplicated."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        child = value[key]
        if isinstance(child, (dict, list)) and child and rng.random() < 0.6:
            new, what = _mutate_json(child, rng, f"{path}.{key}")
            return {**value, key: new}, what
        if rng.random() < 0.15:
            return {k: v for k, v in value.items() if k != key}, f"drop {path}.{key}"
        hostile = rng.choice(_HOSTILE_JSON)
        return {**value, key: hostile}, f"set {path}.{key} = {str(hostile)[:40]}"
    if isinstance(value, list) and value:
        i = rng.randrange(len(value))
        child = value[i]
        if isinstance(child, (dict, list)) and child and rng.random() < 0.6:
            new, what = _mutate_json(child, rng, f"{path}[{i}]")
            return value[:i] + [new] + value[i + 1 :], what
        if rng.random() < 0.2:
            return value[:i] + value[i + 1 :], f"drop {path}[{i}]"
        hostile = rng.choice(_HOSTILE_JSON)
        return value[:i] + [hostile] + value[i + 1 :], f"set {path}[{i}] = {str(hostile)[:40]}"
    return rng.choice(_HOSTILE_JSON), f"replace {path or 'the document'}"


def _mutate_json_file(file: Path, rng: random.Random) -> str:
    data = json.loads(file.read_text(encoding="utf-8"))
    new, what = _mutate_json(data, rng)
    file.write_text(json.dumps(new), encoding="utf-8")
    return f"{file.name}: {what}"


def _mutate_safetensors_header(file: Path, rng: random.Random) -> str:
    data = file.read_bytes()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8 : 8 + n])
    new, what = _mutate_json(header, rng)
    text = json.dumps(new).encode()
    file.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])
    return f"safetensors header: {what}"


def mutate(kind: str, case_dir: Path, bases: dict[str, Path], rng: random.Random) -> tuple[Path, str]:
    """Copy the base input of ``kind`` into ``case_dir``, damage it, and return (what to load, what was done)."""
    base = bases[kind]
    if kind in ("hf", "tokenizer.json"):
        target = case_dir / "hf"
        shutil.copytree(bases["hf"], target)
        if kind == "tokenizer.json":
            file = target / "tokenizer.json"
        else:
            file = target / rng.choice(["config.json", "config.json", "model.safetensors", "model.safetensors"])
        op = rng.choice(["json", "json", "json", "truncate", "flip"]) if file.suffix == ".json" else \
            rng.choice(["header", "header", "truncate", "flip", "length"])
        if op == "json":
            return target, _mutate_json_file(file, rng)
        if op == "header":
            return target, _mutate_safetensors_header(file, rng)
        data = bytearray(file.read_bytes())
        if op == "truncate":
            data, what = _truncate(data, rng)
        elif op == "length":
            what = _overwrite_int(data, rng, 0, 8)
        else:
            what = _flip_bits(data, rng)
        file.write_bytes(bytes(data))
        return target, f"{file.name}: {what}"
    file = case_dir / base.name
    data = bytearray(base.read_bytes())
    if kind == "gguf":
        op = rng.choice(["field", "field", "field", "truncate", "flip", "flip-header"])
        if op == "field":
            pos, width = rng.choice(_gguf_field_positions(bytes(data)))
            what = _overwrite_int(data, rng, pos, width)
        elif op == "flip-header":
            what = _flip_bits(data, rng) if len(data) < 4096 else _flip_bits_in(data, rng, 0, 4096)
        elif op == "truncate":
            data, what = _truncate(data, rng)
        else:
            what = _flip_bits(data, rng)
    else:  # model.pt: a zip written by torch.save
        op = rng.choice(["field", "field", "truncate", "flip", "flip", "pickle"])
        if op == "field":
            pos, width = rng.choice(_zip_field_positions(bytes(data)))
            what = _overwrite_int(data, rng, pos, width)
        elif op == "pickle":
            what = _mutate_pickle(data, rng)
        elif op == "truncate":
            data, what = _truncate(data, rng)
        else:
            what = _flip_bits(data, rng)
    file.write_bytes(bytes(data))
    return file, what


def _flip_bits_in(data: bytearray, rng: random.Random, start: int, end: int) -> str:
    n = rng.choice([1, 2, 4])
    for _ in range(n):
        data[rng.randrange(start, min(end, len(data)))] ^= 1 << rng.randrange(8)
    return f"flip {n} header bit(s)"


def _mutate_pickle(data: bytearray, rng: random.Random) -> str:
    """Flip bits inside the archive's data.pkl and write the archive again with correct CRCs, so the
    damaged pickle reaches the unpickler (half of the time the CRC is left stale instead)."""
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        members = [(info, z.read(info)) for info in z.infolist()]
    pkl = next(i for i, (info, _) in enumerate(members) if info.filename.endswith("data.pkl"))
    body = bytearray(members[pkl][1])
    what = _flip_bits_in(body, rng, 0, len(body))
    if rng.random() < 0.5:
        info = members[pkl][0]
        h = info.header_offset
        n, m = struct.unpack_from("<HH", data, h + 26)
        data[h + 30 + n + m : h + 30 + n + m + len(body)] = body
        return f"data.pkl: {what}, CRC left stale"
    members[pkl] = (members[pkl][0], bytes(body))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info, body_bytes in members:
            z.writestr(info, body_bytes)
    data[:] = out.getvalue()
    return f"data.pkl: {what}, CRC updated"


# ------------------------------------------------------------------------------------------------ running
def run_case(kind: str, target: Path, tokenizer: Path | None, with_describe: bool) -> str:
    """Load ``target`` as the command would and generate a few tokens; raise what the engine raises."""
    from llmbuilder_cli.engine.describe import describe
    from llmbuilder_cli.engine.generate import TokenGenerator
    from llmbuilder_cli.engine.loading import load
    from llmbuilder_cli import GenerationConfig

    if with_describe:
        describe(target, tokenizer)
    loaded = load(target, tokenizer, device="cpu")
    ids = loaded.tokenizer.encode("w3 w7 w9 hello the" if kind != "model.pt" else "the cat")
    if not ids:
        return "ok"
    ids = ids[: loaded.block_size - 2]
    out = list(TokenGenerator(loaded.model, ids, GenerationConfig(do_sample=False, max_new_tokens=2)))
    loaded.tokenizer.decode(out)
    return "ok"


def one_case(index: int, seed: int, bases: dict[str, Path], work: Path, *, show: bool = False,
             time_limit: float = 60.0) -> tuple[str, str, str]:
    """(kind, mutation, outcome) of case ``index``: outcome "ok", "error: <class>" or "FAIL: <why>"."""
    from llmbuilder_cli.errors import LLMBuilderError

    rng = random.Random(f"{seed}:{index}")
    kind = KINDS[index % len(KINDS)]
    case_dir = work / f"case{index}"
    case_dir.mkdir()
    try:
        target, what = mutate(kind, case_dir, bases, rng)
        tokenizer = FIXTURE / "tokenizer" if kind == "model.pt" else None
        t0 = time.perf_counter()
        try:
            outcome = run_case(kind, target, tokenizer, with_describe=rng.random() < 0.25)
        except LLMBuilderError as exc:
            text = exc.one_line()
            outcome = f"error: {type(exc).__name__}"
            if "\n" in text or "this is a bug" in text:
                outcome = f"FAIL: not one line: {text[:200]}"
        except BaseException as exc:  # noqa: BLE001 - everything else is what this script hunts
            if isinstance(exc, KeyboardInterrupt):
                raise
            if show:
                traceback.print_exc()
            outcome = f"FAIL: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        elapsed = time.perf_counter() - t0
        if elapsed > time_limit and not outcome.startswith("FAIL"):
            outcome = f"FAIL: took {elapsed:.0f} s"
        return kind, what, outcome
    finally:
        shutil.rmtree(case_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="the seed every case derives from")
    parser.add_argument("--count", type=int, default=2000, help="how many cases to run")
    parser.add_argument("--start", type=int, default=0, help="first case number")
    parser.add_argument("--case", type=int, default=None, help="run this one case and show its traceback")
    parser.add_argument("--memory-gib", type=float, default=3.0, help="address-space limit of this process")
    parser.add_argument("--quiet", action="store_true", help="print only failures and the summary")
    args = parser.parse_args(argv)

    cap = int(args.memory_gib * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import warnings

    warnings.simplefilter("ignore")  # a damaged vocabulary may warn; outcomes are what count here
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="fuzz-model-files-") as tmp:
        work = Path(tmp)
        bases = build_bases(work / "bases")
        indices = [args.case] if args.case is not None else range(args.start, args.start + args.count)
        counts: Counter[str] = Counter()
        failures = []
        t0 = time.perf_counter()
        for i in indices:
            kind, what, outcome = one_case(i, args.seed, bases, work, show=args.case is not None)
            counts[outcome.split(":")[0]] += 1
            counts[f"{kind} {outcome.split(':')[0]}"] += 1
            if outcome.startswith("FAIL"):
                failures.append((i, kind, what, outcome))
                print(f"case {i} [{kind}] {what}: {outcome}", flush=True)
            elif not args.quiet or args.case is not None:
                print(f"case {i} [{kind}] {what}: {outcome}", flush=True)
        total = len(indices)
        print(f"\n{total} cases (seed {args.seed}) in {time.perf_counter() - t0:.0f} s: "
              f"{counts['ok']} loaded, {counts['error']} domain errors, {counts['FAIL']} failures")
        for kind in KINDS:
            print(f"  {kind}: " + ", ".join(f"{o} {counts[f'{kind} {o}']}" for o in ("ok", "error", "FAIL")))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
