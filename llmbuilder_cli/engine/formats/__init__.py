"""Model file formats: which model a path names (`locate`) and the readers that turn each format into a
config and weights for ``engine/models``:

* ``llmbuilder.py``: llmbuilder's own checkpoints (``model.pt``, trainer checkpoints, bare state dicts);
* ``hf_dir.py``: Hugging Face model directories (``config.json`` + safetensors), with ``weights_io.py``
  reading safetensors one tensor at a time;
* ``gguf/``: GGUF files (header, quantized tensors, embedded tokenizer);
* ``export_hf.py``: the other direction, an llmbuilder checkpoint written as a Hugging Face directory.
"""
