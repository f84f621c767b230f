"""Chat templates: safe rendering, the conversation laid out by the model's template, and --chat."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import MODEL_PT, TOKENIZER_DIR, cli_cmd, cli_env
from llmbuilder_cli.config import GenerationConfig
from llmbuilder_cli.engine.tokenizers.chat_template import ChatTemplate
from llmbuilder_cli.engine.conversation import Conversation
from llmbuilder_cli.engine.generate import TextStream
from llmbuilder_cli.errors import ConfigError, GenerationError

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# The kind of template Llama-2-style models ship: roles must alternate, BOS written by the template.
STRICT = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if m['role'] == 'user' %}[INST] {{ m['content'] | trim }} [/INST]{% else %} {{ m['content'] | trim }} "
    "{{ eos_token }}{% endif %}{% endfor %}"
)


def test_render_chatml_with_and_without_generation_prompt():
    t = ChatTemplate(CHATML)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert t.render(msgs) == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert t.render(msgs, add_generation_prompt=False).endswith("Hi<|im_end|>\n")


def test_special_tokens_and_raise_exception():
    t = ChatTemplate(STRICT, {"bos_token": "<s>", "eos_token": "</s>"})
    text = t.render([{"role": "user", "content": " a "}, {"role": "assistant", "content": "b"},
                     {"role": "user", "content": "c"}])
    assert text == "<s>[INST] a [/INST] b </s>[INST] c [/INST]"
    with pytest.raises(GenerationError, match="refused the conversation: Conversation roles must alternate"):
        t.render([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}])


def test_templates_run_sandboxed_and_bad_ones_are_clear_errors():
    escape = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(GenerationError, match="chat template failed"):
        ChatTemplate(escape).render([{"role": "user", "content": "x"}])
    with pytest.raises(ConfigError, match="not valid Jinja"):
        ChatTemplate("{% for m in messages %}")
    mutate = "{% set _ = messages.append({'role': 'x'}) %}ok"
    with pytest.raises(GenerationError):
        ChatTemplate(mutate).render([{"role": "user", "content": "x"}])


def test_conversation_with_a_template_renders_every_turn_and_reuses_the_cache(tiny_loaded):
    tok = tiny_loaded.tokenizer
    t = ChatTemplate("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                     "{% if add_generation_prompt %}assistant:{% endif %}")
    conv = Conversation(tiny_loaded, system="be kind", template=t)
    cfg = GenerationConfig(do_sample=False, max_new_tokens=8)
    s1, dropped = conv.start("the cat", cfg)
    assert dropped == 0
    assert s1.prompt_ids == tok.encode("system: be kind\nuser: the cat\nassistant:")
    for _ in s1:
        pass
    conv.accept()
    s2, _ = conv.start("the dog", cfg)
    expected = tok.encode(t.render(conv.messages("the dog")))
    assert s2.prompt_ids == expected
    assert s2.tokens.cached > 0  # the shared prefix was not run again
    ids = [c.token_id for c in s2 if c.token_id is not None]
    fresh = TextStream(tiny_loaded, "", cfg, prompt_ids=expected)  # no cache: the same greedy tokens
    assert ids == [c.token_id for c in fresh if c.token_id is not None]


def test_models_without_a_template_keep_plain_turns(tiny_loaded):
    conv = Conversation(tiny_loaded)
    assert conv.template is None
    stream, _ = conv.start("hello", GenerationConfig(do_sample=False, max_new_tokens=2))
    assert stream.prompt_ids == tiny_loaded.tokenizer.encode("User: hello\nAssistant:")


def test_cli_chat_uses_a_template_file_and_prints_only_the_reply(tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }} {% endfor %}", encoding="utf-8")
    base = ["generate", "text", "-m", str(MODEL_PT), "-t", str(TOKENIZER_DIR), "--greedy", "--max-tokens", "6"]
    chat = subprocess.run(cli_cmd(*base, "--chat", "--chat-template", str(template), "-p", "once upon a time",
                                  "--json"), capture_output=True, text=True, env=cli_env(), timeout=120)
    plain = subprocess.run(cli_cmd(*base, "-p", "once upon a time ", "--json"), capture_output=True, text=True,
                           env=cli_env(), timeout=120)
    assert chat.returncode == 0, chat.stderr
    a, b = json.loads(chat.stdout), json.loads(plain.stdout)
    assert a["token_ids"] == b["token_ids"] and a["text"] == b["text"]  # same ids: the template laid it out
    text_run = subprocess.run(cli_cmd(*base, "--chat", "--chat-template", str(template), "-p", "once upon a time"),
                              capture_output=True, text=True, env=cli_env(), timeout=120)
    assert text_run.stdout.strip() == a["text"].strip()  # no echo of the rendered prompt
    bad = subprocess.run(cli_cmd(*base, "--chat-template", "none", "-p", "x"), capture_output=True, text=True,
                         env=cli_env(), timeout=60)
    assert bad.returncode == 2 and "--chat-template is for chat" in bad.stderr


@pytest.mark.realmodel
@pytest.mark.slow
def test_instruct_model_answers_a_chat_question_with_its_template():
    from real_models import smollm2_gguf

    gguf = smollm2_gguf()
    proc = subprocess.run(
        cli_cmd("generate", "text", "-m", str(gguf), "--chat", "-p", "What is the capital of France?", "--greedy",
                "--max-tokens", "24", "--json"),
        capture_output=True, text=True, env=cli_env(), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert "Paris" in record["text"] and record["finish_reason"] == "eos"
    assert record["prompt"] == "What is the capital of France?"
    assert record["prompt_token_ids"][0] == 1  # <|im_start|>: the template's layout, not the bare question
