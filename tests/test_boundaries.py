"""Layering rules, checked in fresh interpreters: the engine never imports the CLI libraries, and the
fast paths of the CLI (help, version, importing the package) never import torch."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

CLI_LIBS = ("typer", "rich", "questionary", "click", "prompt_toolkit")
HEAVY = ("torch", "tokenizers", "sentencepiece")


def modules_after(code: str) -> set[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def roots(mods: set[str]) -> set[str]:
    return {m.split(".")[0] for m in mods}


def test_engine_imports_no_cli_library():
    mods = roots(modules_after(
        "import llmbuilder_cli.engine.generate, llmbuilder_cli.engine.loading, llmbuilder_cli.engine.sampling,"
        " llmbuilder_cli.engine.tokenizers.tokenizer, llmbuilder_cli.engine.models"
    ))
    assert "torch" in mods
    assert not mods & set(CLI_LIBS), mods & set(CLI_LIBS)


def test_core_is_stdlib_only():
    mods = roots(modules_after("import llmbuilder_cli.config, llmbuilder_cli.types, llmbuilder_cli.errors"))
    assert not mods & set(CLI_LIBS + HEAVY)


def test_importing_the_package_does_not_import_torch():
    mods = roots(modules_after("import llmbuilder_cli; from llmbuilder_cli import generate_text, GenerationConfig"))
    assert not mods & set(HEAVY + CLI_LIBS)


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], ["generate", "text", "--help"], ["--version"]])
def test_help_and_version_do_not_import_torch(argv):
    code = (
        "import sys\n"
        "from llmbuilder_cli.cli.app import main\n"
        f"rc = main({argv!r})\n"
        "assert rc == 0, rc\n"
    )
    mods = roots(modules_after(code))
    assert "typer" in mods
    assert not mods & set(HEAVY + ("questionary",)), mods & set(HEAVY)


#: Imported by the commands that use them, never by a help page: the API layer, the settings file's
#: module, package metadata, the wizard's libraries, Markdown rendering.
LAZY_FOR_HELP = (
    "llmbuilder_cli.api",
    "llmbuilder_cli.settings",
    "llmbuilder_cli.turns",
    "importlib.metadata",
    "markdown_it",
    "questionary",
    "prompt_toolkit",
    "tomlkit",
)

#: A minimal Typer app shaped like ours (a root option, a group, a command with an option): what Typer and
#: rich import by themselves for the same help page (Typer's rich help formatting imports markdown_it; its
#: option parsing may import more below the root) is not ours to avoid.
_TOY_APP = """
import typer
app = typer.Typer(add_completion=True)
group = typer.Typer()
app.add_typer(group, name="group")
@app.callback()
def root(version: bool = typer.Option(None, "--version", is_eager=True)) -> None:
    "Root."
@group.command("command")
def command(value: int = typer.Option(1, "--value")) -> None:
    "Command."
typer.main.get_command(app).main(args={argv!r}, prog_name="toy", standalone_mode=False)
"""


@pytest.mark.parametrize("argv", [["--help"], ["config", "--help"], ["generate", "text", "--help"], ["doctor", "--help"]])
def test_help_leaves_the_commands_imports_to_the_commands(argv):
    toy_argv = [["--help"], ["group", "--help"], ["group", "command", "--help"]][len(argv) - 1]
    theirs = modules_after(_TOY_APP.format(argv=toy_argv))
    code = (
        "from llmbuilder_cli.cli.app import main\n"
        f"rc = main({argv!r})\n"
        "assert rc == 0, rc\n"
    )
    mods = modules_after(code)
    unexpected = {m for m in LAZY_FOR_HELP if m in mods and m not in theirs}
    assert not unexpected, f"'llmbuilder {' '.join(argv)}' imported {sorted(unexpected)}"


def test_the_package_api_loads_on_first_use():
    mods = modules_after("import llmbuilder_cli")
    assert "llmbuilder_cli.api" not in mods
    mods = modules_after(
        "import llmbuilder_cli\n"
        "from llmbuilder_cli import *\n"  # every name in __all__ resolves
        "assert generate_text is llmbuilder_cli.api.generate_text and 'TurnFormat' in dir(llmbuilder_cli)"
    )
    assert "llmbuilder_cli.api" in mods
    assert not roots(mods) & set(HEAVY + CLI_LIBS)


def test_no_engine_module_imports_upward():
    """Static check: engine files import nothing from the API, CLI or chat layers."""
    from pathlib import Path

    import llmbuilder_cli

    engine = Path(llmbuilder_cli.__file__).parent / "engine"
    upward = re.compile(r"^\s*from \.{2,}(api|cli|chat|settings)\b", re.MULTILINE)  # at any package depth
    for f in engine.rglob("*.py"):
        text = f.read_text(encoding="utf-8")
        for bad in ("import typer", "import rich", "import questionary"):
            assert bad not in text, (f, bad)
        assert not upward.search(text), (f, upward.search(text).group(0))


@pytest.mark.parametrize("argv, code", [(["list"], 0), (["list", "--json"], 0), (["pull", "acme/tiny"], 1),
                                        (["rm", "acme/tiny", "--yes"], 3), (["pull", "--help"], 0)])
def test_model_cache_commands_do_not_import_torch(argv, code, tmp_path):
    """list, pull and rm read and write the Hugging Face cache without the engine (offline here: pull fails)."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path), HF_HUB_OFFLINE="1")
    probe = (
        "from llmbuilder_cli.cli.app import main\n"
        f"rc = main({argv!r})\n"
        f"assert rc == {code}, rc\n"
        "import sys, json\nprint(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env).stdout
    mods = roots(set(json.loads(out.strip().splitlines()[-1])))
    assert not mods & set(HEAVY), mods & set(HEAVY)
