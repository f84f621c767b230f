"""Write the command reference in README.md (between the cli-reference markers) from the commands' own help.

    python scripts/gen_docs.py           # rewrite the generated block of README.md
    python scripts/gen_docs.py --check   # exit 1 if README.md's block is stale (what the tests check)

Every command, argument and option is listed with the text ``--help`` shows (the same help strings, with
Typer's ``[default: …]``, ranges and ``[required]``), as Markdown: one section per command, one table per
help panel. Hidden commands and options, and ``-h/--help``, are left out. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN = "<!-- BEGIN GENERATED: cli-reference -->"
END = "<!-- END GENERATED: cli-reference -->"
#: Commands in this order first (a new command is listed after them, in the program's order).
ORDER = ("generate", "info", "setup", "config", "export", "doctor")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _escape_cell(text: str) -> str:
    """Text for a Markdown table cell: one line, no table breaks, no accidental HTML tags."""
    text = " ".join(text.split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _escape_code(text: str) -> str:
    """A code span in a table cell: only the pipe needs escaping (GitHub renders ``\\|`` as ``|``)."""
    return text.replace("|", "\\|")


def _escape_text(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _anchor(title: str) -> str:
    """GitHub's anchor for a heading (lower case, punctuation dropped, spaces → hyphens)."""
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def _help_markdown(help_text: str) -> list[str]:
    """A command's help: paragraphs as text, indented lines (examples) as one ``text`` block each run."""
    import inspect

    out: list[str] = []
    code: list[str] = []
    for block in re.split(r"\n\s*\n", inspect.cleandoc(help_text or "")):
        lines = block.splitlines()
        if not lines:
            continue
        if all(line.startswith((" ", "\t")) for line in lines):
            code.extend(line.strip() for line in lines)
            continue
        if code:
            out += ["```text", *code, "```", ""]
            code = []
        out += [_escape_text(" ".join(line.strip() for line in lines)), ""]
    if code:
        out += ["```text", *code, "```", ""]
    return out


def _commands(group: Any, ctx: Any) -> Iterator[tuple[Any, Any]]:
    """(command, context) for every visible command under ``group``, depth first, ORDER first at the top."""
    import typer

    names = [n for n in group.list_commands(ctx)]
    if ctx.parent is None:
        names = [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]
    for name in names:
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        sub_ctx = typer.Context(cmd, info_name=name, parent=ctx)
        yield cmd, sub_ctx
        if hasattr(cmd, "list_commands"):
            yield from _commands(cmd, sub_ctx)


def _type_label(hint: Any, info: Any) -> str:
    """``int``, ``int range``, ``list[str]``, ``a|b``: how a parameter's annotation reads in the tables.
    Taken from our own annotations, not from Typer's help records, whose spelling of types changes
    between Typer releases (the README must not depend on which Typer a machine installed)."""
    import enum
    import typing
    from pathlib import Path

    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Annotated:
        return _type_label(args[0], info)
    if typing.get_origin(hint) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return _type_label(inner[0], info) if len(inner) == 1 else "|".join(_type_label(a, info) for a in inner)
    if typing.get_origin(hint) in (list, typing.List):
        return f"list[{_type_label(args[0], None)}]"
    if typing.get_origin(hint) is typing.Literal:
        return "|".join(str(a) for a in args)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "|".join(str(m.value) for m in hint)
    ranged = info is not None and (getattr(info, "min", None) is not None or getattr(info, "max", None) is not None)
    names = {int: "int", float: "float", str: "str", bool: "bool", Path: "path"}
    label = names.get(hint, getattr(hint, "__name__", str(hint)))
    return f"{label} range" if ranged and hint in (int, float) else label


def _signature(p: Any, hints: dict[str, Any]) -> str:
    """``-m, --model <str>``, ``--echo / --no-echo``, ``model <str>``: a parameter's names and value type."""
    import typing

    hint = hints.get(p.name)
    info = next((m for m in typing.get_args(hint)[1:]), None) if hint is not None else None
    value = f"<{_type_label(hint, info)}>" if hint is not None else ""
    if p.param_type_name == "argument":
        return f"{p.name} {value}".rstrip()

    def joined(opts: list[str]) -> str:  # short forms first, as click lists them
        return ", ".join(sorted(opts, key=lambda o: len(o) - len(o.lstrip("-"))))

    names = joined(p.opts)
    if getattr(p, "secondary_opts", None):
        names += " / " + joined(p.secondary_opts)
    return names if getattr(p, "is_flag", False) or not value else f"{names} {value}"


def _hints(cmd: Any) -> dict[str, Any]:
    """The annotations of the function behind a command (its parameters' declared types)."""
    import inspect
    import typing

    callback = getattr(cmd, "callback", None)
    if callback is None:
        return {}
    return typing.get_type_hints(inspect.unwrap(callback), include_extras=True)


def _params_markdown(cmd: Any, ctx: Any) -> list[str]:
    """Tables of the arguments, then the options grouped by help panel (in the order they are declared)."""
    help_names = set(ctx.help_option_names)
    hints = _hints(cmd)
    panels: dict[str, list[tuple[str, str]]] = {}
    for p in cmd.params:
        if getattr(p, "hidden", False) or (p.param_type_name == "option" and set(p.opts) & help_names):
            continue
        record = p.get_help_record(ctx)
        if record is None:
            continue
        name, text = _signature(p, hints), record[1]
        if p.param_type_name == "argument":
            panel = "Arguments"
        else:
            panel = getattr(p, "rich_help_panel", None) or "Options"
        panels.setdefault(panel, []).append((name, text))
    out: list[str] = []
    multiple = len(panels) > 1
    for panel, rows in panels.items():
        if multiple:
            out += [f"**{panel}**", ""]
        first = "Argument" if panel == "Arguments" else "Option"
        out += [f"| {first} | Description |", "|---|---|"]
        out += [f"| `{_escape_code(name)}` | {_escape_cell(text)} |" for name, text in rows]
        out.append("")
    return out


def reference_markdown() -> str:
    """The generated block: an index of the commands, then one section per command."""
    import typer

    from llmbuilder_cli.cli.app import app

    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="llmbuilder")
    leaves = [(c, x) for c, x in _commands(root, ctx) if not hasattr(c, "list_commands")]
    lines = [
        "<!-- Written by scripts/gen_docs.py from the commands' own help; edit the help, then rerun it. -->",
        "",
        "Every command also takes `-h, --help`. Option values complete on Tab once shell completion is set up.",
        "",
        "| Command | What it does |",
        "|---|---|",
    ]
    for cmd, x in leaves:
        title = x.command_path
        lines.append(f"| [`{title}`](#{_anchor(title)}) | {_escape_cell(cmd.get_short_help_str(limit=200))} |")
    lines.append("")
    sections = [(root, ctx)] + leaves
    for cmd, x in sections:
        title = x.command_path
        lines += [f"### `{title}`", ""]
        lines += _help_markdown(cmd.help or "")
        usage = " ".join([title, *cmd.collect_usage_pieces(x)])
        lines += ["```text", usage, "```", ""]
        lines += _params_markdown(cmd, x)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def with_reference(readme: str, block: str) -> str:
    """``readme`` with the text between the markers replaced by ``block``; ValueError without markers."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start or readme.count(BEGIN) != 1 or readme.count(END) != 1:
        raise ValueError(f"README.md needs exactly one {BEGIN} ... {END} pair")
    return readme[: start + len(BEGIN)] + "\n" + block + readme[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when README.md is stale")
    args = parser.parse_args(argv)
    current = README.read_text(encoding="utf-8")
    updated = with_reference(current, reference_markdown())
    if args.check:
        if updated != current:
            print("stale: README.md command reference (run: python scripts/gen_docs.py)", file=sys.stderr)
            return 1
        return 0
    if updated != current:
        with open(README, "w", encoding="utf-8", newline="\n") as f:
            f.write(updated)
        print("updated README.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
