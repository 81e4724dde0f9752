"""A tiny Llama-architecture causal LM with a character-level tokenizer, built fully offline.

Tests and the CPU demo use it in place of a real model. It is saved with `save_pretrained`, so it is
loaded back through exactly the path a real model takes (`AutoModelForCausalLM.from_pretrained`):

    path = tiny_model_dir()                 # ~/.cache/fedcurate/tiny-llama-v1, built once
    model, tok = load_model_and_tokenizer(str(path))   # or simply load_model_and_tokenizer("tiny")

The tokenizer maps every printable ASCII character, "\\n" and "\\t" to its own id, so any ASCII text
round-trips exactly through encode/decode; other characters become `<unk>`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from fedcurate.common import io

logger = logging.getLogger(__name__)

TINY_NAME = "tiny-llama-v1"  # bump the suffix whenever the architecture or tokenizer changes
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
MAX_POSITIONS = 512


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer: one id per printable ASCII char plus newline and tab; BOS prepended."""
    specials = [PAD, BOS, EOS, UNK]
    chars = [chr(c) for c in range(32, 127)] + ["\n", "\t"]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every char
    backend.decoder = decoders.Fuse()  # join without inserting spaces
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        padding_side="right", clean_up_tokenization_spaces=False, model_max_length=MAX_POSITIONS,
    )


def build_tiny_llama(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised 2-layer, width-64 Llama (about 0.1 M parameters) for `tokenizer`."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Build the tiny model and tokenizer and save them to `out_dir` (replacing any earlier build).

    The files are written to a temporary sibling directory that is renamed into place, so `out_dir`
    is either absent or complete, never half-written.
    """
    out_dir = Path(out_dir)
    io.write_dir(out_dir, lambda tmp: _fill(tmp, seed))
    logger.info("built tiny model (seed %d) at %s", seed, out_dir)
    return out_dir


def tiny_model_dir(cache_root: Path | None = None) -> Path:
    """The cached tiny model directory, built on first use.

    `cache_root` defaults to $FEDCURATE_CACHE, else ~/.cache/fedcurate. Safe when several processes
    build it at once (e.g. simulated sites): the first complete build to be renamed into place wins.
    """
    root = Path(cache_root) if cache_root else Path(
        os.environ.get("FEDCURATE_CACHE") or Path.home() / ".cache" / "fedcurate"
    )
    out_dir = root / TINY_NAME
    if (out_dir / "config.json").exists():
        return out_dir
    tmp = _save_to_temp(out_dir, seed=0)
    try:
        os.replace(tmp, out_dir)
        logger.info("built tiny model at %s", out_dir)
    except OSError:
        if not (out_dir / "config.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    return out_dir


def _save_to_temp(out_dir: Path, seed: int) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        _fill(tmp, seed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _fill(directory: Path, seed: int) -> None:
    tokenizer = build_tiny_tokenizer()
    build_tiny_llama(tokenizer, seed).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    _make_readable(directory)


def _make_readable(directory: Path) -> None:
    """mkdtemp (and some writers) create owner-only files; a shared cache must be readable like any file."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        path.chmod(0o666 & ~umask)
