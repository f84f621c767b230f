"""Hostile model files: each ends in one line and a documented exit code, in bounded memory and time.

Every case builds its file in a temporary directory and runs the real command in a subprocess under an
address-space limit (`MEMORY_CAP`, set with ``RLIMIT_AS`` before the child starts), so a loader that
allocates what a header declares fails the test instead of making the machine swap, and under a generous
timeout, so a hang fails too. Each asserts: the exit code, one ``Error:`` line naming the problem, no
traceback and no "this is a bug", the files it was given unchanged, and nothing in them run.

The fuzz test at the end runs a few dozen cases of ``scripts/fuzz_model_files.py`` (the full run, 2,000
cases or more, is that script's job).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickletools
import resource
import shutil
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from conftest import MODEL_PT, TOKENIZER_DIR, cli_cmd, cli_env

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import fuzz_model_files as fuzz  # noqa: E402

#: Address space the command may use: a normal load of these tiny models fits in 1 GiB (torch's import
#: alone reserves several hundred MiB of address space), so 1.5 GiB leaves room and still catches any
#: allocation a header merely declares.
MEMORY_CAP = 3 << 29  # 1.5 GiB
TIMEOUT = 180  # seconds: only to catch hangs


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_capped(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(cli_cmd(*args), input=stdin, capture_output=True, env=cli_env(), timeout=TIMEOUT,
                       preexec_fn=_cap_memory)
    p.stdout, p.stderr = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    return p


def tree_digest(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


# ------------------------------------------------------------------------------------------- builders
def _gguf(meta: dict | None = None, tokens: list[str] | None = None) -> Callable[[Path], Path]:
    return lambda d: fuzz.write_llama_gguf(d / "m.gguf", meta=meta, tokens=tokens)


def _hf(config: dict | None = None, tokenizer_config: dict | None = None,
        pre_tokenizer: Callable[[], object] | None = None) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        folder = fuzz.write_hf_dir(d / "hf", config)
        if pre_tokenizer is not None:
            fuzz.write_tokenizer_json(folder, pre_tokenizer=pre_tokenizer())
        if tokenizer_config is not None:
            (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
        return folder

    return build


def _regex_split():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Split(Regex("(a+)+$"), behavior="isolated")


def _template(source: str) -> Callable[[Path], Path]:
    return _hf(tokenizer_config={"bos_token": "<s>", "eos_token": "</s>", "chat_template": source})


def _too_costly(d: Path) -> Path:
    """A vocabulary whose merge search passes the bound (thousands of long tokens)."""
    return _long_token(d, ["a" * k for k in range(1, 3000)])


def _long_token(d: Path, extra: list[str] | None = None) -> Path:
    """A SentencePiece-style ('llama') vocabulary with one 600,000-character token (or ``extra`` tokens)."""
    from llmbuilder_cli.engine.formats.gguf.tokenizer import _byte_alphabet

    tokens = ["<unk>", "<s>", "</s>"] + _byte_alphabet()[33:120] + (extra or ["a" * 600_000])
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.scores": [0.0] * len(tokens),
            "tokenizer.ggml.token_type": [2, 3, 3] + [1] * (len(tokens) - 3),
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2}
    return fuzz.write_llama_gguf(d / "m.gguf", meta=meta, tokens=tokens)


def _zip_bomb(d: Path) -> Path:
    """A model.pt whose one storage declares 2.4 GB of zeros, deflated to a few MB (torch.save never
    compresses; a zip reader inflates whatever a member says)."""
    numel = 600_000_000
    buf = io.BytesIO()
    torch.save({"model_state_dict": {"token_embedding.weight": torch.zeros(1234)}}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = d / "model.pt"
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            if not info.filename.endswith("/data/0"):
                data = src.read(info)
                z.writestr(info, _patch_pickle_int(data, 1234, numel) if info.filename.endswith("data.pkl") else data)
                continue
            member = zipfile.ZipInfo(info.filename)
            member.compress_type = zipfile.ZIP_DEFLATED
            with z.open(member, "w", force_zip64=True) as f:  # zeros streamed through zlib, never held
                chunk = bytes(1 << 24)
                for _ in range(numel * 4 // len(chunk)):
                    f.write(chunk)
                f.write(bytes(numel * 4 % len(chunk)))
    return out


def _patch_pickle_int(data: bytes, old: int, new: int) -> bytes:
    """Replace every pickled integer ``old`` by ``new`` (a 4-byte BININT)."""
    out, last = bytearray(), 0
    for op, arg, pos in pickletools.genops(data):
        if op.name in ("BININT1", "BININT2", "BININT") and arg == old:
            width = {"BININT1": 1, "BININT2": 2, "BININT": 4}[op.name]
            out += data[last:pos] + b"J" + struct.pack("<i", new)
            last = pos + 1 + width
    return bytes(out + data[last:])


def _legacy_truncated(d: Path) -> Path:
    ck = torch.load(MODEL_PT, weights_only=True)
    buf = io.BytesIO()
    torch.save(ck, buf, _use_new_zipfile_serialization=False)
    (d / "model.pt").write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    return d / "model.pt"


def _bit_flipped(d: Path) -> Path:
    data = bytearray(MODEL_PT.read_bytes())
    with zipfile.ZipFile(MODEL_PT) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)  # the largest storage
    n, m = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + n + m
    data[start + info.file_size // 2] ^= 0x10
    (d / "model.pt").write_bytes(bytes(data))
    return d / "model.pt"


def _non_finite_legacy(d: Path) -> Path:
    ck = torch.load(MODEL_PT, weights_only=True)
    ck["model_state_dict"]["blocks.0.mlp.fc1.weight"][3, 5] = float("nan")
    torch.save(ck, d / "model.pt", _use_new_zipfile_serialization=False)
    return d / "model.pt"


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], Path]
    code: int
    fragment: str
    args: tuple[str, ...] = ("generate", "text", "--device", "cpu", "--max-tokens", "2", "-p", "w3 w4")
    tokenizer: bool = False  # pass the fixture's tokenizer (llmbuilder checkpoints)
    stdout: str = ""  # what stdout holds (the prompt is echoed before generation starts)


GEN_CHAT = ("generate", "text", "--device", "cpu", "--max-tokens", "2", "--chat", "-p", "w3 w4")

CASES = [
    # 2. declared sizes far beyond the file, or beyond memory
    Case("gguf-ten-million-layers", _gguf({"llama.block_count": 10**7}), 3, "10000000 layers declared"),
    Case("gguf-hundred-million-layers", _gguf({"llama.block_count": 10**8}), 3, "100000000 layers declared"),
    Case("config-ten-million-layers", _hf({"num_hidden_layers": 10**7}), 3, "10000000 layers declared"),
    Case("gguf-context-of-two-billion", _gguf({"llama.context_length": 2**31}), 1, "key/value cache",
         ("generate", "text", "--device", "cpu", "--max-tokens", "1000000000000", "-p", "the"), stdout="the"),
    Case("zip-bomb-checkpoint", _zip_bomb, 3, "compressed", tokenizer=True),
    Case("template-asks-for-gigabytes", _template("{{ 'a' * 4000000000 }}"), 1, "chat template", GEN_CHAT),
    Case("template-pads-to-gigabytes", _template("{{ 'a'|center(4000000000) }}"), 1, "chat template", GEN_CHAT),
    Case("template-formats-gigabytes", _template("{{ '%4000000000d' % 1 }}"), 1, "chat template", GEN_CHAT),
    Case("template-format-width", _template("{{ '{:>4000000000}'.format(1) }}"), 1, "chat template", GEN_CHAT),
    Case("template-doubling-text", _template(
        "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"),
        1, "chat template", GEN_CHAT),
    Case("template-huge-power", _template("{{ 10 ** (10 ** 10) }}"), 1, "chat template", GEN_CHAT),
    Case("template-recursion", _template("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"), 1,
         "chat template", GEN_CHAT),
    # 3. a tokenizer regex that makes the tokenizer library panic
    Case("tokenizer-regex-panic", _hf(pre_tokenizer=_regex_split), 3, "tokenizer",
         ("generate", "text", "--device", "cpu", "--max-tokens", "2", "-p", "a" * 34 + "b")),
    # 4. hangs
    Case("template-nested-loops", _template(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"), 1,
        "chat template", GEN_CHAT),
    Case("template-endless-range", _template("{% for i in range(10**12) %}x{% endfor %}"), 1,
         "chat template", GEN_CHAT),
    Case("gguf-vocabulary-too-costly", _too_costly, 3, "too costly to rebuild"),
    # 8. damaged files that used to be "this is a bug"
    Case("legacy-checkpoint-truncated", _legacy_truncated, 3, "truncated", tokenizer=True),
    Case("rope-parameter-not-a-number", _hf({"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                                                              "low_freq_factor": "one", "high_freq_factor": 4.0,
                                                              "original_max_position_embeddings": 32}}),
         3, "low_freq_factor"),
    Case("yarn-beta-not-a-number", _hf({"rope_scaling": {"rope_type": "yarn", "factor": 2.0, "beta_fast": "x"}}),
         3, "beta_fast"),
    Case("gguf-eos-id-not-a-number", _gguf({"tokenizer.ggml.eos_token_id": "two"}), 3,
         "tokenizer.ggml.eos_token_id"),
    Case("gguf-eos-id-an-array", _gguf({"tokenizer.ggml.eos_token_id": [1, 2]}), 3, "tokenizer.ggml.eos_token_id"),
    # 9. wrong types and damaged bytes
    Case("tie-word-embeddings-a-string", _hf({"tie_word_embeddings": "false"}), 3, "tie_word_embeddings"),
    Case("attention-bias-a-string", _hf({"attention_bias": "no"}), 3, "attention_bias"),
    Case("bit-flipped-checkpoint", _bit_flipped, 3, "CRC", tokenizer=True),
    Case("nan-weights-in-legacy-checkpoint", _non_finite_legacy, 3, "NaN", tokenizer=True),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_model_file_is_one_line_in_bounded_memory(case, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    target = case.build(d)
    before = tree_digest(d)
    where = [str(target)] if case.args[0] == "info" else ["-m", str(target)]
    argv = [*case.args, *where] + (["-t", str(TOKENIZER_DIR)] if case.tokenizer else [])
    p = run_capped(*argv)
    assert p.returncode == case.code, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), p.stderr[-2000:]
    assert case.fragment in lines[0], (case.fragment, lines[0])
    assert "Traceback" not in p.stderr and "this is a bug" not in p.stderr
    assert p.stdout == case.stdout
    assert tree_digest(d) == before  # the input is left as it was
    assert sorted(x.name for x in tmp_path.iterdir()) == ["in"]  # nothing was written or run beside it


def test_the_readme_lists_the_hostile_file_bounds():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## When things go wrong", 1)[1].split("\n## ", 1)[0]
    for phrase in ("declares", "zip", "CRC", "chat template", "1,000,000", "panic", "NaN"):
        assert phrase in section, phrase


def test_info_describes_a_gguf_whose_vocabulary_is_too_costly_and_says_why_it_does_not_run(tmp_path):
    p = run_capped("info", str(_too_costly(tmp_path)))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    verdict = p.stdout.splitlines()[-1]
    assert verdict.startswith("Runs here     no — ") and "too costly to rebuild" in verdict, verdict


def test_a_600k_character_token_is_described_in_bounded_time(tmp_path):
    target = _long_token(tmp_path)
    p = run_capped("info", str(target))  # took minutes: every cut of the token was tried
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Traceback" not in p.stderr


# ------------------------------------------------------------------------------ valid files still load
def test_a_valid_checkpoint_still_loads_under_the_cap():
    p = run_capped("generate", "text", "-m", str(MODEL_PT), "-t", str(TOKENIZER_DIR), "--device", "cpu",
                   "--greedy", "--max-tokens", "3", "-p", "the cat")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip()


def test_a_valid_template_with_loops_still_renders(tmp_path):
    source = ("{% for m in messages %}{% for i in range(3) %}-{% endfor %}{{ m.role }}: {{ m.content }}"
              "{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
    folder = _template(source)(tmp_path)
    p = run_capped("generate", "text", "--device", "cpu", "--max-tokens", "2", "--chat", "-p", "w3 w4",
                   "-m", str(folder), "--greedy")
    assert p.returncode == 0, p.stderr


# ----------------------------------------------------------------------------------- a few fuzz cases
@pytest.mark.slow
def test_a_few_dozen_fuzzed_model_files_end_in_domain_errors(tmp_path):
    import warnings

    bases = fuzz.build_bases(tmp_path / "bases")
    failures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(40):
            kind, what, outcome = fuzz.one_case(i, 1234, bases, tmp_path)
            if outcome.startswith("FAIL"):
                failures.append(f"case {i} [{kind}] {what}: {outcome}")
    assert not failures, "\n".join(failures)
