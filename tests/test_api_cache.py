"""The API keeps the last loaded model, and never serves it after its files changed."""

from __future__ import annotations

import os
import shutil

from conftest import MODEL_PT, TOKENIZER_DIR
from llmbuilder_cli import api


def test_a_model_is_reused_until_its_file_changes(tmp_path):
    model = tmp_path / "model.pt"
    shutil.copy(MODEL_PT, model)
    api.clear_model_cache()
    first, load1 = api._loaded(model, TOKENIZER_DIR, "cpu", None)
    again, load2 = api._loaded(model, TOKENIZER_DIR, "cpu", None)
    assert again is first and load2 == 0.0 and load1 > 0
    st = model.stat()
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert api._loaded(model, TOKENIZER_DIR, "cpu", None)[0] is not first


def test_a_directory_model_is_reloaded_when_a_file_inside_changes(tmp_path):
    from llmbuilder_cli.engine.formats.export_hf import export_hf

    out = tmp_path / "hf"
    export_hf(MODEL_PT, TOKENIZER_DIR, out)
    api.clear_model_cache()
    first, _ = api._loaded(out, None, "cpu", None)
    assert api._loaded(out, None, "cpu", None)[0] is first
    weights = out / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert api._loaded(out, None, "cpu", None)[0] is not first
    api.clear_model_cache()
