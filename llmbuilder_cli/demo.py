"""The built-in demo model: a small story-writing GPT trained by this project, shipped as package data.

It is what runs when no model is given, so ``llmbuilder generate text -p "Once upon a time"`` works right
after install, with no download. The files live in ``demo_model/`` beside this module: ``model.pt`` in
llmbuilder's own format, ``tokenizer/tokenizer.json`` (byte-level BPE with ``<|endoftext|>``) and
``training.json`` (recipe, corpus hash, held-out loss). ``scripts/train_demo.py`` rebuilds them all.
Standard library only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

__all__ = ["DEMO_NAME", "demo_dir", "is_demo_request", "is_installed", "demo_model_dir", "training_report", "NOTICE_MARKER", "notice"]

DEMO_NAME = "demo"
NOTICE_MARKER = "demo-notice-shown"


def demo_dir() -> Path:
    """Where the demo files are installed (whether or not they are present)."""
    return Path(__file__).resolve().parent / "demo_model"


def is_demo_request(model: str | os.PathLike[str] | None) -> bool:
    """True for no model at all, or the name ``demo`` when no file or directory of that name exists."""
    if model is None or str(model) == "":
        return True
    return str(model) == DEMO_NAME and not Path(DEMO_NAME).exists()


def is_installed() -> bool:
    """Whether the demo model's files are present in this installation."""
    d = demo_dir()
    return (d / "model.pt").is_file() and (d / "tokenizer" / "tokenizer.json").is_file()


def demo_model_dir() -> Path:
    """The demo's directory, checked to hold its files."""
    d = demo_dir()
    if not is_installed():
        raise ModelLoadError(
            f"the built-in demo model is missing from this installation ({d})",
            hint="reinstall llmbuilder-cli, or pass --model PATH to use your own model",
        )
    return d


def training_report() -> dict[str, Any]:
    """The demo's ``training.json`` (empty when absent or unreadable)."""
    try:
        data = json.loads((demo_dir() / "training.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def notice(named: bool = False) -> str:
    """What the CLI says on stderr the first time the demo runs; ``named``: asked for as ``-m demo``."""
    why = "" if named else "no model given, so "
    return (
        f"note: {why}this is llmbuilder-cli's built-in demo model (a small story writer, "
        "see 'llmbuilder info demo'). Use your own with --model PATH: llmbuilder's model.pt, a trainer "
        "checkpoint or their run directory, a Hugging Face model directory, or a GGUF file."
    )
