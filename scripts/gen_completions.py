"""Write the shell completion scripts in completions/ (bash, zsh, fish) from the program itself.

    python scripts/gen_completions.py           # (re)write completions/
    python scripts/gen_completions.py --check   # exit 1 if a file is missing or differs (what the tests check)

Each file is the script ``llmbuilder --show-completion`` prints for that shell (the one
``--install-completion`` installs) under a comment header: on Tab it asks the program for candidates, so
commands, options and option values always match the installed version. See
``llmbuilder_cli/cli/completion.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "completions"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llmbuilder_cli.cli.completion import completion_script, script_files  # noqa: E402


def expected_files() -> dict[Path, str]:
    """Each completion file (every shell, every command name) → the text it should hold."""
    return {OUT_DIR / name: completion_script(shell, prog) for name, (shell, prog, _) in script_files().items()}


def stale_files() -> list[Path]:
    """The files that are missing or differ from what the program generates now."""
    stale = []
    for path, text in expected_files().items():
        try:
            current = path.read_text(encoding="utf-8")
        except OSError:
            current = None
        if current != text:
            stale.append(path)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when a file is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run: python scripts/gen_completions.py)", file=sys.stderr)
        return 1 if stale else 0
    for path, text in expected_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
