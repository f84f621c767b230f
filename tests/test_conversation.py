"""Multi-turn context: KV-cache reuse across turns is exact, overflow drops the oldest turns openly,
and replies join the context only when accepted."""

from __future__ import annotations

import pytest

from llmbuilder_cli.config import GenerationConfig
from llmbuilder_cli.engine.conversation import Conversation
from llmbuilder_cli.engine.generate import TextStream
from llmbuilder_cli.errors import ConfigError, UsageError
from llmbuilder_cli.turns import TurnFormat

GREEDY = GenerationConfig(do_sample=False, max_new_tokens=12)


def run_turn(conv: Conversation, text: str, config: GenerationConfig = GREEDY):
    stream, dropped = conv.start(text, config)
    reused = stream.tokens.cached
    result = stream.result()
    return stream, result, reused, dropped


def test_second_turn_reuses_the_cache_and_equals_a_fresh_run(tiny_loaded):
    conv = Conversation(tiny_loaded, system="a story about a frog")
    _, first, reused1, _ = run_turn(conv, "once upon a time")
    assert reused1 == 0 and first.token_ids
    turn1 = conv.accept()
    assert turn1.reply == first.text and conv.context_ids[-len(turn1.reply_ids):] == turn1.reply_ids
    context = conv.context_ids
    stream2, second, reused2, dropped = run_turn(conv, "what did the frog do")
    assert dropped == 0
    assert reused2 >= len(context) - len(turn1.reply_ids)  # system + first user segment came from the cache
    fresh = TextStream(tiny_loaded, "x", GREEDY.replace(stop=TurnFormat().stops),
                       prompt_ids=stream2.prompt_ids).result()
    assert second.token_ids == fresh.token_ids  # reuse changes the cost, not the answer
    assert stream2.prompt_ids[: len(context)] == context


def test_reply_is_part_of_the_context_only_when_accepted(tiny_loaded):
    conv = Conversation(tiny_loaded)
    run_turn(conv, "once upon a time")
    conv.discard()
    assert conv.turns == [] and conv.context_ids == []
    run_turn(conv, "once upon a time")
    conv.accept()
    run_turn(conv, "the end")
    conv.accept()
    assert [t.user for t in conv.turns] == ["once upon a time", "the end"]
    assert conv.undo().user == "the end" and len(conv.turns) == 1
    conv.clear()
    assert conv.context_used == 0
    with pytest.raises(UsageError, match="no reply to keep"):
        conv.accept()
    with pytest.raises(UsageError, match="empty"):
        conv.start("   ", GREEDY)


def test_overflow_drops_the_oldest_turns_and_keeps_the_system_text(tiny_loaded):
    conv = Conversation(tiny_loaded, system="the frog")
    system_ids = conv.context_ids
    config = GenerationConfig(do_sample=False, max_new_tokens=40, ignore_eos=True)
    dropped_total = 0
    for i in range(6):
        stream, _, _, dropped = run_turn(conv, f"tell me more about day {i} of the frog and the owl", config)
        dropped_total += dropped
        assert len(stream.prompt_ids) + config.max_new_tokens <= conv.block_size or not conv.turns
        conv.accept()
    assert dropped_total > 0 and conv.dropped_turns == dropped_total
    assert conv.context_ids[: len(system_ids)] == system_ids
    assert conv.turns[-1].user == "tell me more about day 5 of the frog and the owl"


def test_turn_format_is_validated():
    with pytest.raises(ConfigError, match="exactly once"):
        TurnFormat(user="User:\n")
    with pytest.raises(ConfigError, match="non-empty"):
        TurnFormat(stops=("",))
    f = TurnFormat(user="Q: {text}\n", assistant="A:", stops=["\nQ:"])
    assert f.user_text("hi") == "Q: hi\nA:" and f.stops == ("\nQ:",)


def test_the_cache_starts_small_and_grows_exactly(tiny_loaded, monkeypatch):
    import llmbuilder_cli.engine.conversation as conversation

    monkeypatch.setattr(conversation, "INITIAL_CACHE", 8)
    conv = Conversation(tiny_loaded, system="a story about a frog")
    assert conv._cache.max_len == 8
    replies = []
    for text in ("once upon a time", "the little owl", "the end"):
        stream, result, _, _ = run_turn(conv, text)
        fresh = TextStream(tiny_loaded, text, GREEDY, prompt_ids=stream.prompt_ids)  # no cache at all
        assert result.token_ids == fresh.result().token_ids
        replies.append(result.text)
        conv.accept()
    assert 8 < conv._cache.max_len <= tiny_loaded.block_size
