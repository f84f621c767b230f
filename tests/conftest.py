"""Shared test helpers: fixture paths, the llmbuilder reference outputs, tiny model builders."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The default run leaves out the tests marked ``slow`` (``-m slow`` runs them, CI runs both tiers).
    Any ``-m`` expression, or a test named by its node id (``file.py::test``), runs what it asks for."""
    if config.option.markexpr or any("::" in arg for arg in config.args):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


HERE = Path(__file__).parent
FIXTURE = HERE / "fixtures" / "llmbuilder-tiny"
MODEL_PT = FIXTURE / "model.pt"
BEST_CKPT = FIXTURE / "checkpoints" / "best_checkpoint.pt"
TOKENIZER_DIR = FIXTURE / "tokenizer"
REFERENCE = json.loads((FIXTURE / "reference_outputs.json").read_text(encoding="utf-8"))
GREEDY_CASES = [c for c in REFERENCE["cases"] if not c["config"]["do_sample"]]


@pytest.fixture(autouse=True, scope="session")
def _isolated_settings(tmp_path_factory):
    """No test reads or writes the developer's own settings: a fresh LLMBUILDER_HOME (and Hugging Face cache)
    for the run, and no LLMBUILDER_* setting inherited from the environment (test-model locations are kept)."""
    for key in [k for k in os.environ if k.startswith("LLMBUILDER_")]:
        if not key.startswith(("LLMBUILDER_TEST", "LLMBUILDER_REQUIRE")):
            del os.environ[key]
    os.environ["LLMBUILDER_HOME"] = str(tmp_path_factory.mktemp("llmbuilder-home"))
    # Models by name (ORG/NAME) come from the Hugging Face cache: an empty one, not the developer's.
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HF_ENDPOINT"):
        os.environ.pop(key, None)
    os.environ["HF_HOME"] = str(tmp_path_factory.mktemp("hf-home"))
    yield


def cli_env() -> dict[str, str]:
    """Environment for running the CLI in a subprocess (no colour, no debug, this interpreter's path)."""
    env = dict(os.environ)
    env.pop("LLMBUILDER_DEBUG", None)
    env["NO_COLOR"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def default_sigint() -> None:
    """preexec_fn for children that get Ctrl-C: a test run started in the background (where SIGINT is
    ignored and the ignore is inherited) must not make the child deaf to it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn_pty(command: str, args: list[str], *, env: dict[str, str], **kwargs):
    """pexpect.spawn with SIGINT restored in the child (see default_sigint), and prompt_toolkit told not
    to ask for the cursor position (pexpect never answers, which would cost a timeout and a warning)."""
    import pexpect

    env = {**env, "PROMPT_TOOLKIT_NO_CPR": "1"}
    return pexpect.spawn(command, args, env=env, preexec_fn=default_sigint, **kwargs)


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmbuilder_cli", *args]


@pytest.fixture(scope="session")
def tiny_loaded():
    from llmbuilder_cli import load_model

    return load_model(MODEL_PT, TOKENIZER_DIR, device="cpu")
