"""llmbuilder's documented Python API (its "Text Generation" guide), written as an llmbuilder user writes it.

Runs from a directory holding ./model/model.pt and ./tokenizer/, the layout the guide uses. The test runs
it against this package with only the import lines changed.
"""

import llmbuilder
from llmbuilder import generate_text
from llmbuilder.inference import GenerationConfig

MODEL, TOKENIZER = "./model/model.pt", "./tokenizer"

# The guide's first example: loose sampling arguments.
text = llmbuilder.generate_text(model_path=MODEL, tokenizer_path=TOKENIZER, prompt="The future of AI is",
                                max_new_tokens=100, temperature=0.8)
assert isinstance(text, str) and text.startswith("the future of ai is"), text

# config=GenerationConfig(...) instead of loose arguments, with every documented field.
config = GenerationConfig(
    max_new_tokens=50,
    min_new_tokens=10,
    temperature=0.8,
    top_k=40,
    top_p=0.9,
    repetition_penalty=1.1,
    do_sample=True,
)
text = generate_text(model_path=MODEL, tokenizer_path=TOKENIZER, prompt="Once upon a time", config=config)
assert text.startswith("once upon a time") and len(text) > len("once upon a time"), text

# 1. Greedy: do_sample=False always takes the most likely token, so it repeats itself exactly.
greedy = GenerationConfig(do_sample=False, max_new_tokens=40)
first = generate_text(model_path=MODEL, tokenizer_path=TOKENIZER, prompt="Once upon a time", config=greedy)
again = generate_text(model_path=MODEL, tokenizer_path=TOKENIZER, prompt="Once upon a time", config=greedy)
assert first == again, (first, again)

# 2. Temperature sampling: conservative, balanced, creative.
for temperature in (0.3, 0.8, 1.5):
    text = generate_text(model_path=MODEL, tokenizer_path=TOKENIZER, prompt="The little fox",
                         max_new_tokens=20, temperature=temperature, do_sample=True)
    assert text.startswith("the little fox"), text

# 3. Top-k and 4. top-p.
text = generate_text(model_path=MODEL, tokenizer_path=TOKENIZER, prompt="The little fox",
                     config=GenerationConfig(top_k=40, temperature=0.8, max_new_tokens=20))
text = generate_text(model_path=MODEL, tokenizer_path=TOKENIZER, prompt="The little fox",
                     config=GenerationConfig(top_p=0.9, temperature=0.8, max_new_tokens=20))
assert text.startswith("the little fox"), text

print("documented usage: ok")
