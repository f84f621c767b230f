"""Code written against llmbuilder 2.0.0's ``llmbuilder.inference``: TextGenerator, GenerationConfig with
all ten of its fields, and generate_text(model_path, tokenizer_path, prompt, device, **kwargs).

Runs from a directory holding ./model/model.pt, ./tokenizer/ and the reference_outputs.json that
llmbuilder 2.0.0 wrote for that model; each greedy case must come out as llmbuilder's own text. The test
runs it against this package with only the import line changed.
"""

import json

from llmbuilder.inference import GenerationConfig, TextGenerator, generate_text

MODEL, TOKENIZER = "./model/model.pt", "./tokenizer"
with open("reference_outputs.json", encoding="utf-8") as f:
    reference = json.load(f)
greedy_cases = [c for c in reference["cases"] if not c["config"]["do_sample"]]

# Load once, generate many: the instance config applies to every call.
generator = TextGenerator(MODEL, TOKENIZER, device="cpu", config=GenerationConfig(max_new_tokens=40, do_sample=False))
for case in greedy_cases:
    text = generator.generate(case["prompt"], repetition_penalty=case["config"]["repetition_penalty"])
    assert text == case["text"], (case["case"], text)

# config= for one call, built from all ten fields as llmbuilder records them (pad_token_id 0, eos_token_id 3).
for case in greedy_cases:
    text = generator.generate(case["prompt"], config=GenerationConfig(**case["config"]))
    assert text == case["text"], (case["case"], text)

# A batch, and settings changed for the calls that follow.
plain = [c for c in greedy_cases if c["config"]["repetition_penalty"] == 1.0]
assert generator.generate_batch([c["prompt"] for c in plain]) == [c["text"] for c in plain]
generator.update_config(max_new_tokens=5)
short = generator.generate(plain[0]["prompt"])
assert plain[0]["text"].startswith(short) and short != plain[0]["text"], short

# The convenience function: device is the fourth positional argument, every field a keyword.
case = plain[0]
c = case["config"]
text = generate_text(MODEL, TOKENIZER, case["prompt"], "cpu", max_new_tokens=c["max_new_tokens"],
                     temperature=c["temperature"], top_k=c["top_k"], top_p=c["top_p"], do_sample=c["do_sample"],
                     repetition_penalty=c["repetition_penalty"], length_penalty=c["length_penalty"],
                     early_stopping=c["early_stopping"], pad_token_id=c["pad_token_id"],
                     eos_token_id=c["eos_token_id"])
assert text == case["text"], text

print("text generator: ok")
