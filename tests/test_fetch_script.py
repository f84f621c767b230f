"""``scripts/fetch_test_models.py`` runs on a bare Python (no pytest, no site-packages) and agrees with the
tests on where the model lives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_fetch_script_needs_only_the_standard_library(tmp_path):
    import real_models

    models = tmp_path / "llmbuilder-cli" / "test-models"
    models.mkdir(parents=True)
    (models / real_models.SMOLLM2_FILE).write_bytes(b"GGUF")  # present: nothing to download
    env = {"XDG_CACHE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-S", "-I", str(ROOT / "scripts" / "fetch_test_models.py")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"test model present: {models / real_models.SMOLLM2_FILE}\n"
