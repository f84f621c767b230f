"""Tokenizers and prompt text: ``tokenizer.py`` wraps SentencePiece and Hugging Face ``tokenizer.json``
tokenizers behind one interface (encode, decode, streaming decode, special tokens), ``sp_convert.py``
converts a SentencePiece model into a ``tokenizer.json``, and ``chat_template.py`` renders a model's
chat template in a sandbox.
"""
