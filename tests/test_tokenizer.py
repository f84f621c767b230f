"""Tokenizers: llmbuilder's SentencePiece conventions, the HF tokenizer.json variant, path resolution,
and streaming detokenization that never splits a UTF-8 character and joins to the full decode."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from conftest import TOKENIZER_DIR
from llmbuilder_cli.engine.tokenizers.tokenizer import (
    HFTokenizer,
    SentencePieceTokenizer,
    StreamDecoder,
    load_tokenizer,
    resolve_tokenizer_file,
)
from llmbuilder_cli.errors import TokenizerError


@pytest.fixture(scope="module")
def sp():
    return load_tokenizer(TOKENIZER_DIR)


# Format reference §3.2, fixture tokenizer.
@pytest.mark.parametrize(
    "text, ids, decoded",
    [
        ("Once upon a time", [159, 161, 7, 160], "once upon a time"),
        ("The  FOX", [6, 128], "the fox"),
        (" the fox ", [6, 128], "the fox"),
        ("ﬁ", [87], "fi"),
        ("a\tb\nc", [7, 10, 27], "a b c"),
        ("日本 x", [484, 1, 484, 510], " ⁇  x"),
        ("", [], ""),
    ],
)
def test_sentencepiece_matches_llmbuilder(sp, text, ids, decoded):
    assert isinstance(sp, SentencePieceTokenizer)
    assert sp.encode(text) == ids
    assert sp.decode(ids) == decoded


def test_sentencepiece_specials(sp):
    assert sp.vocab_size == 512
    assert sp.eos_ids == (3,)
    assert sp.decode([6, 3, 6]) == "the the"
    assert sp.decode([6, 1, 6]) == "the ⁇  the"
    assert 3 not in sp.encode("</s>")  # literal text never becomes EOS


def test_resolution_order(tmp_path):
    assert resolve_tokenizer_file(TOKENIZER_DIR).name == "tokenizer.model"
    assert resolve_tokenizer_file(TOKENIZER_DIR / "tokenizer.model").name == "tokenizer.model"
    with pytest.raises(TokenizerError, match="no tokenizer.model or tokenizer.json"):
        resolve_tokenizer_file(tmp_path)
    with pytest.raises(TokenizerError, match="not found"):
        resolve_tokenizer_file(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(TokenizerError, match="not a tokenizer file"):
        resolve_tokenizer_file(tmp_path / "x.txt")


def test_damaged_tokenizer_files_are_clear_errors(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"\x00garbage")
    with pytest.raises(TokenizerError, match="cannot read SentencePiece model"):
        load_tokenizer(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot read tokenizer file"):
        load_tokenizer(bad)


def llmbuilder_style_hf_tokenizer(path):
    """A tokenizer.json like llmbuilder's train_tokenizer writes (format reference §3.4)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<pad>", "<unk>", "<s>", "</s>"])
    tok.train_from_iterator(["Once upon a time, the fox ran to the garden."] * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
    tok.save(str(path))


def test_hf_tokenizer_json_variant(tmp_path):
    llmbuilder_style_hf_tokenizer(tmp_path / "tokenizer.json")
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok, HFTokenizer)
    assert tok.eos_ids == (3,)
    ids = tok.encode("Once upon a time")
    assert 2 not in ids and 3 not in ids  # no BOS/EOS added
    assert tok.decode(ids + [3]) == "Once upon a time"  # no decoder: pieces joined by spaces; specials dropped


def byte_level_tokenizer(path):
    """A byte-level BPE where multi-byte characters span several tokens."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world, the fox", "naïve café", "日本語のテキスト", "emoji 🙂🦊"] * 5, trainer)
    tok.save(str(path))
    return load_tokenizer(path)


def _stream(tok, prompt_ids, new_ids):
    dec = StreamDecoder(tok, prompt_ids)
    chunks = [dec.step(i) for i in new_ids]
    chunks.append(dec.flush())
    return chunks


def test_stream_decoder_never_emits_half_characters(tmp_path):
    tok = byte_level_tokenizer(tmp_path / "tokenizer.json")
    assert tok.eos_ids == (tok._tok.token_to_id("<|endoftext|>"),)
    text = "the fox 🦊 said 日本語, naïve café 🙂!"
    ids = tok.encode(text)
    assert len(ids) > len(text.split())  # several tokens per multi-byte character
    prompt, new = ids[:3], ids[3:]
    chunks = _stream(tok, prompt, new)
    assert all("\ufffd" not in c for c in chunks)
    assert tok.decode(prompt) + "".join(chunks) == text


def test_stream_decoder_joins_to_full_decode_sentencepiece(sp):
    rng = random.Random(0)
    for trial in range(2000):
        prompt = [rng.randrange(4, 512) for _ in range(rng.randrange(1, 6))]
        new = [rng.choice([1, 3, 0, 2] + list(range(4, 512))) for _ in range(rng.randrange(1, 30))]
        chunks = _stream(sp, prompt, new)
        assert sp.decode(prompt) + "".join(chunks) == sp.decode(prompt + new), (prompt, new)


def test_stream_decoder_keeps_first_word_space(sp):
    prompt = sp.encode("Once upon a time")
    new = sp.encode("the fox")
    assert "".join(_stream(sp, prompt, new)) == " the fox"


def test_stream_decoder_random_bytes_level(tmp_path):
    tok = byte_level_tokenizer(tmp_path / "tokenizer.json")
    rng = random.Random(1)
    for _ in range(100):
        ids = [rng.randrange(0, tok.vocab_size) for _ in range(rng.randrange(2, 25))]
        chunks = _stream(tok, ids[:1], ids[1:])
        full = tok.decode(ids)
        assert tok.decode(ids[:1]) + "".join(chunks) == full or "\ufffd" in full
