"""The real-model benchmark harness runs end to end (its --quick mode: float32 and int8 against
transformers on SmolLM2, a few tokens). Timings are printed, never asserted; only that both engines ran,
produced tokens and agree in float32."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from real_models import smollm2_gguf

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def test_quick_benchmark_run(tmp_path):
    gguf = smollm2_gguf()
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to read GGUF files")
    out = tmp_path / "results.json"
    env = dict(os.environ, LLMBUILDER_TEST_SMOLLM2=str(gguf), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_real.py"), "--quick", "--json", str(out),
                           "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    dec = res["decode"]
    assert set(dec) == {"ours float32", "ours int8 (f32 act.)", "transformers float32"}
    for entry in dec.values():
        assert entry["tokens_per_s"] > 0 and entry["first_token_s"] > 0 and len(entry["ids"]) == 8
    assert dec["ours float32"]["ids"] == dec["transformers float32"]["ids"]
    assert 0 < dec["ours float32"]["bandwidth_share"] < 2
    assert "ours/transformers" in proc.stdout
