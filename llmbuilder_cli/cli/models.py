"""``llmbuilder pull``, ``llmbuilder list`` and ``llmbuilder rm``: models by name in the Hugging Face cache.

The work is in ``hub.py`` (torch-free; huggingface_hub does the downloads), so none of these commands
imports torch. ``pull`` draws its progress bar on stderr and leaves stdout empty; ``list`` prints the
listing (the requested output) on stdout, aligned or as JSON; ``rm`` asks before deleting on a terminal
and needs ``--yes`` otherwise.
"""

# No `from __future__ import annotations`: with it Typer compiles every option's annotation from a
# string, several times, on each start of the program (see app.py).

import json
import sys
from typing import Annotated, Any

import typer

_NAME_HELP = ("A model on the Hugging Face Hub: ORG/NAME, or ORG/NAME:FILE.gguf (or ORG/NAME:Q4_K_M) to choose one "
              "GGUF file of a repository that has several.")


def _name(text: str):
    from ..errors import UsageError
    from ..hub import parse_name

    name = parse_name(text)
    if name is None:
        raise UsageError(f"{text[:200]!r} is not a model name", hint="write ORG/NAME, e.g. HuggingFaceTB/SmolLM2-135M")
    return name


def _terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def pull_command(
    model: Annotated[str, typer.Argument(help=_NAME_HELP, show_default=False)],
) -> int:
    """Download a model into the local Hugging Face cache: config, tokenizer and weights (safetensors, or one GGUF).

    Only what generation needs is fetched, with a progress bar on stderr; every new file is checked against the
    hub's checksum. An interrupted pull continues when run again.

    Examples:

      llmbuilder pull HuggingFaceTB/SmolLM2-135M-Instruct

      llmbuilder pull bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M
    """
    from .. import hub

    name = _name(model)
    bar = _Progress() if _terminal(sys.stderr) else None
    try:
        path, fetched, nbytes = hub.pull(name, progress=bar.advance if bar else None,
                                         note=lambda s: sys.stderr.write(s + "\n"))
    finally:
        if bar is not None:
            bar.stop()
    if fetched:
        sys.stderr.write(f"Downloaded {len(fetched)} files ({hub.size_text(nbytes)}) of {name}.\n")
    else:
        sys.stderr.write(f"{name} is already downloaded.\n")
    sys.stderr.write(f"Run it: llmbuilder generate text -m {name} -p \"...\"\n")
    return 0


class _Progress:
    """One rich progress bar on stderr per file being downloaded (files already in the cache get none)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, \
            TransferSpeedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                                  TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                                  transient=False)
        self._progress.start()
        self._tasks: dict[str, Any] = {}

    def advance(self, file: str, n: int, total: int) -> None:
        task = self._tasks.get(file)
        if task is None:
            shown = file if len(file) <= 40 else "…" + file[-39:]
            task = self._tasks[file] = self._progress.add_task(shown, total=total or None)
        if n:
            self._progress.advance(task, n)

    def stop(self) -> None:
        self._progress.stop()


def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array instead of aligned lines.")] = False,
) -> int:
    """List the models in the local Hugging Face cache that llmbuilder can run: name, format, architecture, size.

    A name shown here works wherever a model is asked for: llmbuilder generate text -m NAME, llmbuilder info NAME.
    """
    from .. import hub

    models = hub.local_models()
    if as_json:
        sys.stdout.write(json.dumps([m.to_dict() for m in models], indent=2) + "\n")
        return 0
    if not models:
        sys.stderr.write(f"No models in {hub.cache_dir()}. Download one with: llmbuilder pull ORG/NAME\n")
        return 0
    rows = [("NAME", "FORMAT", "ARCHITECTURE", "SIZE")]
    rows += [(m.name, m.format, m.architecture or "?", hub.size_text(m.size)) for m in models]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3] + "\n")
    return 0


def rm_command(
    model: Annotated[str, typer.Argument(help="The model to delete from the local Hugging Face cache: ORG/NAME.",
                                         show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking (needed when not on a terminal).")]
    = False,
) -> int:
    """Delete a model (every file and revision of the repository) from the local Hugging Face cache."""
    from .. import hub
    from ..errors import UsageError

    name = _name(model)
    if name.file is None and not (hub.cache_dir() / name.folder).is_dir():
        hub.remove(name)  # says it is not there
    if not yes:
        if not (_terminal(sys.stdin) and _terminal(sys.stderr)):
            raise UsageError(f"not deleting {name} without confirmation", hint=f"run: llmbuilder rm {name} --yes")
        size = hub.size_text(hub.repo_size(name))
        sys.stderr.write(f"Delete {name} ({size}) from {hub.cache_dir()}? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            sys.stderr.write("Nothing deleted.\n")
            return 1
    hub.remove(name)
    sys.stderr.write(f"Deleted {name}.\n")
    return 0
