"""Which model a path names and in which format: a model file, a Hugging Face directory, or the model
inside an llmbuilder run directory (`resolve_model_file`, `model_format`, `is_gguf`), and the tokenizer
that belongs with it when none is given (`tokenizer_path_for`, `default_tokenizer_path`,
`hf_tokenizer_path`). Nothing here reads weights.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import MODEL_PATH_HINT, ModelLoadError, TokenizerError
from ...files import user_path
from . import hf_dir

__all__ = [
    "is_gguf",
    "model_format",
    "resolve_model_file",
    "tokenizer_path_for",
    "default_tokenizer_path",
    "hf_tokenizer_path",
]

# Files tried, in order, when --model is a directory.
_MODEL_FILES = (
    "model.pt",
    "checkpoints/best_checkpoint.pt",
    "checkpoints/latest_checkpoint.pt",
    "best_checkpoint.pt",
    "latest_checkpoint.pt",
)
_GGUF_MAGIC = b"GGUF"


def is_gguf(path: Path) -> bool:
    """A file named ``*.gguf`` or starting with the GGUF magic bytes."""
    if path.suffix.lower() == ".gguf":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == _GGUF_MAGIC
    except OSError:
        return False


def model_format(path: Path) -> str:
    """``"huggingface"``, ``"gguf"`` or ``"llmbuilder"`` for a path returned by `resolve_model_file`."""
    if path.is_dir():
        return "huggingface"
    return "gguf" if is_gguf(path) else "llmbuilder"


def resolve_model_file(path: str | Path) -> Path:
    """What ``path`` names: a model file itself, a Hugging Face model directory (returned as is), or the
    model inside a run directory (llmbuilder's files first; else a single ``.pt`` or ``.gguf`` file)."""
    p = user_path(path)
    try:
        p.stat()
    except FileNotFoundError:
        pass  # reported below with the usual message
    except OSError as exc:  # a name too long, a loop of links, a path through a file, no permission
        raise ModelLoadError(f"cannot use the model path {str(p)[:120]!r}: {exc.strerror or exc}",
                             hint=MODEL_PATH_HINT) from None
    if p.is_file():
        if p.suffix in (".json", ".safetensors") and hf_dir.is_hf_dir(p.parent):
            return p.parent  # config.json or a weights file of a Hugging Face directory: the directory
        return p
    if p.is_dir():
        if hf_dir.is_hf_dir(p):
            return p
        for name in _MODEL_FILES:
            if (p / name).is_file():
                return p / name
        found = sorted(x.name for x in p.glob("*.pt"))
        if len(found) == 1:
            return p / found[0]
        ggufs = sorted(x.name for x in p.glob("*.gguf"))
        if not found and len(ggufs) == 1:
            return p / ggufs[0]
        if not found and any((p / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json")):
            raise ModelLoadError(f"{p} has safetensors weights but no config.json",
                                 hint="download the model's config.json into that directory")
        listing = ", ".join((found + ggufs)[:6]) if found or ggufs else "no .pt or .gguf files"
        raise ModelLoadError(
            f"no model.pt or checkpoints/best_checkpoint.pt in {p} ({listing})",
            hint="pass the model file itself with --model",
        )
    if p.exists():
        raise ModelLoadError(f"{p} is not a regular file or directory", hint="pass a model file (.pt) with --model")
    raise ModelLoadError(f"model not found: {p}", hint=MODEL_PATH_HINT)


def tokenizer_path_for(model_file: Path, tokenizer_path: str | Path | None) -> str | Path:
    """The tokenizer an llmbuilder model uses: the one given, else the one beside it; none → TokenizerError."""
    if tokenizer_path is not None and str(tokenizer_path) != "":
        return tokenizer_path
    found = default_tokenizer_path(model_file)
    if found is None:
        raise TokenizerError(
            f"no tokenizer given and none found beside {model_file}",
            hint="pass --tokenizer DIR (the directory with llmbuilder's tokenizer.model)",
        )
    return found


def default_tokenizer_path(model_file: Path) -> Path | None:
    """The tokenizer that belongs to a model: ``tokenizer/`` beside it or beside its run directory."""
    here = model_file.parent
    candidates = [here / "tokenizer", here]
    if here.name == "checkpoints":
        candidates += [here.parent / "tokenizer", here.parent]
    for c in candidates:
        if (c / "tokenizer.model").is_file() or (c / "tokenizer.json").is_file():
            return c
    return None



def hf_tokenizer_path(directory: Path) -> Path:
    """The tokenizer.json of a Hugging Face model directory (the fast tokenizer transformers would use)."""
    file = directory / "tokenizer.json"
    if file.is_file():
        return file
    slow = [n for n in ("tokenizer.model", "vocab.json", "tokenizer_config.json") if (directory / n).is_file()]
    raise TokenizerError(
        f"no tokenizer.json in {directory}" + (f" (it has {', '.join(slow)})" if slow else ""),
        hint="pass --tokenizer, or save a fast tokenizer once with transformers: "
        "AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)",
    )
