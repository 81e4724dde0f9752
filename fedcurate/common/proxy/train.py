"""`fedcurate proxy train`: fit the proxy head on a sample's LLM ratings and report it on a held-out split.

    fedcurate proxy train --config configs/ds2-style.toml --input sample.jsonl --ratings runs/rate1 --out runs/proxy

Inputs: the rated samples (any loader format) and a ratings table with `id` and a rating column
(`ratings.parquet` from `fedcurate rate`, or its folder; also .jsonl/.csv). Samples are joined to
ratings by id; a NaN or missing rating is skipped and counted. The encoder is `curation.*`.

Outputs (atomically) under the output directory:
    head/weights.npz, head/head.json   the head (see `head.py`), read by `fedcurate proxy score`
    proxy_train.json                   counts, settings, and train/validation metrics: MSE (and the
                                       constant predictor's), F1/precision/recall at int_score >=
                                       threshold, the 6 x 6 confusion matrix of rounded classes
    rejects.jsonl, config.toml         loader rejects; the resolved configuration
    cache/embeddings/                  encoder cache: a re-run does not embed again
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from fedcurate.common import io
from fedcurate.common.config import Config, to_toml
from fedcurate.common.curation.embeddings import embed_texts, sample_text
from fedcurate.common.data.loaders import load_from_config, write_rejects
from fedcurate.common.data.sample import Sample
from fedcurate.common.proxy.head import HeadMeta, evaluate, predict, save_head, train_head

logger = logging.getLogger(__name__)


def read_ratings(path: str | Path, column: str = "rating") -> dict[str, float]:
    """id -> rating (NaN kept) from a Parquet/JSONL/CSV table, or a folder holding `ratings.parquet`."""
    path = Path(path)
    if path.is_dir():
        path = path / "ratings.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: ratings file not found (run `fedcurate rate` first)")
    table = _read_table(path)
    missing = [c for c in ("id", column) if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; columns are {table.column_names} "
                         "(choose the rating column with --column)")
    ids = [str(v) for v in table.column("id").to_pylist()]
    values = [math.nan if v is None else float(v) for v in table.column(column).to_pylist()]
    ratings = dict(zip(ids, values, strict=True))
    if len(ratings) != len(ids):
        raise ValueError(f"{path}: {len(ids) - len(ratings)} duplicate id(s) in the ratings table")
    return ratings


def _read_table(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if suffix in (".jsonl", ".ndjson"):
        import pyarrow.json as pj

        return pj.read_json(path)
    if suffix == ".csv":
        import pyarrow.csv as pc

        return pc.read_csv(path, convert_options=pc.ConvertOptions(column_types={"id": pa.string()}))
    raise ValueError(f"{path}: ratings must be .parquet, .jsonl or .csv (or a `fedcurate rate` folder)")


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded (train, validation) split of range(n); validation gets round(n * fraction), at least 1 if n > 1."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction = {val_fraction}: must be in [0, 1)")
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1 if val_fraction > 0 else 0, round(n * val_fraction))) if n > 1 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def join_ratings(samples: Sequence[Sample], ratings: dict[str, float]) -> tuple[list[tuple[Sample, float]], dict[str, int]]:
    """(sample, rating) for samples with a valid rating, in sample order, and what was skipped."""
    rated = [(s, ratings[s.id]) for s in samples if s.id in ratings and not math.isnan(ratings[s.id])]
    in_data = {s.id for s in samples}
    counts = {"samples": len(samples), "used": len(rated),
              "nan_rating": sum(1 for s in samples if math.isnan(ratings.get(s.id, 0.0))),
              "no_rating_row": sum(1 for s in samples if s.id not in ratings),
              "ratings_without_sample": sum(1 for i in ratings if i not in in_data)}
    return rated, counts


def _metrics(head: torch.nn.Linear, x: np.ndarray, y: np.ndarray, rows: np.ndarray, fit: np.ndarray,
             threshold: float) -> dict[str, Any] | None:
    """`evaluate` on `rows`, plus the MSE of the constant predictor mean(y[fit])."""
    if not len(rows):
        return None
    out = evaluate(predict(head, x[rows]), y[rows], threshold)
    out["constant_mse"] = float(np.mean((y[rows] - float(y[fit].mean())) ** 2))
    return out


def proxy_train(cfg: Config, input_path: str | Path | None, ratings_path: str | Path, out_dir: str | Path, *,
                column: str = "rating", threshold: float = 3.0, val_fraction: float = 0.1,
                monitor_fraction: float = 0.1, epochs: int = 30, lr: float = 0.1, batch_size: int = 64,
                seed: int = 0) -> dict[str, Any]:
    """Train the head on `input_path`'s samples rated in `ratings_path`; returns what `proxy_train.json` holds.

    `val_fraction` of the rated samples is held out for the reported metrics; `monitor_fraction` of the
    rest picks the epoch kept (lowest MSE, the constant predictor included); the head trains on the remainder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    io.write_text(out / "config.toml", to_toml(cfg))
    t0 = time.perf_counter()
    loaded = load_from_config(cfg.data, input_path)
    write_rejects(out / "rejects.jsonl", loaded.rejects)
    rated, counts = join_ratings(loaded.samples, read_ratings(ratings_path, column))
    counts["rejected_rows"] = len(loaded.rejects)
    logger.info("proxy train: %s", counts)
    if len(rated) < 2:
        raise ValueError(f"proxy train: {len(rated)} sample(s) with a valid rating; need at least 2 ({counts})")
    x = embed_texts([sample_text(s) for s, _ in rated], cfg.curation, out / "cache" / "embeddings")
    y = np.array([r for _, r in rated], dtype=np.float32)
    t_embed = time.perf_counter()
    train, val = split_indices(len(y), val_fraction, seed)
    fit, mon = (train[i] for i in split_indices(len(train), monitor_fraction, seed + 1))
    result = train_head(x[fit], y[fit], epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                        monitor=(x[mon], y[mon]) if len(mon) else None)
    head = result.head
    t_train = time.perf_counter()
    meta = HeadMeta(encoder=cfg.curation.embedding_model, pooling=cfg.curation.pooling,
                    max_tokens=cfg.curation.max_tokens, dim=int(x.shape[1]), threshold=threshold,
                    rating_column=column)
    save_head(out / "head", head, meta)
    report = {"train": _metrics(head, x, y, fit, fit, threshold), "validation": _metrics(head, x, y, val, fit, threshold)}
    stats = {"counts": counts, "head": str(out / "head"), "meta": dataclasses.asdict(meta),
             "settings": {"column": column, "threshold": threshold, "val_fraction": val_fraction,
                          "monitor_fraction": monitor_fraction, "epochs": epochs, "lr": lr,
                          "batch_size": batch_size, "seed": seed},
             "split": {"fit": len(fit), "monitor": len(mon), "validation": len(val)},
             "training": {"best_epoch": result.best_epoch, "train_loss": result.train_loss,
                          "monitor_mse": result.monitor_mse},
             "metrics": report,
             "timings_s": {"load_embed": round(t_embed - t0, 3), "train": round(t_train - t_embed, 3)}}
    io.write_json(out / "proxy_train.json", stats)
    if report["validation"]:
        v = report["validation"]
        logger.info("proxy head: validation MSE %.3f (constant %.3f), F1@%g %.3f on %d samples",
                    v["mse"], v["constant_mse"], threshold, v["f1"], v["n"])
    return stats
