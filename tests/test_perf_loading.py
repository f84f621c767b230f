"""Loading without double copies (engine/formats/weights_io.py): tensors read on demand, memory-mapped when kept
as stored, converted through one scratch buffer, fused weights read in place, int8 quantized from row
blocks; the lazily built model equals the one built from a plain state dict; peak memory stays near the
weights (measured in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from llmbuilder_cli.engine import loading
from llmbuilder_cli.engine.formats import hf_dir, weights_io
from llmbuilder_cli.engine.models.llama import Llama
from llmbuilder_cli.engine.formats.weights_io import LazyState, SafetensorsFile
from llmbuilder_cli.errors import ModelLoadError
from test_perf_llama import BASE, CASES, PROMPT, random_model

safetensors_torch = pytest.importorskip("safetensors.torch")


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.f32": torch.randn(37, 19, generator=g),
        "b.bf16": torch.randn(5, 8, generator=g).bfloat16(),
        "c.f16": torch.randn(64, generator=g).half(),
        "d.scalar": torch.tensor(2.5),
        "e.empty": torch.zeros(0, 4),
    }


def test_every_tensor_in_every_dtype_with_and_without_mapping(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_io, "CHUNK_BYTES", 64)  # conversions in many small chunks
    src = _tensors()
    safetensors_torch.save_file(src, str(tmp_path / "m.safetensors"))
    cpu = torch.device("cpu")
    with SafetensorsFile(tmp_path / "m.safetensors") as f:
        for name, t in src.items():
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                for mmap_ok in (False, True):
                    got = f.get(name, dtype=dtype, device=cpu, mmap_ok=mmap_ok)
                    assert got.dtype == dtype and got.shape == t.shape
                    assert torch.equal(got, t.to(dtype)), (name, dtype, mmap_ok)
        kept = f.get("a.f32", dtype=torch.float32, device=cpu, mmap_ok=True)
    assert torch.equal(kept, src["a.f32"])  # a mapped tensor outlives the closed file


def test_only_64_byte_aligned_data_is_mapped(tmp_path):
    """A view of the mapping must start where torch's own allocations would (64 bytes): some CPUs' float32
    products round differently on a misaligned operand, which broke equality with the same weights in
    memory. safetensors aligns data only to 8 bytes, so "b" below sits off a 64-byte boundary; it comes
    back equal and 64-byte aligned (read into memory instead of mapped)."""
    src = {"a": torch.arange(3, dtype=torch.float32), "b": torch.randn(16, 16)}
    safetensors_torch.save_file(src, str(tmp_path / "m.safetensors"))
    with SafetensorsFile(tmp_path / "m.safetensors") as f:
        offsets = {name: f.entry(name)[2] for name in src}
        assert any(o % 64 for o in offsets.values()), offsets  # the case this test is about is present
        for name in src:
            got = f.get(name, dtype=torch.float32, device=torch.device("cpu"), mmap_ok=True)
            assert torch.equal(got, src[name])
            assert got.data_ptr() % 64 == 0, (name, offsets[name])


def test_stacked_rows_and_row_blocks(tmp_path):
    src = {"p": torch.randn(3, 16), "q": torch.randn(5, 16), "r": torch.randn(70, 16).bfloat16()}
    safetensors_torch.save_file(src, str(tmp_path / "m.safetensors"))
    with SafetensorsFile(tmp_path / "m.safetensors") as f:
        state = LazyState({k: (f, k) for k in src}, dtype=torch.bfloat16, device=torch.device("cpu"))
        assert torch.equal(state.stacked(["p", "q", "r"]), torch.cat([src["p"], src["q"], src["r"].float()]).bfloat16())
        blocks = [(r0, rows.clone()) for r0, rows in state.row_blocks("r", max_elements=16 * 8)]
        assert [r0 for r0, _ in blocks] == list(range(0, 70, 8))
        assert torch.equal(torch.cat([b for _, b in blocks]), src["r"].float())
        assert state.get("missing") is None and len(state) == 3 and "p" in state


@pytest.mark.parametrize("damage", ["truncated", "header-length", "offsets"])
def test_damaged_files_are_model_load_errors(tmp_path, damage):
    path = tmp_path / "m.safetensors"
    safetensors_torch.save_file({"w": torch.randn(64, 64)}, str(path))
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    if damage == "truncated":
        path.write_bytes(raw[:-100])
    elif damage == "header-length":
        path.write_bytes((10**12).to_bytes(8, "little") + raw[8:])
    else:
        header = json.loads(raw[8 : 8 + n])
        header["w"]["data_offsets"] = [0, 12]
        text = json.dumps(header).encode().ljust(n)
        path.write_bytes(raw[:8] + text + raw[8 + n :])
    with pytest.raises(ModelLoadError):
        with SafetensorsFile(path) as f:
            f.get("w", dtype=torch.float32, device=torch.device("cpu"))


def write_hf_dir(folder: Path, case: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A tiny random Llama as a Hugging Face directory, weights stored in ``dtype``; returns them."""
    cfg, sd = random_model(case)
    sd = {k: v.to(dtype).contiguous() for k, v in sd.items()}
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**BASE, **CASES[case]}))
    safetensors_torch.save_file(sd, str(folder / "model.safetensors"))
    return sd


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("quantize", [None, "int8", "int4"])
@pytest.mark.parametrize("case", ["gqa-untied", "mqa-tied-head_dim24", "llama-biases"])
def test_lazily_built_model_equals_the_one_from_a_state_dict(tmp_path, case, dtype, quantize):
    dt = getattr(torch, dtype)
    sd = write_hf_dir(tmp_path / "m", case, dt)
    d = hf_dir.inspect_hf_dir(tmp_path / "m")
    lazy = loading._build_hf_dir_model(d, dt, torch.device("cpu"), quantize)
    plain = Llama(d.config, dict(sd), quantize=quantize)
    ids = torch.tensor([PROMPT])
    with torch.inference_mode():
        assert torch.equal(lazy.forward(ids), plain.forward(ids))


_PEAK_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from pathlib import Path
    from llmbuilder_cli.engine import loading
    from llmbuilder_cli.engine.formats import hf_dir
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    d = hf_dir.inspect_hf_dir(Path(sys.argv[1]))
    before = status("VmRSS")
    model = loading._build_hf_dir_model(d, getattr(torch, sys.argv[2]), torch.device("cpu"), sys.argv[3] or None)
    with torch.inference_mode():
        model.forward(torch.tensor([[1, 2, 3]]))
    print(json.dumps({"before": before, "peak": status("VmHWM"), "weights": model.weight_bytes}))
""")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak memory from /proc")
@pytest.mark.parametrize("dtype,quantize", [("float32", ""), ("bfloat16", ""), ("float32", "int8")])
def test_peak_memory_stays_near_the_weights(tmp_path, dtype, quantize):
    """A float32 file of ~60 MB: loading and a first forward add at most the weights kept plus 32 MiB
    (the scratch buffer, one fused layer, the forward's buffers), whether mapped, converted or quantized."""
    folder = tmp_path / "m"
    folder.mkdir()
    cfg = dict(BASE, hidden_size=512, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=8,
               num_key_value_heads=2, vocab_size=8000, tie_word_embeddings=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    g = torch.Generator().manual_seed(0)
    shapes = hf_dir.model_config(cfg).tensor_shapes()
    safetensors_torch.save_file({k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()},
                                str(folder / "model.safetensors"))
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(folder), dtype, quantize],
                         capture_output=True, text=True, check=True)
    m = json.loads(out.stdout)
    assert m["peak"] - m["before"] <= m["weights"] + (32 << 20), m
