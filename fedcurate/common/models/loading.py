"""Load any Hugging Face causal LM and its tokenizer, by hub id or local path, and share it in-process.

    model, tok = load_model_and_tokenizer("Qwen/Qwen2.5-0.5B", dtype="bfloat16")  # hub id (cached)
    model, tok = load_model_and_tokenizer("/models/llama-3-8b")                  # local directory
    model, tok = load_model_and_tokenizer("tiny")                                 # offline test model
    model, tok = get_model("tiny", "float32", "auto")   # loaded once per process, shared by scorers
    model, tok = load_model_and_tokenizer("runs/x/dynamics/checkpoint-65")       # a peft LoRA adapter directory

The model is returned in eval mode on the resolved device; the tokenizer pads on the right and
falls back to EOS as its pad token. A peft adapter directory (adapter_config.json, no config.json) is
loaded on its base model (`base_model_name_or_path`) and merged into it; its tokenizer is the one saved
beside the adapter, else the base model's. Nothing is ever downloaded when HF_HUB_OFFLINE is set: a hub id
missing from the local cache gives an error that says so.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import torch
import transformers
from huggingface_hub import constants as hf_constants
from packaging.version import Version
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from fedcurate.common.models.tiny import tiny_model_dir

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_CACHE: dict[tuple[str, str, str], tuple[PreTrainedModel, PreTrainedTokenizerBase]] = {}
# transformers renamed `torch_dtype` to `dtype` in 4.56
_DTYPE_KWARG = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


class ModelLoadError(OSError):
    """A model or tokenizer could not be loaded; the message says what was tried."""


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cuda' without a GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"model.device = {device!r}, but no CUDA device is visible; use 'cpu' or 'auto'")
    if device != "cpu" and not device.startswith("cuda"):
        raise ModelLoadError(f"model.device = {device!r}: allowed values are 'auto', 'cpu', 'cuda'")
    return device


def load_model_and_tokenizer(
    name_or_path: str, *, dtype: str = "float32", device: str = "auto"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a hub id, a local directory, or 'tiny'."""
    if dtype not in DTYPES:
        raise ModelLoadError(f"model.dtype = {dtype!r}: allowed values are {', '.join(map(repr, DTYPES))}")
    target = resolve_device(device)
    source = str(tiny_model_dir()) if name_or_path == "tiny" else _check_source(name_or_path)
    kwargs: dict[str, Any] = {_DTYPE_KWARG: DTYPES[dtype]}
    try:
        if _is_adapter_dir(source):
            model, tokenizer = _load_adapter(source, kwargs)
        else:
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:  # transformers raises OSError for missing files, ValueError for bad configs
        raise ModelLoadError(_explain_failure(name_or_path, source, err)) from err
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"tokenizer of {name_or_path!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise ModelLoadError(f"tokenizer of {name_or_path!r} has no eos token; responses need one")
    tokenizer.padding_side = "right"
    model.to(target)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("loaded %s (%.1f M parameters, %s, %s)", name_or_path, n_params / 1e6, dtype, target)
    return model, tokenizer


def get_model(
    name_or_path: str, dtype: str = "float32", device: str = "auto"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """`load_model_and_tokenizer`, loaded once per process, so several scorers share one model."""
    key = (name_or_path, dtype, resolve_device(device))
    if key not in _CACHE:
        _CACHE[key] = load_model_and_tokenizer(name_or_path, dtype=dtype, device=key[2])
    return _CACHE[key]


def clear_model_cache() -> None:
    """Drop every model held by `get_model` (frees memory between phases or tests)."""
    _CACHE.clear()


def check_adapter_dir(adapter: str | Path) -> None:
    """FileNotFoundError unless `adapter` is a peft adapter directory (call it before a long model load)."""
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise FileNotFoundError(errno.ENOENT, "not a peft adapter directory (no adapter_config.json)", str(adapter))


def apply_adapter(model: PreTrainedModel, adapter: str | Path, *, merge: bool = True) -> PreTrainedModel:
    """`model` with the peft adapter in `adapter` applied (merged into the weights unless `merge` is False)."""
    from peft import PeftModel

    check_adapter_dir(adapter)
    with_adapter = PeftModel.from_pretrained(model, str(adapter))
    return with_adapter.merge_and_unload() if merge else with_adapter


def _is_adapter_dir(source: str) -> bool:
    path = Path(source)
    return (path / "adapter_config.json").exists() and not (path / "config.json").exists()


def _load_adapter(source: str, kwargs: dict[str, Any]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A peft adapter merged into its base model; the tokenizer saved with the adapter, else the base's."""
    from peft import PeftConfig

    base_name = PeftConfig.from_pretrained(source).base_model_name_or_path
    if not base_name:
        raise ValueError(f"{source}/adapter_config.json names no base_model_name_or_path")
    base = str(tiny_model_dir()) if base_name == "tiny" else _check_source(base_name)
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    model = apply_adapter(model, source)
    has_tokenizer = (Path(source) / "tokenizer_config.json").exists()
    return model, AutoTokenizer.from_pretrained(source if has_tokenizer else base)


def _check_source(name_or_path: str) -> str:
    """A local directory as an absolute path, or the hub id unchanged; a missing local path is an error."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model {name_or_path!r}: {path} is a file; give the model's directory")
        return str(path.resolve())
    looks_local = name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1 or "\\" in name_or_path
    if looks_local:
        raise ModelLoadError(f"model {name_or_path!r}: local directory {path.resolve()} does not exist")
    return name_or_path


def _explain_failure(name_or_path: str, source: str, err: Exception) -> str:
    offline = bool(hf_constants.HF_HUB_OFFLINE)  # read at call time: what the hub client obeys
    if Path(source).is_dir():
        tried = f"tried local directory {source!r} (is it a saved causal LM with its tokenizer?)"
    else:
        tried = f"no local directory {source!r} exists, so it was tried as a Hugging Face hub id"
    hint = (" HF_HUB_OFFLINE is set, so only the local Hugging Face cache was searched; download the model "
            "beforehand (e.g. `huggingface-cli download ID`) or pass a local directory." if offline else "")
    return f"could not load model {name_or_path!r}: {tried}.{hint}\n  cause: {err}"
