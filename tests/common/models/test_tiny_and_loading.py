"""The tiny offline model and the loading path real models take (AutoModel/AutoTokenizer.from_pretrained)."""

from __future__ import annotations

import os
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fedcurate.common.models.loading import (
    ModelLoadError,
    clear_model_cache,
    get_model,
    load_model_and_tokenizer,
    resolve_device,
)
from fedcurate.common.models.tiny import TINY_NAME, build_tiny_model, build_tiny_tokenizer, tiny_model_dir


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.mark.parametrize("text", [
    "Hello, world!", "  two  spaces  ", "line one\nline two\n\n", "\ttab\tand ~`|{}[]\\ symbols",
    "### Response:\n", "",
])
def test_tokenizer_round_trips_ascii_exactly_one_id_per_char(text: str) -> None:
    # Prepare
    tok = build_tiny_tokenizer()
    # Execute
    ids = tok(text, add_special_tokens=False)["input_ids"]
    # Assert
    assert len(ids) == len(text)
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text


def test_tokenizer_prepends_bos_and_maps_non_ascii_to_unk() -> None:
    # Prepare
    tok = build_tiny_tokenizer()
    # Execute
    ids = tok("aé")["input_ids"]
    # Assert
    assert ids[0] == tok.bos_token_id
    assert ids[2] == tok.unk_token_id
    assert tok.padding_side == "right"
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}) == 4


def test_saved_tiny_model_loads_through_auto_classes(tiny_path: Path) -> None:
    # Prepare
    text = "Reverse: abc\ncba"
    # Execute
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    tok = AutoTokenizer.from_pretrained(tiny_path)
    ids = tok(text, return_tensors="pt")["input_ids"]
    logits = model(input_ids=ids).logits
    # Assert
    assert model.config.model_type == "llama"
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (64, 2)
    assert model.config.vocab_size == len(tok)
    assert model.config.eos_token_id == tok.eos_token_id
    assert logits.shape == (1, len(text) + 1, len(tok))
    assert tok.decode(ids[0], skip_special_tokens=True) == text


def test_build_is_seeded_and_leaves_no_temporary_directories(tmp_path: Path) -> None:
    # Prepare
    rng_before = torch.get_rng_state()
    # Execute
    a = build_tiny_model(tmp_path / "a", seed=0)
    b = build_tiny_model(tmp_path / "b", seed=0)
    c = build_tiny_model(tmp_path / "c", seed=1)
    weights = [AutoModelForCausalLM.from_pretrained(p).model.embed_tokens.weight for p in (a, b, c)]
    # Assert
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is untouched


def test_rebuild_replaces_an_existing_build(tmp_path: Path) -> None:
    # Prepare
    out = build_tiny_model(tmp_path / "tiny", seed=0)
    (out / "stale.txt").write_text("old")
    # Execute
    build_tiny_model(out, seed=1)
    # Assert
    assert not (out / "stale.txt").exists()
    assert (out / "config.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


def test_tiny_model_dir_builds_once_under_the_cache_root(tmp_path: Path) -> None:
    # Prepare
    first = tiny_model_dir(tmp_path)
    stamp = (first / "config.json").stat().st_mtime_ns
    # Execute
    second = tiny_model_dir(tmp_path)
    # Assert
    assert first == second == tmp_path / TINY_NAME
    assert (second / "config.json").stat().st_mtime_ns == stamp


def test_tiny_name_resolves_through_fedcurate_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    monkeypatch.setenv("FEDCURATE_CACHE", str(tmp_path))
    # Execute
    model, tok = load_model_and_tokenizer("tiny", device="cpu")
    # Assert
    assert (tmp_path / TINY_NAME / "config.json").exists()
    assert model.config.vocab_size == len(tok)


def test_load_returns_eval_model_with_right_padding_and_requested_dtype(tiny_path: Path) -> None:
    # Execute
    model, tok = load_model_and_tokenizer(str(tiny_path), dtype="bfloat16", device="cpu")
    # Assert
    assert not model.training
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert tok.padding_side == "right"
    assert tok.pad_token == "<pad>"


def test_missing_pad_token_falls_back_to_eos(tiny_path: Path, tmp_path: Path) -> None:
    # Prepare
    AutoModelForCausalLM.from_pretrained(tiny_path).save_pretrained(tmp_path)
    tok = build_tiny_tokenizer()
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    # Execute
    _, loaded = load_model_and_tokenizer(str(tmp_path), device="cpu")
    # Assert
    assert loaded.pad_token == loaded.eos_token == "</s>"


@pytest.mark.parametrize("name", ["./no/such/model", "/definitely/not/here", "~/nope-fedcurate-model"])
def test_missing_local_path_names_the_path(name: str) -> None:
    # Execute
    with pytest.raises(ModelLoadError) as err:
        load_model_and_tokenizer(name, device="cpu")
    # Assert
    assert "does not exist" in str(err.value)
    assert Path(name).name in str(err.value)


def test_directory_without_a_model_says_what_was_tried(tmp_path: Path) -> None:
    # Execute
    with pytest.raises(ModelLoadError) as err:
        load_model_and_tokenizer(str(tmp_path), device="cpu")
    # Assert
    assert f"tried local directory {str(tmp_path.resolve())!r}" in str(err.value)


def test_unknown_hub_id_offline_says_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never touch the network
    # Execute
    with pytest.raises(ModelLoadError) as err:
        load_model_and_tokenizer("fedcurate-test/no-such-model", device="cpu")
    # Assert
    message = str(err.value)
    assert "'fedcurate-test/no-such-model'" in message
    assert "hub id" in message
    assert "HF_HUB_OFFLINE is set" in message


def test_bad_dtype_is_rejected_with_allowed_values() -> None:
    # Execute
    with pytest.raises(ModelLoadError, match="allowed values are 'float32', 'bfloat16', 'float16'"):
        load_model_and_tokenizer("tiny", dtype="float64")


def test_resolve_device() -> None:
    # Execute
    auto = resolve_device("auto")
    # Assert
    assert resolve_device("cpu") == "cpu"
    assert auto == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ModelLoadError, match="allowed values"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_resolve_device_cuda_without_gpu_is_an_error() -> None:
    # Execute / Assert
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        resolve_device("cuda")


def test_get_model_loads_once_per_key(tiny_path: Path) -> None:
    # Prepare
    clear_model_cache()
    # Execute
    first = get_model(str(tiny_path), "float32", "cpu")
    second = get_model(str(tiny_path), "float32", "auto" if not torch.cuda.is_available() else "cpu")
    other = get_model(str(tiny_path), "bfloat16", "cpu")
    clear_model_cache()
    after_clear = get_model(str(tiny_path), "float32", "cpu")
    # Assert
    assert first[0] is second[0] and first[1] is second[1]
    assert other[0] is not first[0]
    assert after_clear[0] is not first[0]
    clear_model_cache()


def test_built_files_are_readable_by_others_as_umask_allows(tmp_path: Path) -> None:
    # Prepare
    previous = os.umask(0o022)
    # Execute
    try:
        out = build_tiny_model(tmp_path / "tiny")
    finally:
        os.umask(previous)
    # Assert
    assert out.stat().st_mode & 0o005 == 0o005  # mkdtemp alone would leave it owner-only
    assert all(p.stat().st_mode & 0o004 for p in out.iterdir())
