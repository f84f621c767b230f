"""``llmbuilder export hf``: an llmbuilder model as a standard Hugging Face GPT-2 directory.

* The SentencePiece → tokenizer.json conversion agrees with ``sentencepiece`` itself (ids and decoded text)
  on a few hundred varied strings, for the fixture's tokenizer and for freshly trained variants (BPE,
  unigram, char, byte fallback, other normalisation rules and whitespace settings).
* The protobuf reader reads what sentencepiece reads.
* Round trip: the exported directory loads in transformers (test-only dependency) as GPT2LMHeadModel, and
  its greedy ids equal ours and llmbuilder's reference ids; AutoTokenizer encodes prompts to our ids. Done
  for the llmbuilder fixture (SentencePiece) and the built-in demo model (tokenizer.json, fp16 weights).
* Files, dtypes, the atomic write, refusals and the CLI's exit codes.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import torch

from conftest import FIXTURE, GREEDY_CASES, MODEL_PT, TOKENIZER_DIR
from llmbuilder_cli import GenerationConfig, generate, load_model
from llmbuilder_cli.cli.app import main
from llmbuilder_cli.engine.tokenizers import sp_convert
from llmbuilder_cli.engine.formats.export_hf import export_hf
from llmbuilder_cli.engine.tokenizers.sp_convert import convert_sentencepiece, parse_model_proto, read_sentencepiece_model
from llmbuilder_cli.errors import ModelLoadError, TokenizerError, UsageError

spm = pytest.importorskip("sentencepiece")

SP_MODEL = TOKENIZER_DIR / "tokenizer.model"
DEMO_DIR = Path(__file__).resolve().parent.parent / "llmbuilder_cli" / "demo_model"
DEMO_EXPECTED = json.loads((Path(__file__).parent / "data" / "demo_expected.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------- test texts
FIXED_TEXTS = [
    "", " ", "   ", "\t", "\n", " \n\t ", "a", " a ", "Once upon a time", "The  FOX", "ﬁ", "a\tb\nc",
    "Hello, World!  How are   you?\n\n", "  leading", "trailing   ", "x\n\ny", "1234567890", "3.14159 2,718 1e-9",
    "café naïve résumé", "CAFÉ NAÏVE", "日本 x", "x 日本", "中文字符", "한국어 텍스트", "😀👍🏽 family 👨‍👩‍👧 🇫🇷",
    "aaaaaaa", "a" * 40, "hahahahaha", "!!!!!!!", "......", "\u00a0nbsp\u00a0", "full\u3000width\u3000ｆｕｌｌ",
    "Ω Å K", "①②③ Ⅻ ½", "ǅ ǆ ß ẞ", "İstanbul", "ΆΈΉ Ώρα", "Ёлка Йод", "\u200bzero\u200bwidth", "a\u2028b\u2029c",
    "\x00\x01ctl\x7f", "tab\tsep\tvalues", "u\u0308ber", "E\u0301COLE", "\U0001F600" * 3, "~^_^~ #tag @user 50% $9.99",
]
WORDS = [
    "the", "fox", "ran", "to", "The", "Little", "DUCK", "once", "upon", "a", "time", "was", "hello", "world", "42",
    "2024", "3.5", "x", "naïve", "café", "Élan", "ÉCOLE", "Zoë", "Ärger", "Übermut", "Ñandú", "Søren", "Þór",
    "日本", "中文", "한국어", "😀", "👍🏽", "❤️", "🇯🇵", "ﬁne", "①", "Ⅻ", "ｆｕｌｌ", "αβγ", "Ωμέγα", "Привет",
    "مرحبا", "שלום", "हिन्दी", "ไทย", "don't", "e-mail", "(x)", "[y]", "{z}", "a+b=c", "\\", "/path/to", "zzz",
    "ŁÓDŹ", "Ǵ", "Ḱ", "ﬀ", "㎏", "™", "…", "—", "“quoted”", "‘single’", "«guillemets»",
]
SEPARATORS = [" ", " ", " ", "  ", "   ", "\t", "\n", "\n\n", " \n ", "", ",", ", ", "\u3000", "\u00a0"]


def varied_texts(seed: int = 0, n: int = 400) -> list[str]:
    """ASCII, digits, repeated/leading/trailing spaces, newlines, tabs, accents (composed and decomposed),
    CJK, emoji, and characters missing from a small vocabulary."""
    rnd = random.Random(seed)
    out = list(FIXED_TEXTS)
    while len(out) < n:
        parts = []
        for _ in range(rnd.randint(1, 12)):
            parts += [rnd.choice(WORDS), rnd.choice(SEPARATORS)]
        text = "".join(parts)
        r = rnd.random()
        if r < 0.15:
            text = " " * rnd.randint(1, 3) + text
        elif r < 0.3:
            text += rnd.choice([" ", "  ", "\n", "\t "])
        out.append(unicodedata.normalize(rnd.choice(["NFC", "NFC", "NFC", "NFD", "NFKC"]), text))
    return out


TEXTS = varied_texts()


def mismatches(model_file: Path, texts: list[str]) -> list[tuple]:
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    tok = convert_sentencepiece(read_sentencepiece_model(model_file))
    bad = []
    for text in texts:
        want, got = list(sp.encode(text)), tok.encode(text).ids
        if want != got or sp.decode(want) != tok.decode(got):
            bad.append((text, want, got, sp.decode(want), tok.decode(got)))
    return bad


# ------------------------------------------------------------------------------ trained SentencePiece variants
def _corpus(n: int = 2000) -> list[str]:
    rnd = random.Random(1)
    words = WORDS + ["hello", "forest", "friends", "loved", "play", "girl", "named", "Anna", "aaaa", "bbbb", "!", "?"]
    return [" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 15))) for _ in range(n)]


VARIANTS = {
    "bpe_byte_fallback": {"byte_fallback": True},
    "unigram": {"model_type": "unigram"},
    "unigram_byte_fallback_casefold": {"model_type": "unigram", "byte_fallback": True, "normalization_rule_name": "nmt_nfkc_cf"},
    "char": {"model_type": "char"},
    "bpe_identity": {"normalization_rule_name": "identity"},
    "bpe_nfkc": {"normalization_rule_name": "nfkc"},
    "bpe_no_dummy_prefix": {"add_dummy_prefix": False},
    "bpe_keep_whitespace": {"remove_extra_whitespaces": False, "byte_fallback": True},
    "unigram_keep_whitespace_identity": {"model_type": "unigram", "remove_extra_whitespaces": False,
                                         "normalization_rule_name": "identity"},
    "bpe_split_digits_no_pad": {"split_digits": True, "pad_id": -1, "unk_id": 0, "bos_id": 1, "eos_id": 2},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Small SentencePiece models trained in the test (well under a second each)."""
    folder = tmp_path_factory.mktemp("spm")
    out = {}
    for name, options in VARIANTS.items():
        args = dict(vocab_size=400, model_type="bpe", character_coverage=0.9995, hard_vocab_limit=False, pad_id=0,
                    unk_id=1, bos_id=2, eos_id=3, num_threads=1, minloglevel=2)
        args.update(options)
        spm.SentencePieceTrainer.train(sentence_iterator=iter(_corpus()), model_prefix=str(folder / name), **args)
        out[name] = folder / f"{name}.model"
    return out


# ---------------------------------------------------------------------------------------- protobuf reader
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _field(number: int, wire: int, payload: bytes | int) -> bytes:
    key = _varint(number << 3 | wire)
    if wire == 0:
        return key + _varint(payload)
    if wire == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def test_protobuf_reader_reads_handmade_message():
    piece = _field(1, 2, "▁hi".encode()) + _field(2, 5, struct.pack("<f", -1.5)) + _field(3, 0, 1)
    control = _field(1, 2, b"</s>") + _field(3, 0, 3) + _field(99, 1, b"\x00" * 8)  # unknown fixed64 is skipped
    unk = _field(1, 2, b"<unk>") + _field(3, 0, 2)
    trainer = (_field(3, 0, 2) + _field(35, 0, 1) + _field(40, 0, 2) + _field(42, 0, 1) + _field(41, 0, 2**64 - 1)
               + _field(43, 0, 2**64 - 1) + _field(44, 2, b"?") + _field(7, 2, b"text"))
    normalizer = _field(1, 2, b"nmt_nfkc") + _field(2, 2, b"\x01\x02") + _field(3, 0, 0) + _field(4, 0, 0)
    data = (_field(1, 2, piece) + _field(1, 2, control) + _field(1, 2, unk) + _field(2, 2, trainer)
            + _field(3, 2, normalizer) + _field(17, 5, b"abcd"))
    m = parse_model_proto(data)
    assert m.pieces == (("▁hi", -1.5, 1), ("</s>", 0.0, 3), ("<unk>", 0.0, 2))
    assert (m.model_type, m.byte_fallback, m.unk_id, m.eos_id, m.bos_id, m.pad_id) == ("bpe", True, 2, 1, -1, -1)
    assert m.unk_surface == "?" and m.normalizer_name == "nmt_nfkc" and m.precompiled_charsmap == b"\x01\x02"
    assert not m.add_dummy_prefix and not m.remove_extra_whitespaces and m.escape_whitespaces  # default true
    assert m.special_tokens() == {"bos_token": None, "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None}


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x0a", b"\x08\xff", b"\x0b", b"", b"\x00\x01"],
                         ids=["short-field", "no-length", "short-varint", "group", "empty", "field-0"])
def test_protobuf_reader_rejects_malformed_data(data, tmp_path):
    with pytest.raises(ValueError):
        parse_model_proto(data)
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(data)
    with pytest.raises(TokenizerError):
        read_sentencepiece_model(bad)


def test_reader_agrees_with_sentencepiece_on_the_fixture():
    m = read_sentencepiece_model(SP_MODEL)
    sp = spm.SentencePieceProcessor(model_file=str(SP_MODEL))
    assert len(m.pieces) == sp.get_piece_size() == 512
    for i, (piece, score, kind) in enumerate(m.pieces):
        assert piece == sp.id_to_piece(i) and score == pytest.approx(sp.get_score(i), abs=0)
        assert (kind == sp_convert.CONTROL) == sp.is_control(i) and (kind == sp_convert.UNKNOWN) == sp.is_unknown(i)
    assert (m.model_type, m.normalizer_name, m.byte_fallback) == ("bpe", "nmt_nfkc_cf", False)
    assert (m.unk_id, m.bos_id, m.eos_id, m.pad_id) == (1, 2, 3, 0)
    assert m.add_dummy_prefix and m.remove_extra_whitespaces and m.precompiled_charsmap


def test_reader_agrees_with_sentencepiece_on_trained_models(trained):
    for name, file in trained.items():
        m, sp = read_sentencepiece_model(file), spm.SentencePieceProcessor(model_file=str(file))
        assert (m.unk_id, m.bos_id, m.eos_id, m.pad_id) == (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()), name
        assert [p for p, _, _ in m.pieces] == [sp.id_to_piece(i) for i in range(sp.get_piece_size())], name
        assert m.byte_fallback == any(sp.is_byte(i) for i in range(sp.get_piece_size())), name
        assert m.model_type == VARIANTS[name].get("model_type", "bpe"), name


# ------------------------------------------------------------------------------------- conversion parity
def test_varied_texts_cover_the_required_classes():
    joined = "".join(TEXTS)
    assert len(TEXTS) >= 400
    for needle in ("  ", "\n", "\t", "é", "e\u0301", "日", "😀", "7"):
        assert needle in joined, needle
    assert any(t.startswith(" ") for t in TEXTS) and any(t.endswith(" ") for t in TEXTS)


def test_fixture_tokenizer_converts_exactly():
    assert mismatches(SP_MODEL, TEXTS) == []


def test_fixture_tokenizer_reference_examples():
    tok = convert_sentencepiece(read_sentencepiece_model(SP_MODEL))
    assert tok.encode("Once upon a time").ids == [159, 161, 7, 160]
    assert tok.encode("The  FOX").ids == tok.encode(" the fox ").ids == [6, 128]
    assert tok.encode("日本 x").ids == [484, 1, 484, 510]
    assert tok.decode([484, 1, 484, 510]) == " ⁇  x"
    assert tok.decode([6, 3, 6]) == "the the" and tok.decode([6, 1, 6]) == "the ⁇  the"
    assert tok.encode("").ids == [] and tok.decode([]) == ""


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_trained_variants_convert_exactly(trained, variant):
    assert mismatches(trained[variant], TEXTS) == []


def test_decode_of_arbitrary_id_sequences():
    """Generated ids come in any order: decode must agree beyond what encode produces."""
    sp = spm.SentencePieceProcessor(model_file=str(SP_MODEL))
    tok = convert_sentencepiece(read_sentencepiece_model(SP_MODEL))
    rnd = random.Random(3)
    for _ in range(2000):
        ids = [rnd.randrange(512) for _ in range(rnd.randint(0, 12))]
        if rnd.random() < 0.3:
            ids.insert(0, rnd.choice([0, 1, 2, 3, 484]))
        assert tok.decode(ids) == sp.decode(ids), ids


def test_decode_with_byte_fallback(trained):
    """Byte pieces that spell valid UTF-8 decode as SentencePiece does (invalid runs: KNOWN_DIFFERENCES)."""
    file = trained["bpe_byte_fallback"]
    sp = spm.SentencePieceProcessor(model_file=str(file))
    tok = convert_sentencepiece(read_sentencepiece_model(file))
    plain = [i for i in range(sp.get_piece_size()) if not sp.is_byte(i)]
    rnd = random.Random(4)
    for _ in range(1000):
        ids = [rnd.choice(plain) for _ in range(rnd.randint(1, 8))]
        char = rnd.choice(["é", "日", "😀", "ß", "\x01", "a", "\u0301"])
        ids[rnd.randint(1, len(ids)):1] = [sp.piece_to_id(f"<0x{b:02X}>") for b in char.encode("utf-8")]
        assert tok.decode(ids) == sp.decode(ids), ids


def test_user_defined_pieces_match_whole(tmp_path):
    spm.SentencePieceTrainer.train(sentence_iterator=iter(_corpus(500)), model_prefix=str(tmp_path / "u"),
                                   vocab_size=300, hard_vocab_limit=False, user_defined_symbols=["<sep>"],
                                   num_threads=1, minloglevel=2)
    file = tmp_path / "u.model"
    with_symbol = ["a <sep> b", "x <sep>", "x<sep>y", "hello <sep> world <sep>", "a  <sep>\tb", "1 <sep> <sep> 2"]
    assert mismatches(file, TEXTS + with_symbol) == []
    # A text that starts with a user-defined piece gets no dummy ▁ before it (KNOWN_DIFFERENCES).
    assert len(mismatches(file, ["<sep> x"])) == 1


def test_literal_control_text_is_the_documented_difference():
    """Control pieces are special tokens, as in every Hugging Face SentencePiece tokenizer."""
    tok = convert_sentencepiece(read_sentencepiece_model(SP_MODEL))
    sp = spm.SentencePieceProcessor(model_file=str(SP_MODEL))
    assert tok.encode("</s>").ids == [3] and 3 not in sp.encode("</s>")
    assert any("control piece" in d for d in sp_convert.KNOWN_DIFFERENCES)


def test_word_models_are_refused(tmp_path):
    spm.SentencePieceTrainer.train(sentence_iterator=iter(_corpus(500)), model_prefix=str(tmp_path / "w"),
                                   vocab_size=200, hard_vocab_limit=False, model_type="word", num_threads=1,
                                   minloglevel=2)
    with pytest.raises(TokenizerError, match="word"):
        convert_sentencepiece(read_sentencepiece_model(tmp_path / "w.model"))


# ------------------------------------------------------------------------------------------ export files
def _files(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "tiny-hf"
    report = export_hf(MODEL_PT, None, out)
    assert report.out_dir == out.resolve()
    return out


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "demo-hf"
    export_hf(DEMO_DIR, None, out)
    return out


def test_export_writes_the_standard_files(tiny_export):
    names = {p.name for p in tiny_export.iterdir()}
    assert names == {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                     "tokenizer_config.json", "special_tokens_map.json", "llmbuilder_export.json"}
    marker = json.loads((tiny_export / "llmbuilder_export.json").read_text())
    assert marker["written_by"] == "llmbuilder-cli" and marker["source"] == str(MODEL_PT.resolve())
    cfg = json.loads((tiny_export / "config.json").read_text())
    assert cfg["architectures"] == ["GPT2LMHeadModel"] and cfg["model_type"] == "gpt2"
    assert (cfg["vocab_size"], cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["n_positions"], cfg["n_ctx"]) == (
        512, 2, 4, 64, 128, 128)
    assert cfg["activation_function"] == "gelu" and cfg["layer_norm_epsilon"] == 1e-5
    assert cfg["tie_word_embeddings"] is True and cfg["torch_dtype"] == "float32"
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (2, 3, 0)
    gen = json.loads((tiny_export / "generation_config.json").read_text())
    d = GenerationConfig()
    assert gen == {"bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0, "do_sample": d.do_sample,
                   "temperature": d.temperature, "top_k": d.top_k, "top_p": d.top_p,
                   "repetition_penalty": d.repetition_penalty, "max_new_tokens": d.max_new_tokens}
    tcfg = json.loads((tiny_export / "tokenizer_config.json").read_text())
    assert tcfg["add_bos_token"] is False and tcfg["add_eos_token"] is False
    assert (tcfg["bos_token"], tcfg["eos_token"], tcfg["pad_token"]) == ("<s>", "</s>", "<pad>")
    assert "unk_token" not in tcfg  # see export_hf: transformers would turn "<unk>" into a special token
    assert tcfg["model_max_length"] == 128 and tcfg["clean_up_tokenization_spaces"] is False


def test_safetensors_layout(tiny_export):
    from safetensors.torch import load_file

    t = load_file(str(tiny_export / "model.safetensors"))
    assert "lm_head.weight" not in t  # tied: stored once, as transformers does
    assert len(t) == 4 + 12 * 2
    state = torch.load(MODEL_PT, map_location="cpu", weights_only=True)["model_state_dict"]
    assert torch.equal(t["transformer.wte.weight"], state["token_embedding.weight"])
    assert torch.equal(t["transformer.h.1.attn.c_attn.weight"], state["blocks.1.attn.qkv_proj.weight"].t())
    assert torch.equal(t["transformer.h.0.attn.c_attn.bias"], torch.zeros(192))
    assert torch.equal(t["transformer.h.0.mlp.c_proj.weight"], state["blocks.0.mlp.fc2.weight"].t())
    assert all(v.dtype == torch.float32 for v in t.values())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_export_dtype(tmp_path, dtype):
    from safetensors.torch import load_file

    report = export_hf(MODEL_PT, TOKENIZER_DIR, tmp_path / "out", dtype=dtype)
    assert report.config["dtype"] == dtype and any(dtype in n for n in report.notes)
    t = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert {v.dtype for v in t.values()} == {getattr(torch, dtype)}
    assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == dtype


# --------------------------------------------------------------------------- the export runs in this tool
@pytest.fixture(scope="module")
def one_thread():
    """torch on one CPU thread: these models are tiny, and more threads only add synchronisation (5 s
    instead of 0.4 s for 60 demo tokens with transformers on two cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_exported_fixture_runs_in_llmbuilder_cli(tiny_export, one_thread):
    """Loaded back as a Hugging Face directory (GPT-2 model, converted tokenizer.json), the export
    generates llmbuilder's reference outputs: prompt ids, greedy ids and the decoded text."""
    loaded = load_model(tiny_export, device="cpu")
    assert loaded.info.architecture == "gpt2" and loaded.tokenizer.kind == "huggingface"
    assert loaded.tokenizer.add_bos is False and loaded.tokenizer.eos_ids == (3,)
    d = GenerationConfig()
    assert loaded.generation_defaults == {"temperature": d.temperature, "top_k": d.top_k, "top_p": d.top_p,
                                          "repetition_penalty": d.repetition_penalty, "do_sample": d.do_sample,
                                          "max_new_tokens": d.max_new_tokens}
    for case in GREEDY_CASES:
        result = generate(loaded, prompt=case["prompt"], config=GenerationConfig(
            do_sample=False, max_new_tokens=40, repetition_penalty=case["config"]["repetition_penalty"]))
        assert result.prompt_ids == case["prompt_ids"] and result.token_ids == case["new_ids"], case["case"]
        assert result.full_text == case["text"]


# ------------------------------------------------------------------------------ transformers round trip
@pytest.fixture(scope="module")
def transformers_mod(one_thread):
    return pytest.importorskip("transformers")


def _hf_greedy(model, ids: list[int], max_new: int, penalty: float, eos: int | None) -> list[int]:
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             do_sample=False, max_new_tokens=max_new, repetition_penalty=penalty,
                             eos_token_id=eos, pad_token_id=eos if eos is not None else 0)
    return out[0, len(ids):].tolist()


@pytest.mark.slow
def test_fixture_round_trip_through_transformers(tiny_export, tiny_loaded, transformers_mod):
    model = transformers_mod.GPT2LMHeadModel.from_pretrained(tiny_export, dtype=torch.float32).eval()
    hf_tok = transformers_mod.AutoTokenizer.from_pretrained(tiny_export)
    for case in GREEDY_CASES:
        prompt_ids = hf_tok.encode(case["prompt"])
        assert prompt_ids == tiny_loaded.tokenizer.encode(case["prompt"]) == case["prompt_ids"]
        penalty = case["config"]["repetition_penalty"]
        theirs = _hf_greedy(model, prompt_ids, 40, penalty, 3)
        ours = generate(tiny_loaded, prompt=case["prompt"], config=GenerationConfig(
            do_sample=False, max_new_tokens=40, repetition_penalty=penalty)).token_ids
        assert theirs == ours == case["new_ids"], case["case"]
        assert hf_tok.decode(prompt_ids + theirs, skip_special_tokens=True) == case["text"]
    # first-step logits, as tightly as the reference parity test checks ours (format reference §6.2)
    with torch.inference_mode():
        logits = model(torch.tensor([case["prompt_ids"]])).logits[0, -1]
        ours = tiny_loaded.model.forward(torch.tensor([case["prompt_ids"]]))[0]
    assert torch.allclose(logits, ours, atol=5e-5, rtol=0)


@pytest.mark.slow
def test_exported_tokenizer_in_transformers_matches_ours(tiny_export, transformers_mod):
    hf_tok = transformers_mod.AutoTokenizer.from_pretrained(tiny_export)
    sp = spm.SentencePieceProcessor(model_file=str(SP_MODEL))
    for text in TEXTS[:200]:
        ids = list(sp.encode(text))
        assert hf_tok.encode(text) == ids, text
        assert hf_tok.decode(ids, skip_special_tokens=True) == sp.decode(ids), text


@pytest.mark.slow
def test_demo_round_trip_through_transformers(demo_export, transformers_mod):
    cfg = json.loads((demo_export / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is True and cfg["eos_token_id"] == 0 and cfg["bos_token_id"] is None
    loaded = load_model(DEMO_DIR, DEMO_DIR / "tokenizer", device="cpu")
    model = transformers_mod.GPT2LMHeadModel.from_pretrained(demo_export, dtype=torch.float32).eval()
    hf_tok = transformers_mod.AutoTokenizer.from_pretrained(demo_export)
    assert (demo_export / "tokenizer.json").read_bytes().strip() == (
        json.dumps(json.loads((DEMO_DIR / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8")),
                   ensure_ascii=False, indent=2).encode())
    for case in DEMO_EXPECTED["cases"]:
        prompt_ids = hf_tok.encode(case["prompt"])
        assert prompt_ids == loaded.tokenizer.encode(case["prompt"])
        n = case["max_new_tokens"]
        theirs = _hf_greedy(model, prompt_ids, n, 1.0, 0)
        ours = generate(loaded, prompt=case["prompt"], config=GenerationConfig(do_sample=False, max_new_tokens=n))
        assert theirs == ours.token_ids == case["token_ids"], case["prompt"]
        assert hf_tok.decode(theirs, skip_special_tokens=True) == ours.text


@pytest.mark.slow
def test_untied_head_round_trip(tmp_path, transformers_mod):
    """A checkpoint whose output head differs from the embedding keeps its own lm_head.weight."""
    torch.manual_seed(0)
    V, C, L, P = 512, 32, 2, 16
    state = {"token_embedding.weight": torch.randn(V, C), "position_embedding.weight": torch.randn(P, C) * 0.1,
             "ln_f.weight": torch.ones(C), "ln_f.bias": torch.zeros(C), "lm_head.weight": torch.randn(V, C)}
    for i in range(L):
        p = f"blocks.{i}."
        state.update({p + "ln1.weight": torch.ones(C) + 0.1 * torch.randn(C), p + "ln1.bias": 0.1 * torch.randn(C),
                      p + "attn.qkv_proj.weight": 0.2 * torch.randn(3 * C, C),
                      p + "attn.out_proj.weight": 0.2 * torch.randn(C, C), p + "attn.out_proj.bias": 0.1 * torch.randn(C),
                      p + "ln2.weight": torch.ones(C), p + "ln2.bias": torch.zeros(C),
                      p + "mlp.fc1.weight": 0.2 * torch.randn(4 * C, C), p + "mlp.fc1.bias": 0.1 * torch.randn(4 * C),
                      p + "mlp.fc2.weight": 0.2 * torch.randn(C, 4 * C), p + "mlp.fc2.bias": 0.1 * torch.randn(C)})
    cfg = {"vocab_size": V, "num_layers": L, "num_heads": 4, "embedding_dim": C, "max_seq_length": P, "dropout": 0.0}
    torch.save({"model_state_dict": state, "model_config": cfg}, tmp_path / "model.pt")
    report = export_hf(tmp_path / "model.pt", TOKENIZER_DIR, tmp_path / "hf")
    assert report.config["tie_word_embeddings"] is False
    hf = transformers_mod.GPT2LMHeadModel.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    ours = load_model(tmp_path / "model.pt", TOKENIZER_DIR, device="cpu")
    ids = torch.tensor([[5, 17, 300, 42, 7, 7, 128]])
    with torch.inference_mode():
        assert torch.allclose(hf(ids).logits[0, -1], ours.model.forward(ids)[0], atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------- tokenizer.json input
def _template_tokenizer(folder: Path) -> Path:
    """A tokenizer.json like llmbuilder's "huggingface" backend writes (format reference §3.4)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(_corpus(300), trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<unk>", "<s>", "</s>"]))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1",
                                                       special_tokens=[("<s>", 2), ("</s>", 3)])
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_tokenizer_json_post_processor_is_removed(tmp_path):
    tok_dir = _template_tokenizer(tmp_path / "tok")
    report = export_hf(MODEL_PT, tok_dir, tmp_path / "out")
    assert any("post-processor" in n for n in report.notes) and "post-processor removed" in report.tokenizer
    data = json.loads((tmp_path / "out" / "tokenizer.json").read_text())
    assert data["post_processor"] is None
    from tokenizers import Tokenizer

    exported = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    original = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    text = "the fox ran to the forest"
    assert exported.encode(text).ids == original.encode(text, add_special_tokens=False).ids
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (2, 3, 0)


# ------------------------------------------------------------------------------------- safety and errors
def test_non_empty_out_dir_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        export_hf(MODEL_PT, None, out)
    assert _files(out) == {"keep.txt": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_replaces_the_whole_directory(tmp_path):
    out = tmp_path / "out"
    export_hf(DEMO_DIR, None, out)  # a previous export, with a chat-free tokenizer.json of its own
    before = _files(out)
    export_hf(MODEL_PT, None, out, overwrite=True)
    after = _files(out)
    assert after["tokenizer.json"] != before["tokenizer.json"] and after["model.safetensors"] != before["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or backup left
    # Anything else is refused, even with overwrite (see test_hostile_cli.py for the source directory).
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "stale.bin").write_bytes(b"x")
    with pytest.raises(UsageError, match="not a previous export"):
        export_hf(MODEL_PT, None, tmp_path / "other", overwrite=True)
    assert _files(tmp_path / "other") == {"stale.bin": b"x"}


def test_empty_out_dir_is_used(tmp_path):
    (tmp_path / "out").mkdir()
    export_hf(MODEL_PT, None, tmp_path / "out")
    assert (tmp_path / "out" / "config.json").is_file()


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    import safetensors.torch

    out = tmp_path / "out"
    export_hf(MODEL_PT, None, out)
    previous = _files(out)

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(UsageError, match="cannot write the export to .*: No space left on device"):
        export_hf(MODEL_PT, None, out, overwrite=True)
    assert _files(out) == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_bad_arguments(tmp_path):
    with pytest.raises(UsageError):
        export_hf(MODEL_PT, None, None)
    with pytest.raises(UsageError, match="dtype"):
        export_hf(MODEL_PT, None, tmp_path / "o", dtype="int8")
    with pytest.raises(ModelLoadError):
        export_hf(tmp_path / "missing.pt", None, tmp_path / "o")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\x00" * 60)
    with pytest.raises(ModelLoadError, match="GGUF"):
        export_hf(gguf, TOKENIZER_DIR, tmp_path / "o")
    with pytest.raises(TokenizerError):
        export_hf(MODEL_PT, tmp_path, tmp_path / "o")  # no tokenizer there
    assert not (tmp_path / "o").exists()


def test_an_exported_directory_is_not_exported_again(tiny_export, tmp_path):
    with pytest.raises(ModelLoadError, match="Hugging Face model directory"):
        export_hf(tiny_export, TOKENIZER_DIR, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_tokenizer_larger_than_the_model_is_refused(tmp_path):
    tok_dir = _template_tokenizer(tmp_path / "tok")
    ck = torch.load(MODEL_PT, map_location="cpu", weights_only=True)
    state = dict(ck["model_state_dict"])
    state["token_embedding.weight"] = state["token_embedding.weight"][:100].clone()
    state["lm_head.weight"] = state["token_embedding.weight"]
    torch.save({"model_state_dict": state, "model_config": {**ck["model_config"], "vocab_size": 100}}, tmp_path / "m.pt")
    with pytest.raises(TokenizerError, match="tokens"):
        export_hf(tmp_path / "m.pt", tok_dir, tmp_path / "o")


# -------------------------------------------------------------------------------------------------- CLI
def test_cli_exports(tmp_path, capsys):
    out = tmp_path / "hf"
    rc = main(["export", "hf", str(MODEL_PT), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.out == ""
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert "model.safetensors" in captured.err and "serve it with:" in captured.err


def test_cli_demo_and_options(tmp_path, capsys):
    rc = main(["export", "hf", "demo", "-o", str(tmp_path / "d"), "--dtype", "bfloat16"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "d" / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_cli_refuses_non_empty_out_dir(tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["export", "hf", str(MODEL_PT), "-o", str(out)]) == 0
    before = {k: hashlib.sha256(v).hexdigest() for k, v in _files(out).items()}
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    rc = main(["export", "hf", str(FIXTURE), "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    assert captured.err.startswith("Error: ") and "--force" in captured.err
    assert {k: hashlib.sha256(v).hexdigest() for k, v in _files(out).items()} == before
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    assert main(["export", "hf", str(FIXTURE), "-o", str(out), "--force"]) == 0


def test_cli_missing_model(tmp_path, capsys):
    rc = main(["export", "hf", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "hf")])
    captured = capsys.readouterr()
    assert rc == 3 and captured.out == "" and "not found" in captured.err
    assert not (tmp_path / "hf").exists()


def test_cli_usage_errors(tmp_path, capsys):
    assert main(["export", "hf", str(MODEL_PT)]) == 2  # no --out
    assert main(["export", "hf", str(MODEL_PT), "-o", str(tmp_path / "x"), "--dtype", "int8"]) == 2


def test_export_help_does_not_import_torch():
    code = ("import sys, json\nfrom llmbuilder_cli.cli.app import main\n"
            "assert main(['export', 'hf', '--help']) == 0\n"
            "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    mods = set(json.loads(out.strip().splitlines()[-1]))
    assert not mods & {"torch", "tokenizers", "sentencepiece", "safetensors"}
