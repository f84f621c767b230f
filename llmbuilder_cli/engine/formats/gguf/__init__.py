"""GGUF files: ``header.py`` parses the header (metadata and tensor table) with bounds checks, ``quants.py``
dequantizes the tensor types, ``state.py`` is the lazy state dict that dequantizes a tensor one block of
rows at a time when a model builder takes it, ``tokenizer.py`` rebuilds the embedded tokenizer, and
``file.py`` (`read_gguf`) puts them together into a model description for the loader.
"""
