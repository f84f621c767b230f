"""Find and read models: paths in, a ready `LoadedModel` out. Three formats, told apart by `model_format`:

* **llmbuilder** (format reference §2): ``model.pt`` written by ``save_model`` (format A), trainer
  checkpoints ``best_checkpoint.pt`` / ``latest_checkpoint.pt`` / ``checkpoint_epoch_N.pt`` (format B), and
  a bare ``state_dict``. A run directory may be given instead of a file. Every file is read with
  ``torch.load(weights_only=True, map_location="cpu")`` (GPU-saved files load on CPU-only machines).
  Variants llmbuilder cannot run either (unmerged LoRA weights, fine-tune checkpoints, int8 exports,
  checkpoints without a head count) get a `ModelLoadError` that names what is missing. Before torch reads
  a zip checkpoint, its members' declared sizes are checked (no zip bombs, and they must fit in memory)
  and their CRC-32s verified; weights holding NaN or infinity are refused (``engine/limits.py``).
* **Hugging Face directory**: a directory with a ``config.json`` naming a model type, safetensors weights
  and a ``tokenizer.json`` (see ``engine/hf_dir.py``).
* **GGUF**: a ``.gguf`` file (or any file starting with the GGUF magic), weights dequantized as the
  model is built and tokenizer embedded (see ``engine/gguf_file.py``).

Every format runs in the dtype chosen by `resolve_dtype` (``auto``: float32 on CPU and MPS, bfloat16 on
CUDA when supported, else float16), optionally with int8 weight-only layers (``quantize="int8"``,
Llama family). Memory: a Hugging Face model is built from its files one tensor at a time, float32 weights
memory-mapped, others read straight into their final dtype and layout (``engine/weights_io.py``), so the
peak stays near the weights themselves; GGUF tensors are dequantized one block of rows at a time as the
builder takes them (``engine/gguf_state.py``).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import struct
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .. import cpu_load
from ..cpu_load import SMALL_MODEL_PARAMETERS, AutoThreads
from ..errors import MODEL_PATH_HINT, ModelLoadError, OutOfMemoryError, TokenizerError, UsageError
from ..files import user_path
from . import hf_dir
from .kernels import QUANTIZATIONS, fuses_layers
from .limits import check_finite, check_memory, human_bytes
from .models.llama import Llama
from .models.llmbuilder_gpt import GPTConfig, LLMBuilderGPT
from .tokenizer import HFTokenizer, Tokenizer, load_tokenizer
from .weights_io import LazyState, SafetensorsFile

__all__ = [
    "ModelInfo",
    "LoadedModel",
    "DTYPES",
    "resolve_device",
    "resolve_dtype",
    "model_format",
    "is_gguf",
    "resolve_model_file",
    "default_tokenizer_path",
    "tokenizer_path_for",
    "read_checkpoint",
    "choose_threads",
    "head_is_tied",
    "load",
]

#: torch's own thread count before any run changed it: the physical cores, or OMP_NUM_THREADS.
_TORCH_THREADS = torch.get_num_threads()

# Files tried, in order, when --model is a directory.
_MODEL_FILES = (
    "model.pt",
    "checkpoints/best_checkpoint.pt",
    "checkpoints/latest_checkpoint.pt",
    "best_checkpoint.pt",
    "latest_checkpoint.pt",
)
_BLOCK_KEYS = (
    "ln1.weight",
    "ln1.bias",
    "attn.qkv_proj.weight",
    "attn.out_proj.weight",
    "attn.out_proj.bias",
    "ln2.weight",
    "ln2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
)
_TOP_KEYS = ("token_embedding.weight", "position_embedding.weight", "ln_f.weight", "ln_f.bias")
_HEAD_KEYS = ("num_heads", "n_head")
_GGUF_MAGIC = b"GGUF"
#: --dtype values; "auto" is resolved per device by `resolve_dtype`.
DTYPES = ("auto", "float32", "bfloat16", "float16")
_MODEL_CONFIG_KEYS = {"num_heads", "n_head", "embedding_dim", "n_embd", "num_layers", "n_layer"}


@dataclass
class ModelInfo:
    """What a model file or directory is: shown by the CLI, recorded in JSON output."""

    path: Path  # the model file, or the Hugging Face directory
    format: str  # e.g. "llmbuilder model (save_model)", "Hugging Face safetensors", "GGUF"
    architecture: str  # "llmbuilder-gpt", "llama", "mistral", "qwen2", "gpt2"
    config: Any  # GPTConfig | LlamaConfig | GPT2Config: vocab_size, n_layer, n_head, n_embd, block_size, ...
    file_size: int  # bytes of the weights file(s)
    stored_dtype: str  # dtype of the weights in the file(s), or the GGUF quantization summary
    files: tuple[Path, ...] = ()  # the weights file(s) the sha256 covers; default: (path,)
    quantization: str | None = None  # GGUF: e.g. "Q4_1 (210 tensors), F32 (61), Q8_0 (1)"
    _sha256: str | None = field(default=None, repr=False)

    @classmethod
    def for_file(cls, file: Path, config: GPTConfig, fmt: str, stored_dtype: str) -> "ModelInfo":
        """The description of a checkpoint file just read by `read_checkpoint`."""
        return cls(
            path=file.resolve(),
            format=fmt,
            architecture=LLMBuilderGPT.architecture,
            config=config,
            file_size=file.stat().st_size,
            stored_dtype=stored_dtype,
            files=(file.resolve(),),
        )

    @classmethod
    def for_hf_dir(cls, d: hf_dir.HFDir) -> "ModelInfo":
        shards = len(d.files)
        return cls(
            path=d.directory.resolve(),
            format="Hugging Face safetensors" + (f" ({shards} shards)" if shards > 1 else ""),
            architecture=d.config.model_type,
            config=d.config,
            file_size=d.file_size,
            stored_dtype=d.stored_dtype,
            files=tuple(f.resolve() for f in d.files),
        )

    @property
    def num_parameters(self) -> int:
        return self.config.num_parameters

    def sha256(self) -> str:
        """Hash of the weights, computed on first use (large files take a moment): of the model file; for
        a Hugging Face directory of its safetensors file, or of its shards' bytes concatenated in file-name
        order (config and tokenizer files are not included)."""
        if self._sha256 is None:
            h = hashlib.sha256()
            for file in self.files or (self.path,):
                with open(file, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
            self._sha256 = h.hexdigest()
        return self._sha256


@dataclass
class LoadedModel:
    """A model and its tokenizer, ready to generate; keep it to avoid reloading between calls."""

    model: Any  # LLMBuilderGPT | Llama | GPT2: the interface of engine/models
    tokenizer: Tokenizer
    info: ModelInfo
    device: torch.device
    load_s: float
    #: Sampling defaults the model ships (generation_config.json), as GenerationConfig field values.
    generation_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def block_size(self) -> int:
        return self.model.config.block_size

    def identity(self) -> dict[str, Any]:
        """Which model produced a text: JSON-ready, with the weights' sha256 (computed once)."""
        cfg = self.info.config
        return {
            "path": str(self.info.path),
            "format": self.info.format,
            "architecture": self.info.architecture,
            "parameters": self.info.num_parameters,
            "context_length": cfg.block_size,
            "vocab_size": cfg.vocab_size,
            "stored_dtype": self.info.stored_dtype,
            "quantization": self.info.quantization,
            "sha256": self.info.sha256(),
            "tokenizer": {"kind": self.tokenizer.kind, "path": str(Path(self.tokenizer.path).resolve())},
            "device": str(self.device),
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "weights": getattr(self.model, "quantization", None) or "dtype",  # "int8" with --quantize int8
        }


# ---------------------------------------------------------------------------------------------- device
def resolve_device(spec: str | None = "auto") -> torch.device:
    """``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` → a usable device."""
    text = (spec or "auto").strip().lower()
    hint = "use --device auto, cpu, cuda, cuda:N or mps"
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device {spec!r}", hint=hint) from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("CUDA is not available on this machine", hint="use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(
                f"there is no CUDA device {dev.index} (this machine has {torch.cuda.device_count()})",
                hint="use --device cuda:0 or auto",
            )
        return dev
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError("MPS (Apple GPU) is not available on this machine", hint="use --device cpu (or auto)")
        return dev
    raise UsageError(f"device type {dev.type!r} is not supported", hint=hint)


def resolve_dtype(spec: str | None, device: torch.device) -> torch.dtype:
    """``auto`` (float32 on CPU and MPS; on CUDA bfloat16 where supported, else float16), ``float32``,
    ``bfloat16`` or ``float16`` → the dtype every weight and activation runs in."""
    text = (spec or "auto").strip().lower() if isinstance(spec, str) or spec is None else spec
    if text not in DTYPES:
        raise UsageError(f"unknown dtype {spec!r}", hint="use --dtype auto, float32, bfloat16 or float16")
    if text == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, text)


def choose_threads(requested: int | str | AutoThreads, num_parameters: int) -> int:
    """CPU threads for generation: a requested count, or for "auto" what `cpu_load.auto_thread_count`
    picks from the model's size, the CPUs this process may use and how busy they are now."""
    if requested == "auto" or isinstance(requested, AutoThreads):
        small = num_parameters < SMALL_MODEL_PARAMETERS
        busy = None if small else cpu_load.busy_now(requested.since if isinstance(requested, AutoThreads) else None)
        return cpu_load.auto_thread_count(num_parameters, cpus=cpu_load.usable_cpus(), ceiling=_TORCH_THREADS,
                                          busy=busy)
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
        raise UsageError(f"threads must be 'auto' or a whole number >= 1 (got {requested!r})", hint="use threads=1")
    limit = max_threads()
    if requested > limit:
        raise UsageError(
            f"{requested} threads is more than this machine can use (at most {limit}: 4 per CPU core)",
            hint=f"use --threads {os.cpu_count() or 1} (one per core) or leave it out",
        )
    return requested


def max_threads() -> int:
    """The most CPU threads a run may ask for: 4 per core (far more only costs memory, or crashes torch)."""
    return 4 * (os.cpu_count() or 1)


# ----------------------------------------------------------------------------------------------- paths
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


# ------------------------------------------------------------------------------------------ checkpoint
_DAMAGED = "the file may be damaged or of another format; re-export it with llmbuilder"


def _sniff(file: Path) -> None:
    """Refuse what cannot be a PyTorch checkpoint before unpickling anything, with a plain reason."""
    try:
        with open(file, "rb") as f:
            head = f.read(8)
    except PermissionError:
        raise ModelLoadError(f"cannot read {file}: permission denied", hint="check the file's permissions") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read {file}: {exc.strerror or exc}", hint="check the path") from None
    if not head:
        raise ModelLoadError(f"{file} is empty (0 bytes)", hint="the download or save did not finish; save it again")
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return  # a zip archive (torch.save's format) or a legacy pickle: let torch's safe loader judge
    kind = "text" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "data of an unknown format"
    raise ModelLoadError(
        f"{file} is not a PyTorch checkpoint (it holds {kind})",
        hint="pass llmbuilder's model.pt, a trainer checkpoint, a Hugging Face directory or a .gguf file",
    )


#: A zip member may expand at most this many times its stored size. torch.save stores members
#: uncompressed (ratio 1); deflate at best reaches ~1000, which only long runs of one byte give.
MAX_ZIP_RATIO = 100


def _check_archive(file: Path) -> None:
    """Before torch reads a zip checkpoint: every member's declared size must be plausible (no zip bomb),
    the total must fit in memory, and every member's CRC-32 must match its data (a flipped bit is found
    here instead of loading silently). Reads the archive once, a block at a time."""
    try:
        z = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # not a zip archive Python can open (e.g. cut short): torch's reader decides and explains it
    with z:
        members = z.infolist()
        total = 0
        for info in members:
            total += info.file_size
            if info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1 << 12):
                raise ModelLoadError(
                    f"{file}: member {info.filename!r} declares {human_bytes(info.file_size)} compressed into "
                    f"{human_bytes(info.compress_size)} (torch.save never compresses: a zip bomb or a damaged "
                    "archive)", hint=_DAMAGED)
        check_memory(total, f"{file} (its members declare {human_bytes(total)})")
        for info in members:
            try:
                with z.open(info) as member:  # zipfile checks the CRC-32 when a member is read to its end
                    while member.read(1 << 20):
                        pass
            except zipfile.BadZipFile as exc:
                what = "its data does not match the CRC-32 checksum" if "CRC" in str(exc) else _first_line(exc)
                raise ModelLoadError(f"{file} is damaged: member {info.filename!r}: {what}", hint=_DAMAGED) from None
            except (OSError, EOFError, ValueError, NotImplementedError, RuntimeError, zlib.error) as exc:
                raise ModelLoadError(f"{file} is damaged: member {info.filename!r}: {_first_line(exc)}",
                                     hint=_DAMAGED) from None


def _torch_load(file: Path) -> Any:
    _sniff(file)
    with open(file, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    if zipped:
        _check_archive(file)
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols; our error says enough
            warnings.simplefilter("ignore")
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "unsupported global" in msg.lower():  # torch's weights-only unpickler refused an object
            if "quantiz" in msg.lower() or "packed" in msg.lower():
                raise ModelLoadError(
                    f"{file} contains quantized (int8) packed parameters",
                    hint="export the model unquantized (float32 or float16) with llmbuilder and load that file",
                ) from None
            found = re.search(r"GLOBAL (\S+)", msg)
            what = f" ({found.group(1)})" if found else ""
            raise ModelLoadError(
                f"{file} contains a pickled Python object{what}, which a safe weights-only load refuses "
                "(nothing in it was run)",
                hint="load only files you trust; re-save just the weights (the state_dict) with torch.save",
            ) from None
        raise ModelLoadError(f"{file} is not a readable PyTorch checkpoint ({_first_line(exc)})", hint=_DAMAGED) from None
    except MemoryError:
        raise OutOfMemoryError(f"{file} needs more memory than is available to load",
                               hint="free memory, or check that the file is what it claims to be") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError, TypeError,
            AttributeError, struct.error, UnicodeDecodeError, OverflowError) as exc:
        text = str(exc)
        if not zipped and (isinstance(exc, EOFError) or "more bytes" in text or "truncated" in text
                           or "Ran out of input" in text):
            reason = "it is truncated: the end of the file is missing"
        elif "central directory" in text or isinstance(exc, EOFError):
            reason = "it is truncated: the end of the archive is missing"
        elif "not in a subdirectory" in text or "archive/data.pkl" in text or "data.pkl" in text:
            reason = "a zip archive, but not one written by torch.save"
        else:
            reason = _first_line(exc)
        raise ModelLoadError(f"{file} is not a readable PyTorch checkpoint ({reason})", hint=_DAMAGED) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    line = text.splitlines()[0]
    return line if len(line) <= 160 else line[:157] + "..."


def _strip_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    """Remove wrapper prefixes added by DataParallel (``module.``) or torch.compile (``_orig_mod.``)."""
    out = {}
    for k, v in state.items():
        k = str(k)
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def _pick_config(ck: Mapping[str, Any]) -> dict[str, Any] | None:
    cfg = ck.get("model_config")
    if isinstance(cfg, Mapping):
        return dict(cfg)
    cfg = ck.get("config")
    if isinstance(cfg, Mapping) and _MODEL_CONFIG_KEYS & set(cfg):
        return dict(cfg)
    return None


def _pick_state(ck: Mapping[str, Any], file: Path) -> tuple[dict[str, Any], str]:
    for key, fmt in (("model_state_dict", None), ("state_dict", "checkpoint with a state_dict")):
        if isinstance(ck.get(key), Mapping):
            if fmt is None:
                fmt = "llmbuilder trainer checkpoint" if "training_state" in ck else "llmbuilder model (save_model)"
            return _strip_prefixes(ck[key]), fmt
    if any(isinstance(v, torch.Tensor) for v in ck.values()) and any("token_embedding" in str(k) for k in ck):
        return _strip_prefixes(ck), "bare state_dict"
    keys = ", ".join(sorted(map(str, ck))[:8]) or "nothing"
    raise ModelLoadError(
        f"{file} holds no model weights (no model_state_dict or state_dict; it has: {keys})",
        hint="pass llmbuilder's model.pt or a trainer checkpoint such as checkpoints/best_checkpoint.pt",
    )


def _reject_variants(ck: Mapping[str, Any], state: Mapping[str, Any], file: Path) -> None:
    if any(".lora_A." in k or ".lora_B." in k or ".original_layer." in k for k in state):
        raise ModelLoadError(
            f"{file} holds unmerged LoRA weights (keys such as '*.lora_A.weight'), which are not supported",
            hint="merge the LoRA adapters into the base weights and save the merged model",
        )
    if "lora_layers" in ck:
        raise ModelLoadError(
            f"{file} is an llmbuilder fine-tuning checkpoint (it has lora_layers), not a model",
            hint="use the final fine-tuned model file (format of model.pt) that fine-tuning writes at the end",
        )
    if any("_packed_params" in k or k.endswith(".scale") or k.endswith(".zero_point") for k in state):
        raise ModelLoadError(
            f"{file} is an int8 (dynamically quantized) export, which is not supported",
            hint="export the model unquantized (float32 or float16) and load that file",
        )
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelLoadError(
            f"{file}: state entries that are not tensors: {', '.join(bad[:5])}",
            hint="the checkpoint is not an llmbuilder GPT; re-export it with llmbuilder",
        )
    not_float = [k for k, v in state.items() if not v.is_floating_point() and not k.endswith("causal_mask")]
    if not_float:
        dtype = state[not_float[0]].dtype
        raise ModelLoadError(
            f"{file}: weights stored as {dtype} ({not_float[0]}) cannot be run",
            hint="export the model in float32 or float16 and load that file",
        )


def _config_value(cfg: Mapping[str, Any], *names: str) -> Any:
    for n in names:
        if n in cfg and cfg[n] is not None:
            return cfg[n]
    return None


def read_checkpoint(
    file: Path, *, num_heads: int | None = None
) -> tuple[GPTConfig, dict[str, torch.Tensor], str, str]:
    """Read and validate one checkpoint → (config, float32 CPU state dict, format name, stored dtype)."""
    ck = _torch_load(file)
    if not isinstance(ck, Mapping):
        raise ModelLoadError(
            f"{file} holds a {type(ck).__name__}, not an llmbuilder checkpoint dictionary",
            hint="pass llmbuilder's model.pt or a trainer checkpoint",
        )
    state, fmt = _pick_state(ck, file)
    _reject_variants(ck, state, file)
    cfg = _pick_config(ck)

    for key in ("token_embedding.weight", "position_embedding.weight"):
        t = state.get(key)
        if t is None or t.dim() != 2:
            found = ", ".join(sorted(state)[:6])
            raise ModelLoadError(
                f"{file} is not an llmbuilder GPT: '{key}' is missing or not a matrix (found: {found})",
                hint="this tool runs models built by llmbuilder (GPTModel)",
            )
    V, C = state["token_embedding.weight"].shape
    P, C2 = state["position_embedding.weight"].shape
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    L = len(layers)
    if C2 != C or L == 0 or layers != list(range(L)):
        raise ModelLoadError(
            f"{file}: inconsistent weights (embedding width {C} vs {C2}, blocks {layers[:8]})",
            hint="the checkpoint is damaged or not an llmbuilder GPT",
        )

    H = _config_value(cfg, *_HEAD_KEYS) if cfg else None
    if H is None:
        if num_heads is None:
            raise ModelLoadError(
                f"{file} has no model configuration, so the number of attention heads is unknown "
                f"(vocab {V}, width {C}, {L} layers, context {P} were read from the weights)",
                hint="pass --num-heads N (num_heads the model was trained with)",
            )
        H = num_heads
    elif num_heads is not None and num_heads != H:
        raise ModelLoadError(
            f"--num-heads {num_heads} contradicts the checkpoint's num_heads {H}",
            hint="leave --num-heads out for checkpoints that record their configuration",
        )
    if not isinstance(H, int) or isinstance(H, bool) or H <= 0 or C % H:
        raise ModelLoadError(
            f"{file}: num_heads {H!r} does not divide the model width {C}",
            hint="pass the head count the model was trained with",
        )
    if cfg:
        expected = {
            ("vocab_size",): V,
            ("embedding_dim", "n_embd"): C,
            ("num_layers", "n_layer"): L,
            ("max_seq_length", "block_size"): P,
        }
        diffs = [
            f"{names[0]} {_config_value(cfg, *names)} vs {actual}"
            for names, actual in expected.items()
            if _config_value(cfg, *names) is not None and _config_value(cfg, *names) != actual
        ]
        if diffs:
            raise ModelLoadError(
                f"{file}: the stored config disagrees with the weights ({'; '.join(diffs)})",
                hint="the checkpoint is inconsistent; re-export it with llmbuilder",
            )

    config = GPTConfig(vocab_size=V, n_layer=L, n_head=H, n_embd=C, block_size=P)
    stored_dtype = str(state["token_embedding.weight"].dtype).replace("torch.", "")
    return config, _validated_state(state, config, file), fmt, stored_dtype


def _validated_state(state: dict[str, torch.Tensor], cfg: GPTConfig, file: Path) -> dict[str, torch.Tensor]:
    C, V, P = cfg.n_embd, cfg.vocab_size, cfg.block_size
    shapes: dict[str, tuple[int, ...]] = {
        "token_embedding.weight": (V, C),
        "position_embedding.weight": (P, C),
        "ln_f.weight": (C,),
        "ln_f.bias": (C,),
        "lm_head.weight": (V, C),
    }
    block_shapes = {
        "ln1.weight": (C,),
        "ln1.bias": (C,),
        "attn.qkv_proj.weight": (3 * C, C),
        "attn.out_proj.weight": (C, C),
        "attn.out_proj.bias": (C,),
        "ln2.weight": (C,),
        "ln2.bias": (C,),
        "mlp.fc1.weight": (4 * C, C),
        "mlp.fc1.bias": (4 * C,),
        "mlp.fc2.weight": (C, 4 * C),
        "mlp.fc2.bias": (C,),
    }
    for i in range(cfg.n_layer):
        for k, s in block_shapes.items():
            shapes[f"blocks.{i}.{k}"] = s
    present = {k for k in state if not k.endswith(".attn.causal_mask")}
    missing = sorted(set(shapes) - present - {"lm_head.weight"})
    unexpected = sorted(present - set(shapes))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:6])}" + (" …" if len(missing) > 6 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:6])}" + (" …" if len(unexpected) > 6 else ""))
        raise ModelLoadError(
            f"{file} does not match llmbuilder's GPT layout: {'; '.join(parts)}",
            hint="this tool runs llmbuilder GPT checkpoints (model.pt or trainer checkpoints)",
        )
    out: dict[str, torch.Tensor] = {}
    for k in present:
        t = state[k]
        if tuple(t.shape) != shapes[k]:
            raise ModelLoadError(
                f"{file}: '{k}' has shape {tuple(t.shape)}, expected {shapes[k]}",
                hint="the checkpoint is damaged or its configuration is wrong",
            )
        out[k] = t.to(torch.float32)
        check_finite(out[k], k, str(file))
    if "lm_head.weight" not in out:  # tied head: reuse the embedding
        out["lm_head.weight"] = out["token_embedding.weight"]
    return out


def head_is_tied(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether the output head is the token embedding (llmbuilder ties them; one storage in the file)."""
    head, emb = state["lm_head.weight"], state["token_embedding.weight"]
    return head is emb or torch.equal(head, emb)


def _check_num_heads(num_heads: int | None, config: Any, path: Path) -> None:
    if num_heads is not None and num_heads != config.n_head:
        raise ModelLoadError(
            f"--num-heads {num_heads} contradicts {path}'s {config.n_head} attention heads",
            hint="leave --num-heads out: it is only for old llmbuilder checkpoints",
        )


def _check_vocab(tokenizer: Tokenizer, config: Any) -> None:
    if tokenizer.vocab_size > config.vocab_size:
        raise TokenizerError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model's embedding has only "
            f"{config.vocab_size} rows",
            hint="use the tokenizer the model was trained with",
        )


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


def _build_hf_model(config: Any, state: Mapping[str, torch.Tensor], quantize: str | None) -> Any:
    """The inference model for a validated config; a dict state is consumed (emptied as it is used)."""
    model_class = hf_dir.SUPPORTED[config.model_type][1]
    if model_class is Llama:
        return Llama(config, state, quantize=quantize, consume=True)
    _no_quantization(quantize, config.model_type)
    return hf_dir.build_model(config, state)


def _no_quantization(quantize: str | None, architecture: str) -> None:
    if quantize is not None:
        raise UsageError(f"{quantize} quantization is not available for {architecture} models",
                         hint="it runs Llama-family models (llama, mistral, qwen2); leave the quantization off")


def _load_llmbuilder(file: Path, tokenizer_path: Any, dev: torch.device, dtype: torch.dtype,
                     num_heads: int | None, threads: Any,
                     quantize: str | None = None) -> tuple[Any, Tokenizer, ModelInfo, dict[str, Any]]:
    _no_quantization(quantize, LLMBuilderGPT.architecture)
    tokenizer_path = tokenizer_path_for(file, tokenizer_path)
    config, state, fmt, stored_dtype = read_checkpoint(file, num_heads=num_heads)
    if threads is not None:
        torch.set_num_threads(choose_threads(threads, config.num_parameters))
    tokenizer = load_tokenizer(tokenizer_path, add_bos=False)  # llmbuilder never starts with BOS
    _check_vocab(tokenizer, config)
    tied = head_is_tied(state)
    state = {k: v.to(device=dev, dtype=dtype) for k, v in state.items() if not (tied and k == "lm_head.weight")}
    if tied:
        state["lm_head.weight"] = state["token_embedding.weight"]
    model = LLMBuilderGPT(config, state)
    return model, tokenizer, ModelInfo.for_file(file, config, fmt, stored_dtype), {}


def _check_fits(config: Any, dtype: torch.dtype, quantize: str | None, source: Path) -> None:
    """Refuse a model whose weights, in the dtype (or quantization) they will run in, exceed the memory
    available, before any of them is read."""
    per_parameter = {"int8": 1.0, "int4": 0.5}.get(quantize or "", torch.empty((), dtype=dtype).element_size())
    needed = int(config.num_parameters * per_parameter)
    check_memory(needed, f"{source.name} ({config.num_parameters:,} parameters as "
                         f"{quantize or str(dtype).replace('torch.', '')})")


def _build_hf_dir_model(d: hf_dir.HFDir, dtype: torch.dtype, device: torch.device, quantize: str | None) -> Any:
    """Build the model of an inspected directory, its tensors read one at a time as the builder takes
    them (``engine/weights_io.py``): memory-mapped when every tensor is kept as stored (float32 on CPU,
    nothing fused or quantized), else read into their final dtype, so the peak stays near the weights."""
    files = {f: SafetensorsFile(f) for f in d.files}
    try:
        names = {canon: (files[d.where[stored]], stored) for canon, stored in d.names.items()}
        mmap_ok = device.type == "cpu" and not fuses_layers(dtype, quantize)
        return _build_hf_model(d.config, LazyState(names, dtype=dtype, device=device, mmap_ok=mmap_ok), quantize)
    finally:
        for f in files.values():
            f.close()


def _load_hf(directory: Path, tokenizer_path: Any, dev: torch.device, dtype: torch.dtype,
             num_heads: int | None, threads: Any,
             quantize: str | None = None) -> tuple[Any, Tokenizer, ModelInfo, dict[str, Any]]:
    d = hf_dir.inspect_hf_dir(directory)
    _check_num_heads(num_heads, d.config, directory)
    eos = hf_dir.eos_token_ids(d.generation_config, d.hf_config)
    explicit = tokenizer_path not in (None, "")
    tokenizer = load_tokenizer(tokenizer_path if explicit else hf_tokenizer_path(directory), extra_eos_ids=eos)
    _check_vocab(tokenizer, d.config)
    if threads is not None:
        torch.set_num_threads(choose_threads(threads, d.config.num_parameters))
    _check_fits(d.config, dtype, quantize, directory)
    model = _build_hf_dir_model(d, dtype, dev, quantize)
    return model, tokenizer, ModelInfo.for_hf_dir(d), hf_dir.generation_defaults(d.generation_config)


def read_gguf_model(file: Path, dtype: torch.dtype) -> tuple[Any, Any, dict[str, str]]:
    """Read a GGUF file's header → (the reader's GGUFModel, validated config, {canonical name: its name in
    the model's lazy state}). No tensor data is read: the state reads each tensor when it is looked up."""
    try:
        from .gguf_file import read_gguf
    except ImportError:  # pragma: no cover - the reader ships with the package
        raise ModelLoadError(f"{file} is a GGUF file, which this installation cannot read",
                             hint="install llmbuilder-cli with its GGUF support (the gguf package)") from None
    g = read_gguf(file, dtype=dtype)
    config = hf_dir.model_config(g.hf_config, str(file))
    names = hf_dir.validate_shapes(config, g.state_dict.shapes(), str(file))
    return g, config, names


def _load_gguf(file: Path, tokenizer_path: Any, dev: torch.device, dtype: torch.dtype,
               num_heads: int | None, threads: Any,
               quantize: str | None = None) -> tuple[Any, Tokenizer, ModelInfo, dict[str, Any]]:
    g, config, names = read_gguf_model(file, dtype)
    _check_num_heads(num_heads, config, file)
    if tokenizer_path not in (None, ""):
        tokenizer = load_tokenizer(tokenizer_path, extra_eos_ids=g.eos_ids)
    else:
        tokenizer = HFTokenizer.from_tokenizer(
            g.tokenizer, path=file, eos_ids=g.eos_ids, bos_id=g.bos_id, add_bos=g.add_bos,
            chat_template=g.chat_template, special_tokens=g.special_tokens,
        )
    _check_vocab(tokenizer, config)
    if threads is not None:
        torch.set_num_threads(choose_threads(threads, config.num_parameters))
    _check_fits(config, dtype, quantize, file)
    # Each tensor is read and dequantized when the builder takes it (fused in place, or quantized block by
    # block), so the peak stays near the built model's own weights.
    model = _build_hf_model(config, g.state_dict.renamed(names, device=dev), quantize)
    info = ModelInfo(path=file.resolve(), format="GGUF", architecture=config.model_type, config=config,
                     file_size=file.stat().st_size, stored_dtype=g.quantization, files=(file.resolve(),),
                     quantization=g.quantization)
    return model, tokenizer, info, {}


def load(
    model_path: str | Path,
    tokenizer_path: str | Path | None = None,
    *,
    device: str | None = "auto",
    num_heads: int | None = None,
    threads: int | str | None = None,
    dtype: str = "auto",
    quantize: str | None = None,
) -> LoadedModel:
    """Read a model and its tokenizer. Default tokenizer: llmbuilder's ``tokenizer/`` directory beside the
    model; a Hugging Face directory's own ``tokenizer.json``; the vocabulary inside a GGUF file.

    ``dtype``: ``auto`` (see `resolve_dtype`), ``float32``, ``bfloat16`` or ``float16``, for every format.
    ``threads``: None leaves torch's CPU thread count alone; a number sets it (process-wide); "auto"
    picks one from the model size and the free CPUs (`choose_threads`). ``num_heads`` is only for old llmbuilder checkpoints.
    ``quantize``: None, ``"int8"`` or ``"int4"``: weight-only quantization for Llama-family models
    (``engine/kernels.py``, ``engine/int4.py``);
    activations, norms and attention stay in ``dtype``.
    """
    t0 = time.perf_counter()
    if quantize not in QUANTIZATIONS:
        raise UsageError(f"unknown quantization {quantize!r}",
                         hint="use int8 or int4 (weight-only, Llama-family models) or leave it off")
    if threads == "auto":  # how busy the CPUs are is measured while the files are read
        threads = AutoThreads(cpu_load.CpuUse.now())
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    path = resolve_model_file(model_path)
    loader = {"huggingface": _load_hf, "gguf": _load_gguf, "llmbuilder": _load_llmbuilder}[model_format(path)]
    model, tokenizer, info, defaults = loader(path, tokenizer_path, dev, dt, num_heads, threads, quantize)
    return LoadedModel(model=model, tokenizer=tokenizer, info=info, device=dev, load_s=time.perf_counter() - t0,
                       generation_defaults=defaults)
