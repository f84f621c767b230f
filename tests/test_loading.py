"""Model loading: every llmbuilder file layout that can run, and a clear error for every one that can't."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import BEST_CKPT, GREEDY_CASES, MODEL_PT, TOKENIZER_DIR
from llmbuilder_cli import GenerationConfig, generate, load_model
from llmbuilder_cli.engine.loading import resolve_device
from llmbuilder_cli.errors import EXIT_LOAD, ModelLoadError, TokenizerError, UsageError
from reference_gpt import random_llmbuilder_checkpoint

CASE = GREEDY_CASES[0]
GREEDY = GenerationConfig(do_sample=False, max_new_tokens=40)


def _ids(model) -> list[int]:
    return generate(model, prompt=CASE["prompt"], config=GREEDY).token_ids


def _fixture_ck() -> dict:
    return torch.load(MODEL_PT, map_location="cpu", weights_only=True)


def test_model_pt_metadata(tiny_loaded):
    info = tiny_loaded.info
    assert info.format == "llmbuilder model (save_model)"
    assert (info.config.vocab_size, info.config.n_layer, info.config.n_head, info.config.n_embd,
            info.config.block_size) == (512, 2, 4, 64, 128)
    assert info.num_parameters == 140672
    assert len(info.sha256()) == 64
    assert tiny_loaded.tokenizer.vocab_size == 512


def test_trainer_checkpoint_format():
    m = load_model(BEST_CKPT, TOKENIZER_DIR, device="cpu")
    assert m.info.format == "llmbuilder trainer checkpoint"
    assert _ids(m) == CASE["new_ids"]


def test_run_directory_and_default_tokenizer(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(MODEL_PT, run / "model.pt")
    shutil.copy(BEST_CKPT, run / "checkpoints" / "best_checkpoint.pt")
    shutil.copytree(TOKENIZER_DIR, run / "tokenizer")
    m = load_model(run)  # tokenizer defaults to run/tokenizer
    assert m.info.path.name == "model.pt" and _ids(m) == CASE["new_ids"]
    m = load_model(run / "checkpoints" / "best_checkpoint.pt")  # tokenizer found beside the run dir
    assert _ids(m) == CASE["new_ids"]
    (run / "model.pt").unlink()
    assert load_model(run).info.path.name == "best_checkpoint.pt"


def test_no_tokenizer_anywhere_is_a_clear_error(tmp_path):
    shutil.copy(MODEL_PT, tmp_path / "model.pt")
    with pytest.raises(TokenizerError, match="no tokenizer given") as e:
        load_model(tmp_path / "model.pt")
    assert e.value.exit_code == EXIT_LOAD and "--tokenizer" in e.value.hint


def test_config_and_state_dict_fallbacks(tmp_path):
    ck = _fixture_ck()
    alt = {"state_dict": ck["model_state_dict"], "config": ck["model_config"]}
    torch.save(alt, tmp_path / "alt.pt")
    assert _ids(load_model(tmp_path / "alt.pt", TOKENIZER_DIR)) == CASE["new_ids"]


def test_bare_state_dict_and_wrapper_prefixes(tmp_path):
    sd = {"module." + k: v for k, v in _fixture_ck()["model_state_dict"].items()}
    torch.save(sd, tmp_path / "bare.pt")
    with pytest.raises(ModelLoadError, match="number of attention heads is unknown") as e:
        load_model(tmp_path / "bare.pt", TOKENIZER_DIR)
    assert "--num-heads" in e.value.hint
    assert _ids(load_model(tmp_path / "bare.pt", TOKENIZER_DIR, num_heads=4)) == CASE["new_ids"]
    with pytest.raises(ModelLoadError, match="does not divide"):
        load_model(tmp_path / "bare.pt", TOKENIZER_DIR, num_heads=5)


def test_old_trainer_checkpoint_without_model_config(tmp_path):
    ck = torch.load(BEST_CKPT, map_location="cpu", weights_only=True)
    del ck["model_config"]  # v0.2.1 layout: config is the TrainingConfig
    torch.save(ck, tmp_path / "old.pt")
    with pytest.raises(ModelLoadError, match="no model configuration"):
        load_model(tmp_path / "old.pt", TOKENIZER_DIR)
    assert _ids(load_model(tmp_path / "old.pt", TOKENIZER_DIR, num_heads=4)) == CASE["new_ids"]


def test_float16_export_is_upcast(tmp_path):
    ck = _fixture_ck()
    ck["model_state_dict"] = {k: v.half() for k, v in ck["model_state_dict"].items()}
    ck["quantization_method"] = "fp16"
    torch.save(ck, tmp_path / "fp16.pt")
    m = load_model(tmp_path / "fp16.pt", TOKENIZER_DIR)
    assert m.info.stored_dtype == "float16" and m.model.dtype == torch.float32
    assert len(_ids(m)) == 40


def test_gpu_saved_checkpoint_loads_on_cpu(tmp_path):
    """Storages tagged 'cuda:0' in the file (as a GPU-saved checkpoint has) load via map_location."""
    tagging = {"on": False}

    def tagger(obj):
        return "cuda:0" if tagging["on"] else None

    def deserializer(obj, location):
        return None

    torch.serialization.register_package(1, tagger, deserializer)
    try:
        tagging["on"] = True
        torch.save(_fixture_ck(), tmp_path / "gpu.pt")
    finally:
        tagging["on"] = False
    raw = (tmp_path / "gpu.pt").read_bytes()
    assert b"cuda:0" in raw
    assert _ids(load_model(tmp_path / "gpu.pt", TOKENIZER_DIR, device="cpu")) == CASE["new_ids"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda ck: ck["model_state_dict"].update(
            {"blocks.0.attn.qkv_proj.lora_A.weight": torch.zeros(4, 64),
             "blocks.0.attn.qkv_proj.lora_B.weight": torch.zeros(192, 4)}), "unmerged LoRA"),
        (lambda ck: ck.update({"lora_layers": ["blocks.0.attn.qkv_proj"]}), "fine-tuning checkpoint"),
        (lambda ck: ck["model_state_dict"].update(
            {"blocks.0.mlp.fc1._packed_params._packed_params": torch.zeros(1)}), "int8"),
        (lambda ck: ck["model_state_dict"].pop("blocks.1.mlp.fc2.bias"), "missing blocks.1.mlp.fc2.bias"),
        (lambda ck: ck["model_state_dict"].update({"blocks.0.extra.weight": torch.zeros(1)}),
         "unexpected blocks.0.extra.weight"),
        (lambda ck: ck["model_config"].update({"num_layers": 3}), "disagrees with the weights"),
        (lambda ck: ck["model_state_dict"].update({"ln_f.bias": torch.zeros(65)}), "'ln_f.bias' has shape"),
        (lambda ck: ck.pop("model_state_dict"), "holds no model weights"),
        (lambda ck: ck["model_state_dict"].update({"ln_f.weight": torch.zeros(64, dtype=torch.int8)}),
         "cannot be run"),
    ],
    ids=["lora", "finetune", "int8", "missing-key", "unexpected-key", "config-mismatch", "bad-shape",
         "no-weights", "int-weights"],
)
def test_unsupported_variants_are_named(tmp_path, mutate, message):
    ck = _fixture_ck()
    ck["model_state_dict"] = dict(ck["model_state_dict"])
    mutate(ck)
    torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError, match=message) as e:
        load_model(tmp_path / "bad.pt", TOKENIZER_DIR)
    assert e.value.exit_code == EXIT_LOAD
    assert "\n" not in e.value.one_line()


def test_unreadable_files(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "junk.pt").write_bytes(b"\x80\x04junk" * 100)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    for name, message in [("empty.pt", r"is empty \(0 bytes\)"),
                          ("junk.pt", "not a readable PyTorch checkpoint"),
                          ("list.pt", "holds a list")]:
        with pytest.raises(ModelLoadError, match=message):
            load_model(tmp_path / name, TOKENIZER_DIR)
    with pytest.raises(ModelLoadError, match="model not found"):
        load_model(tmp_path / "missing.pt", TOKENIZER_DIR)
    with pytest.raises(ModelLoadError, match="no model.pt"):
        load_model(tmp_path, TOKENIZER_DIR)  # a directory with several .pt files but no model.pt


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"model_state_dict": {"x": Evil()}}, tmp_path / "evil.pt")
    with pytest.raises(ModelLoadError, match="weights-only"):
        load_model(tmp_path / "evil.pt", TOKENIZER_DIR)


def test_tokenizer_larger_than_the_embedding(tmp_path):
    random_llmbuilder_checkpoint(tmp_path / "small.pt", vocab=100, block_size=16)
    with pytest.raises(TokenizerError, match="512 tokens but the model's embedding has only 100 rows"):
        load_model(tmp_path / "small.pt", TOKENIZER_DIR)


def test_embedding_larger_than_the_tokenizer_never_emits_unknown_ids(tmp_path):
    random_llmbuilder_checkpoint(tmp_path / "big.pt", vocab=600, block_size=32, n_embd=32, seed=1, std=1.0)
    m = load_model(tmp_path / "big.pt", TOKENIZER_DIR)
    for seed in range(5):
        r = generate(m, prompt="once upon a time", config=GenerationConfig(max_new_tokens=30, top_k=None,
                                                                            top_p=None, temperature=2.0, seed=seed))
        assert r.token_ids and max(r.token_ids) < 512


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda")


def test_threads_auto_explicit_and_invalid():
    before = torch.get_num_threads()
    try:
        load_model(MODEL_PT, TOKENIZER_DIR, threads="auto")
        assert torch.get_num_threads() == 1  # a 140k-parameter model runs on one thread
        load_model(MODEL_PT, TOKENIZER_DIR, threads=2)
        assert torch.get_num_threads() == 2
        for bad in (0, -1, "many", True):
            with pytest.raises(UsageError, match="threads must be"):
                load_model(MODEL_PT, TOKENIZER_DIR, threads=bad)
    finally:
        torch.set_num_threads(before)


def test_check_finite_finds_a_bad_value_in_any_chunk_of_a_large_weight():
    """Weights are checked a chunk at a time (no temporaries the size of the weight): a NaN or infinity
    anywhere, in the first, a middle or the last chunk, or in a transposed view, is still refused."""
    import torch

    from llmbuilder_cli.engine import limits
    from llmbuilder_cli.errors import ModelLoadError

    w = torch.zeros(3 * limits._FINITE_CHUNK // 17 + 2, 17)  # three chunks and a part of a fourth
    n = w.numel()
    limits.check_finite(w, "w", "f.gguf")  # all finite: accepted
    for index, value, word in [(0, float("nan"), "NaN"), (limits._FINITE_CHUNK + 5, float("inf"), "infinite"),
                               (n - 1, float("-inf"), "infinite")]:
        bad = w.clone()
        bad.view(-1)[index] = value
        with pytest.raises(ModelLoadError, match=f"weight 'w' holds {word} values"):
            limits.check_finite(bad, "w", "f.gguf")
        with pytest.raises(ModelLoadError, match=word):
            limits.check_finite(bad.t(), "w", "f.gguf")
