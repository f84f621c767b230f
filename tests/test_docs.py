"""The README's command reference is generated from the commands' own help (scripts/gen_docs.py) and current."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from conftest import cli_env

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import gen_docs  # noqa: E402

from llmbuilder_cli.cli.app import app  # noqa: E402

README = (ROOT / "README.md").read_text(encoding="utf-8")


def generated_block() -> str:
    start = README.index(gen_docs.BEGIN) + len(gen_docs.BEGIN)
    return README[start: README.index(gen_docs.END)]


def all_commands():
    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="llmbuilder")
    return [(root, ctx)] + list(gen_docs._commands(root, ctx))


def test_readme_reference_is_current():
    assert README.count(gen_docs.BEGIN) == 1 and README.count(gen_docs.END) == 1
    assert generated_block() == "\n" + gen_docs.reference_markdown(), "run: python scripts/gen_docs.py"


def test_reference_sits_in_its_section_before_development():
    headings = re.findall(r"^## .+$", README, flags=re.M)
    assert "## Command reference" in headings and "## Development" in headings
    assert headings.index("## Development") == headings.index("## Command reference") + 1
    section = README[README.index("## Command reference"): README.index("## Development")]
    assert gen_docs.BEGIN in section and gen_docs.END in section


def test_every_command_and_option_is_documented():
    block = generated_block()
    for cmd, ctx in all_commands():
        if hasattr(cmd, "list_commands") and ctx.parent is not None:
            continue  # groups (generate, config, export) have only --help; their commands are listed
        assert f"### `{ctx.command_path}`" in block, ctx.command_path
        section = block.split(f"### `{ctx.command_path}`", 1)[1].split("\n### ", 1)[0]
        for p in cmd.params:
            if p.hidden or "--help" in getattr(p, "opts", ()):
                continue
            for opt in p.opts if p.param_type_name == "option" else [p.name]:
                assert f"`{opt}" in section or f", {opt}" in section or f"/ {opt}" in section, (ctx.command_path, opt)


def test_tables_are_well_formed():
    for line in generated_block().splitlines():
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line)
            assert len(cells) == 4 and cells[0] == "" and cells[-1] == "", line  # two columns, pipes escaped
            assert not re.search(r"<[A-Za-z/]", re.sub(r"`[^`]*`", "", line)), line  # no stray HTML tags


def test_help_text_becomes_paragraphs_and_example_blocks():
    md = "\n".join(gen_docs._help_markdown("Do it.\n\nExamples:\n\n  a --x\n\n  b <y>\n\nThe <end>."))
    assert md == "Do it.\n\nExamples:\n\n```text\na --x\nb <y>\n```\n\nThe &lt;end&gt;.\n"


def test_markers_are_required():
    with pytest.raises(ValueError):
        gen_docs.with_reference("# no markers\n", "x\n")
    text = f"a\n{gen_docs.BEGIN}\nold\n{gen_docs.END}\nb\n"
    assert gen_docs.with_reference(text, "new\n") == f"a\n{gen_docs.BEGIN}\nnew\n{gen_docs.END}\nb\n"


def test_check_mode_runs_without_torch():
    probe = (
        "import sys, json, runpy\n"
        f"sys.argv = ['gen_docs.py', '--check']\n"
        "try:\n"
        f"    runpy.run_path({str(ROOT / 'scripts' / 'gen_docs.py')!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print(json.dumps({'rc': e.code, 'mods': sorted(sys.modules)}))\n"
    )
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=cli_env(), timeout=60)
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["rc"] == 0, p.stderr
    assert not {m.split(".")[0] for m in got["mods"]} & {"torch", "tokenizers", "sentencepiece"}


def _real_models_section() -> str:
    return README.split("### Real models, by name", 1)[1].split("\n## ", 1)[0]


def test_the_gguf_tensor_types_table_lists_exactly_what_the_reader_reads():
    from llmbuilder_cli.engine.formats.gguf.header import SUPPORTED_TYPES
    from llmbuilder_cli.engine.formats.gguf.quants import _KERNELS

    section = _real_models_section()
    table = section.split("**GGUF tensor types it reads**", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    listed = {name.strip(): how.strip() for names, how in rows for name in names.split(",")}
    assert sorted(listed) == sorted(SUPPORTED_TYPES)
    assert {n for n, how in listed.items() if how == "torch kernels of this package"} == set(_KERNELS)


def test_the_architectures_table_names_every_architecture_the_loaders_take():
    from llmbuilder_cli.engine.formats.gguf.file import SUPPORTED_ARCHITECTURES
    from llmbuilder_cli.engine.formats.hf_dir import SUPPORTED

    section = _real_models_section()
    table = section.split("**Architectures it runs**", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|")[1:6] for line in table.splitlines()[2:]]
    hf = {cell.strip().strip("`") for row in rows for cell in [row[2]] if cell.strip() != "—"}
    gguf = {cell.strip().split()[0].strip("`") for row in rows for cell in [row[3]] if cell.strip() != "—"}
    assert hf == set(SUPPORTED) and gguf == set(SUPPORTED_ARCHITECTURES)
