"""The multi-turn chat loop, driven with injected input and output on the real tiny model (and, for
Ctrl-C, a conversation double whose reply is interrupted)."""

from __future__ import annotations

import io
import json

from llmbuilder_cli.chat import run_chat
from llmbuilder_cli.config import GenerationConfig
from llmbuilder_cli.engine.conversation import Conversation
from llmbuilder_cli.engine.generate import TextStream
from llmbuilder_cli.turns import TurnFormat
from llmbuilder_cli.types import FinishReason, GenerationStats, StreamChunk

GREEDY = GenerationConfig(do_sample=False, max_new_tokens=8)


def chat(conv, text: str, config: GenerationConfig = GREEDY) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_chat(conv, config, input_stream=io.StringIO(text), output_stream=out, error_stream=err)
    return code, out.getvalue(), err.getvalue()


def direct_reply(loaded, prompt_ids, config=GREEDY) -> str:
    return TextStream(loaded, "x", config.replace(stop=TurnFormat().stops), prompt_ids=prompt_ids).result().text


def test_second_reply_depends_on_the_first(tiny_loaded):
    enc = tiny_loaded.tokenizer.encode
    fmt = TurnFormat()
    code, out, err = chat(Conversation(tiny_loaded), "Once upon a time\nthe owl\n")
    assert code == 0 and err == ""  # piped: replies only, nothing else
    first_ids = enc(fmt.user_text("Once upon a time"))
    r1 = direct_reply(tiny_loaded, first_ids)
    r2 = direct_reply(tiny_loaded, first_ids + enc(r1.rstrip() + fmt.end) + enc(fmt.user_text("the owl")))
    assert out == f"{r1}\n{r2}\n"
    alone = direct_reply(tiny_loaded, enc(fmt.user_text("the owl")))
    assert alone != r2  # without the first exchange the answer differs: the context matters


def test_set_temperature_0_then_regen_gives_the_same_reply(tiny_loaded):
    sampled = GenerationConfig(max_new_tokens=10, temperature=1.5)
    code, out, err = chat(Conversation(tiny_loaded), "/set temperature 0\nonce upon a time\n/regen\n/stats\n", sampled)
    assert code == 0
    a, b = out.splitlines()
    assert a == b and a
    assert "temperature = 0.0" in err and "context:" in err and "1 exchange," in err


def test_save_then_load_restores_history_and_settings(tiny_loaded, tmp_path):
    conv = Conversation(tiny_loaded, system="frogs")
    f, md = tmp_path / "chat.json", tmp_path / "chat.md"
    chat(conv, f"/set top_k 7\nonce upon a time\nthe owl\n/save {f}\n/save {md}\n")
    saved = json.loads(f.read_text())
    assert saved["system"] == "frogs" and [t["user"] for t in saved["turns"]] == ["once upon a time", "the owl"]
    assert saved["settings"]["top_k"] == 7
    assert "## You" in md.read_text() and "the owl" in md.read_text()
    context = conv.context_ids
    fresh = Conversation(tiny_loaded)
    code, _, err = chat(fresh, f"/load {f}\n/params\n")
    assert code == 0 and "loaded 2 exchanges" in err
    assert fresh.context_ids == context and fresh.system == "frogs"
    assert "top_k               7" in err and "(loaded)" in err
    _, _, err = chat(fresh, f"/load {md}\n/load {tmp_path / 'nope.json'}\n")
    assert "only .json transcripts can be loaded" in err and "no such file" in err


def test_commands_undo_clear_system_multiline_and_suggestions(tiny_loaded):
    conv = Conversation(tiny_loaded)
    code, out, err = chat(conv, 'one\n"""\nline a\nline b\n"""\n/undo\n/system be brief\n/system\n/sett\n/params\n')
    assert code == 0
    assert [t.user for t in conv.turns] == ["one"]  # the multi-line message was undone
    assert "removed: 'line a\\nline b'" in err
    assert "system text: 'be brief'" in err and conv.system == "be brief"
    assert "did you mean /set" in err
    assert "do_sample           False        (options)" in err and "top_k               50           (default)" in err
    chat(conv, "/clear\n")
    assert conv.turns == []


class InterruptedStream:
    """Yields two chunks, then the user presses Ctrl-C."""

    def __init__(self) -> None:
        self.text = ""

    def __iter__(self):
        for piece in ("half ", "a reply"):
            self.text += piece
            yield StreamChunk(piece, 1, 0)
        raise KeyboardInterrupt

    def cancel(self) -> StreamChunk:
        return StreamChunk("", None, -1, finish_reason=FinishReason.CANCELLED, stats=GenerationStats(new_tokens=2))


class FakeConversation:
    system = ""
    dropped_turns = 0
    block_size = 64

    def __init__(self) -> None:
        self.turns: list = []
        self.dropped: list = []
        self.pending = None
        self.started: list[str] = []

    context_used = 0

    def start(self, user_text, config):
        self.started.append(user_text)
        self.pending = user_text
        return InterruptedStream(), 0

    def accept(self):
        self.turns.append(self.pending)

    def discard(self):
        self.pending = None

    def undo(self):
        return self.turns.pop() if self.turns else None

    def clear(self):
        self.turns = []

    def set_system(self, text):
        self.system = text

    def load_turns(self, pairs, dropped=0):
        self.turns = list(pairs)


def test_ctrl_c_mid_reply_keeps_the_text_out_of_the_context_until_keep():
    conv = FakeConversation()
    code, out, err = chat(conv, "hello\nagain\n/keep\n")
    assert code == 0
    assert out == "half a reply\nhalf a reply\n"
    assert err.count("[cancelled") == 2 and "partial reply added" in err
    assert conv.turns == ["again"]  # only the kept one; the first cancelled reply never joined
    assert conv.started == ["hello", "again"]


def test_interactive_cli_with_a_custom_turn_format(tiny_loaded):
    from llmbuilder_cli import TurnFormat, interactive_cli

    fmt = TurnFormat(user="Q: {text}\n", assistant="A:", stops=("\nQ:",))
    out, err = io.StringIO(), io.StringIO()
    code = interactive_cli(tiny_loaded, turn_format=fmt, do_sample=False, max_new_tokens=6,
                           input_stream=io.StringIO("once upon a time\n"), output_stream=out, error_stream=err)
    ids = tiny_loaded.tokenizer.encode(fmt.user_text("once upon a time"))
    expected = TextStream(tiny_loaded, "x", GenerationConfig(do_sample=False, max_new_tokens=6, stop=fmt.stops),
                          prompt_ids=ids).result().text
    assert code == 0 and out.getvalue() == expected + "\n"


# ------------------------------------------------------------------ commands people bring from other tools
def lines_reader(lines: list[str]):
    """A ``read_line`` over fixed lines (a terminal's input, without the terminal): prompts are shown."""
    pending = iter(lines)
    return lambda prompt: next(pending, None)


def run_lines(conv, lines: list[str], config: GenerationConfig = GREEDY) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_chat(conv, config, input_stream=io.StringIO(""), output_stream=out, error_stream=err,
                    read_line=lines_reader(lines))
    return code, out.getvalue(), err.getvalue()


def test_exit_words_end_the_chat_but_only_as_the_whole_line():
    for word in ("exit", "quit", " Quit ", "/bye", "/quit", "/exit"):
        conv = FakeConversation()
        code, out, _ = chat(conv, f"hello\n{word}\nnever sent\n/keep\n")
        assert code == 0 and conv.started == ["hello"], word
    conv = FakeConversation()
    chat(conv, "exit now\nquit it\n")  # a sentence that starts with the word is a message
    assert conv.started == ["exit now", "quit it"]


def test_question_mark_shows_the_help():
    _, _, err = chat(FakeConversation(), "/?\n")
    assert "/set" in err and "also /?" in err and "/bye" in err


def test_triple_quotes_with_text_on_the_opening_and_closing_lines(tiny_loaded):
    conv = Conversation(tiny_loaded)
    code, _, err = chat(conv, '"""once upon\na time\nthe owl"""\n"""one line"""\n"""\nplain\n"""\n')
    assert code == 0, err
    assert [t.user for t in conv.turns] == ["once upon\na time\nthe owl", "one line", "plain"]


def test_set_accepts_the_flag_spellings_in_any_case(tiny_loaded):
    from llmbuilder_cli.settings import canonical_key

    conv = Conversation(tiny_loaded)
    code, out, err = chat(conv, "/set max-tokens 5\n/set MAX_TOKENS 4\n/set Top-K 9\n/set min-tokens 2\n/params\n")
    assert code == 0 and "Error" not in err, err
    assert "max_new_tokens = 5" in err and "max_new_tokens = 4" in err and "top_k = 9" in err
    assert "max_new_tokens      4            (/set)" in err and "min_new_tokens      2            (/set)" in err
    _, _, err = chat(conv, "/set max-tokenz 5\n")
    assert "unknown setting 'max_tokenz'" in err and "did you mean 'max_new_tokens'" in err
    # one table: config set / settings files read the same spellings
    assert canonical_key("max-tokens") == canonical_key("Max_Tokens") == "max_new_tokens"


def test_singular_and_plural_in_chat_messages(tiny_loaded, tmp_path):
    conv = Conversation(tiny_loaded)
    f = tmp_path / "one.json"
    _, _, err = chat(conv, f"once upon a time\n/stats\n/save {f}\n/load {f}\n")
    assert "1 exchange," in err and f"saved 1 exchange to {f}" in err and "loaded 1 exchange and" in err
    assert "exchanges" not in err
    from llmbuilder_cli.types import footer_text

    one = StreamChunk("", None, -1, finish_reason=FinishReason.LENGTH, stats=GenerationStats(new_tokens=1))
    assert footer_text(one).startswith("[1 token · finish: length")


# ------------------------------------------------------------------------------------- context overflow
def test_a_message_longer_than_the_context_gets_a_note_and_the_footer_stays_within_it(tiny_loaded):
    conv = Conversation(tiny_loaded)
    long_message = " ".join(["the frog sat on the log"] * 40)
    code, out, err = run_lines(conv, [long_message, "/stats"])
    assert code == 0 and out.strip()
    from llmbuilder_cli.engine.generate import with_bos

    n = len(with_bos(tiny_loaded.tokenizer, tiny_loaded.tokenizer.encode(TurnFormat().user_text(long_message))))
    assert n > 128
    assert f"note: this message takes {n} tokens but the model's context is 128; it sees only the last 128" in err
    assert "[context 128/128]" in err and "context: 128/128 tokens" in err


def test_save_after_drops_keeps_every_exchange_and_load_restores_the_same_context(tiny_loaded, tmp_path):
    config = GenerationConfig(do_sample=False, max_new_tokens=40, ignore_eos=True)
    conv = Conversation(tiny_loaded)
    messages = [f"tell me more about day {i} of the frog and the owl" for i in range(5)]
    f, md = tmp_path / "chat.json", tmp_path / "chat.md"
    _, _, err = chat(conv, "\n".join(messages) + f"\n/save {f}\n/save {md}\n", config)
    assert conv.dropped_turns > 0, err
    saved = json.loads(f.read_text())
    assert [t["user"] for t in saved["turns"]] == messages  # nothing is lost from the transcript
    assert [t.get("dropped", False) for t in saved["turns"]] == [True] * conv.dropped_turns + [False] * len(conv.turns)
    assert md.read_text().count("dropped from the model's context") == conv.dropped_turns
    assert f"saved 5 exchanges to {f} ({conv.dropped_turns} of them dropped from the context earlier)" in err
    fresh = Conversation(tiny_loaded)
    _, _, err = chat(fresh, f"/load {f}\n/stats\n")
    assert [t.user for t in fresh.history] == messages and fresh.context_ids == conv.context_ids
    assert f"{conv.dropped_turns} dropped to make room" in err
    _, _, err = chat(fresh, "/clear\n/stats\n")
    assert "0 exchanges, 0 dropped to make room" in err


def test_save_replaces_the_file_atomically(tiny_loaded, tmp_path, monkeypatch):
    import os

    f = tmp_path / "chat.json"
    conv = Conversation(tiny_loaded)
    chat(conv, f"once upon a time\n/save {f}\n")
    before = f.read_bytes()
    assert json.loads(before)["turns"][0]["user"] == "once upon a time"
    assert f.stat().st_mode & 0o777 == 0o600  # it holds prompts

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    _, _, err = chat(conv, f"the owl\n/save {f}\n")
    assert f"Error: cannot write {f}: No space left on device" in err
    assert f.read_bytes() == before  # the old transcript survives whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.json"]  # no temporary file left behind


# ----------------------------------------------------------------------------------- machine mode, escapes
class TextConversation(FakeConversation):
    """Replies with fixed texts (multi-line or hostile) and finishes normally."""

    def __init__(self, replies: list[str]) -> None:
        super().__init__()
        self.replies = list(replies)

    def start(self, user_text, config):
        self.started.append(user_text)
        self.pending = user_text
        text = self.replies.pop(0)

        class Stream:
            def __iter__(self):
                yield StreamChunk(text, 1, 0)
                yield StreamChunk("", None, -1, finish_reason=FinishReason.EOS, stats=GenerationStats(new_tokens=3))

        return Stream(), 0


def test_jsonl_gives_one_object_per_reply_even_for_multi_line_replies():
    replies = ["first line\n\nsecond paragraph\n", "User: not a turn\n"]
    out, err = io.StringIO(), io.StringIO()
    code = run_chat(TextConversation(replies), GREEDY, input_stream=io.StringIO("hi\n/stats\nagain\n"),
                    output_stream=out, error_stream=err, jsonl=True)
    assert code == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    assert [r["text"] for r in records] == replies and [r["user"] for r in records] == ["hi", "again"]
    assert records[0]["finish_reason"] == "eos" and records[0]["stats"]["new_tokens"] == 3
    assert records[0]["context"] == {"used": 0, "size": 64} and records[0]["dropped"] == 0


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_control_characters_in_a_reply_are_shown_on_a_terminal_and_kept_in_a_pipe():
    hostile = "ok\x1b]52;c;aGVsbG8=\x07\x1b[2J done"
    term, err = TTY(), io.StringIO()
    run_chat(TextConversation([hostile]), GREEDY, input_stream=io.StringIO("hi\n"), output_stream=term,
             error_stream=err)
    assert term.getvalue() == "ok^[]52;c;aGVsbG8=^G^[[2J done\n"
    pipe = io.StringIO()
    run_chat(TextConversation([hostile]), GREEDY, input_stream=io.StringIO("hi\n"), output_stream=pipe,
             error_stream=err)
    assert pipe.getvalue() == hostile + "\n"  # byte-exact when not a terminal


def test_history_file_is_private(tmp_path, monkeypatch):
    import os

    from llmbuilder_cli.line_editor import HISTORY_FILE, open_history

    monkeypatch.setenv("LLMBUILDER_HOME", str(tmp_path / "home"))
    path = open_history()
    assert path == str(tmp_path / "home" / HISTORY_FILE) and os.stat(path).st_mode & 0o777 == 0o600
    os.chmod(path, 0o644)  # as an earlier version left it
    assert os.stat(open_history()).st_mode & 0o777 == 0o600


def test_completion_of_commands_and_set_keys():
    from prompt_toolkit.document import Document

    from llmbuilder_cli.chat import completions
    from llmbuilder_cli.line_editor import _completer

    completer = _completer(completions())

    def words(text: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(text), None)]

    assert words("/se") == ["/set", "/seed"]  # in the order /help lists them
    assert words("/by") == ["/bye"] and words("/sys") == ["/system"]
    assert words("/set max") == ["max_new_tokens"] and words("/set TOP_") == ["top_k", "top_p"]
    assert words("/set top_k 5") == [] and words("hello /se") == []


def test_save_and_load_refuse_unknown_users_and_endless_files(tiny_loaded):
    conv = Conversation(tiny_loaded)
    code, _, err = chat(conv, "/save ~nosuchuser12345/chat.json\n/load ~nosuchuser12345/chat.json\n"
                              "/load /dev/zero\n/stats\n")
    assert code == 0 and "Traceback" not in err
    assert err.count("there is no user 'nosuchuser12345'") == 2
    assert "is larger than 64 MiB" in err
