"""llmbuilder's own checkpoints (format reference §2): ``model.pt`` written by ``save_model`` (format A),
trainer checkpoints (format B) and bare ``state_dict`` files, read by `read_checkpoint` into a validated
`GPTConfig` and state dict for ``models/llmbuilder_gpt.py``.

Every file is read with ``torch.load(weights_only=True, map_location="cpu")`` (GPU-saved files load on
CPU-only machines). Variants llmbuilder cannot run either (unmerged LoRA weights, fine-tune checkpoints,
int8 exports, checkpoints without a head count) get a `ModelLoadError` that names what is missing. Before
torch reads a zip checkpoint, its members' declared sizes are checked (no zip bombs, and they must fit in
memory) and their CRC-32s verified; weights holding NaN or infinity are refused (``engine/limits.py``).
"""

from __future__ import annotations

import pickle
import re
import struct
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, Mapping

import torch

from ...errors import ModelLoadError, OutOfMemoryError
from ..limits import check_finite, check_memory, human_bytes
from ..models.llmbuilder_gpt import GPTConfig

__all__ = ["read_checkpoint", "head_is_tied"]

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
_MODEL_CONFIG_KEYS = {"num_heads", "n_head", "embedding_dim", "n_embd", "num_layers", "n_layer"}


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

