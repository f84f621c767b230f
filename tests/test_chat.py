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
