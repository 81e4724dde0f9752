"""`fedcurate rate`: rate a dataset with the configured LLM raters and write the results.

    fedcurate rate --config configs/ds2-style.toml --input data.jsonl --out runs/rate1

Outputs (all written atomically) under the output directory:
    ratings.parquet  one row per sample: id, one column per rater, `<rater>_reason` ("" when valid),
                     `rating` (the raters combined by rating.combine) and `rating_reason`
    stats.json       per rater: rated, failed, failures by reason, reused from cache, seconds
    rejects.jsonl    input rows rejected by the loader, with file, line, field and reason
    config.toml      the resolved configuration
    cache/           per-rater caches (unless rating.cache-dir is set): a re-run resumes, paying nothing twice
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fedcurate.common import io
from fedcurate.common.config import Config, to_toml
from fedcurate.common.data.loaders import load_from_config, write_rejects
from fedcurate.common.rating.raters import rate_dataset

logger = logging.getLogger(__name__)


def rating_cache_dir(cfg: Config, out_dir: Path | str) -> Path:
    """rating.cache-dir, or `<out_dir>/cache` when it is empty."""
    return Path(cfg.rating.cache_dir) if cfg.rating.cache_dir else Path(out_dir) / "cache"


def run_rate(cfg: Config, input_path: Path | str | None, out_dir: Path | str) -> dict[str, Any]:
    """Load, rate with every rater in cfg.rating, write the outputs; returns the stats in `stats.json`."""
    if not cfg.rating.raters:
        raise ValueError("rating.raters is empty: add at least one [[rating.raters]] table to the config")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    io.write_text(out / "config.toml", to_toml(cfg))
    t0 = time.perf_counter()
    loaded = load_from_config(cfg.data, input_path)
    write_rejects(out / "rejects.jsonl", loaded.rejects)
    samples = loaded.samples
    logger.info("loaded %d samples (%d rejected)", len(samples), len(loaded.rejects))
    load_s = time.perf_counter() - t0
    result = rate_dataset(samples, cfg.rating, rating_cache_dir(cfg, out))
    table = pa.table({"id": [s.id for s in samples], **result.columns})
    io.write_with(out / "ratings.parquet", lambda tmp: pq.write_table(table, tmp))
    combined = result.columns["rating_reason"]
    stats = {
        "num_samples": len(samples),
        "num_rejected_rows": len(loaded.rejects),
        "raters": result.stats,
        "combined": {"method": cfg.rating.combine, "rated": sum(not r for r in combined),
                     "failed": sum(bool(r) for r in combined)},
        "timings_s": {"load": round(load_s, 3), **{f"rate_{n}": s["seconds"] for n, s in result.stats.items()}},
    }
    io.write_json(out / "stats.json", stats)
    for name, s in result.stats.items():
        logger.info("rater %s: %d rated, %d failed %s", name, s["rated"], s["failed"], s["failures_by_reason"])
    return stats
