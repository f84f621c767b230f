"""Project hygiene a newcomer relies on: the README's commands and CI's command stay the same."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup, flags=re.S)


def test_readme_has_exactly_two_setup_commands():
    cmds = readme_commands()
    assert len(cmds) == 2
    assert all("\n" not in c for c in cmds)
    assert "torch==2.13.0" in cmds[0] and "llmbuilder generate text" in cmds[0]
    assert cmds[0].index("torch==2.13.0") < cmds[0].index("pip install -e .")
    assert "pytest" in cmds[1]
    # The quick start runs the built-in demo model: no model of the user's own is needed.
    first_run = cmds[0].split("llmbuilder generate text", 1)[1]
    assert "--model" not in first_run and " -m " not in first_run


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert readme_commands()[1] in ci


def test_readme_first_command_paths_exist():
    for path in re.findall(r"(tests/fixtures/\S+)", readme_commands()[0]):
        assert (ROOT / path).exists(), path
