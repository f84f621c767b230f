"""Help texts say what the program accepts: every command's summary is one whole sentence in the command
list, ``-m`` names every model format, and errors about a model path do not name a flag the command lacks."""

from __future__ import annotations

import sys

import pytest
import typer

from llmbuilder_cli.cli.app import app, main


def _commands(group, path=()):
    for name, cmd in group.commands.items():
        yield (*path, name), cmd
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))


def test_every_command_summary_is_one_line():
    """The command list shows a command's first paragraph as it is written: a line break inside it
    breaks the list mid-sentence."""
    for path, cmd in _commands(typer.main.get_command(app)):
        summary = (cmd.help or "").strip().split("\n\n")[0]
        assert summary and "\n" not in summary, (" ".join(path), summary)


def test_root_help_lists_doctor_in_one_piece(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if " doctor " in row)
    assert "print what a bug report needs" in line


def test_model_option_names_every_format(capsys):
    assert main(["generate", "text", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())  # the help's lines, unwrapped
    for fmt in ("model.pt", "run directory", "Hugging Face", "GGUF"):
        assert fmt in out, fmt


def test_a_missing_model_for_info_does_not_mention_a_flag(capsys):
    assert main(["info", "nope.gguf"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("Error: model not found: nope.gguf") and "--model" not in err, err


@pytest.mark.parametrize("argv0, name", [("/usr/local/bin/llmbuilder-cli", "llmbuilder-cli"),
                                         ("/usr/local/bin/llmbuilder", "llmbuilder"),
                                         ("/site-packages/llmbuilder_cli/__main__.py", "llmbuilder")])
def test_usage_lines_name_the_command_that_was_typed(monkeypatch, capsys, argv0, name):
    monkeypatch.setattr(sys, "argv", [argv0])
    assert main(["generate"]) == 0
    assert f"Usage: {name} generate [OPTIONS] COMMAND" in capsys.readouterr().out
    assert main(["generate", "text", "--top-k", "x"]) == 2
    assert f"see '{name} generate text --help'" in capsys.readouterr().err
    # Commands quoted in an error's hint are named the same way, so the fix can be copied as it stands.
    assert main(["config", "remove", "no-such-profile"]) == 2
    err = capsys.readouterr().err
    assert f"see '{name} config profiles'" in err and "llmbuilder's" not in err, err
