"""terminal_text: control characters made visible for terminals, word-boundary wrapping of notes."""

from __future__ import annotations

import io

from llmbuilder_cli.terminal_text import for_stream, has_controls, visible, wrap_for


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_visible_shows_escape_sequences_keeps_newline_and_tab():
    hostile = "a\x1b]52;c;aGk=\x07b\x1b[2Jc\td\ne\x9bf\x7f"
    assert visible(hostile) == "a^[]52;c;aGk=^Gb^[[2Jc\td\ne\\x9bf^?"
    assert not has_controls(visible(hostile))


def test_visible_drops_cr_only_before_newline():
    assert visible("one\r\ntwo\rthree") == "one\ntwo^Mthree"


def test_plain_text_is_returned_as_is():
    text = "héllo wörld — ok\n\ttab"
    assert visible(text) is text


def test_for_stream_keeps_pipes_byte_exact():
    text = "x\x1b[31my"
    assert for_stream(text, io.StringIO()) == text
    assert for_stream(text, _Tty()) == "x^[[31my"


def test_wrap_for_breaks_on_spaces_and_keeps_indent():
    line = "  the quick brown fox jumps over the lazy dog again and again"
    wrapped = wrap_for(line, None, width=20)
    rows = wrapped.split("\n")
    assert all(len(r) <= 20 for r in rows)
    assert all(r.startswith("  ") for r in rows)
    assert " ".join(r.strip() for r in rows) == line.strip()


def test_wrap_for_leaves_non_terminals_alone():
    line = "word " * 50
    assert wrap_for(line, io.StringIO()) == line
