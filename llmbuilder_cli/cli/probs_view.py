"""``--show-probs`` / ``--top-logprobs N``: how each token was chosen, printed after the text on stderr.

For every generated token: its probability in the final distribution, and the N most likely tokens after
each stage (the raw logits, then each active processor in order), so one can see what temperature,
top-k or top-p did. With an output constraint its stage (``constraint``, first after the raw logits) also
names the tokens of the stage before it that the constraint removed. A rich table on a terminal; plain
aligned text otherwise.
"""

from __future__ import annotations

import json
import re
from typing import IO, Sequence

from ..types import TokenProbs

__all__ = ["token_label", "format_probs_plain", "print_probs_table"]

_C1 = re.compile("[\x7f-\x9f]")


def token_label(text: str) -> str:
    """A token's text made visible: quoted, with newlines, tabs and other controls escaped (JSON escapes
    the C0 controls; DEL and the C1 range, which some terminals obey, are escaped the same way)."""
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(text, ensure_ascii=False))


def _cell(top: Sequence[tuple[int, str, float]]) -> list[str]:
    return [f"{token_label(t)} {p:.4f}" for _, t, p in top]


def _removed(tp: TokenProbs, index: int) -> list[str]:
    """For the ``constraint`` stage: the tokens listed at the stage before it that it removed."""
    name, top = tp.stages[index]
    if name != "constraint" or index == 0:
        return []
    kept = {i for i, _, _ in top}
    return [token_label(t) for i, t, _ in tp.stages[index - 1][1] if i not in kept]


def format_probs_plain(token_probs: Sequence[TokenProbs]) -> str:
    """One block per token: ``#i "tok" p=…`` then one line per stage with its top alternatives."""
    out: list[str] = []
    for i, tp in enumerate(token_probs):
        out.append(f"#{i} {token_label(tp.token)} p={tp.prob:.4f}")
        width = max((len(name) for name, _ in tp.stages), default=0)
        for k, (name, top) in enumerate(tp.stages):
            removed = _removed(tp, k)
            out.append(f"   {name:<{width}}  " + "  ".join(_cell(top))
                       + (f"  (removed: {' '.join(removed)})" if removed else ""))
    return "\n".join(out)


def print_probs_table(token_probs: Sequence[TokenProbs], file: IO[str]) -> None:
    """The same information as a rich table (one row per token, one column per stage)."""
    from rich.console import Console
    from rich.table import Table

    if not token_probs:
        return
    stages = [name for name, _ in token_probs[0].stages]
    table = Table(title="How each token was chosen", title_justify="left", show_lines=True)
    table.add_column("#", justify="right", style="dim")
    table.add_column("token", style="bold")
    table.add_column("p", justify="right")
    for name in stages:
        table.add_column(f"top after {name}" if name != "raw" else "top, raw logits")
    for i, tp in enumerate(token_probs):
        cells = {name: "\n".join(_cell(top) + (["removed: " + " ".join(r)] if (r := _removed(tp, k)) else []))
                 for k, (name, top) in enumerate(tp.stages)}
        table.add_row(str(i), token_label(tp.token), f"{tp.prob:.4f}", *(cells.get(n, "") for n in stages))
    Console(file=file).print(table)
