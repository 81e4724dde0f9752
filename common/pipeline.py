"""Centralized pipeline: load, score with every configured scorer, select, write the run directory.

    fedcurate select --config configs/centralized.toml --input data.jsonl --out runs/c1

Outputs (all written atomically) under the run directory:
    scores.parquet   one row per sample: id, one column per scorer (+ `<scorer>_reason` for failures),
                     `selected`, `drop_reason`, and `clean` when the data carries ground truth
    selected.jsonl   the kept samples (Sample fields plus `score`)
    rejects.jsonl    input rows rejected by the loader, with file, line, field and reason
    stats.json       kept / dropped / dropped by reason, timings, and precision per scorer on labelled data
    config.toml      the resolved configuration
    scores/          per-scorer caches: a re-run with the same data and settings skips finished scorers
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from fedcurate.common import io
from fedcurate.common.config import Config, primary_scorer, to_dict, to_toml
from fedcurate.common.data.loaders import load_from_config, write_rejects
from fedcurate.common.data.sample import Sample
from fedcurate.common.scorers import SCORERS, failure_reason
from fedcurate.common.selection import Selection, orient, select

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreColumn:
    """One scorer's output over a whole dataset."""

    name: str
    higher_is_better: bool
    values: list[float]
    reasons: list[str]
    seconds: float


def run_select(cfg: Config, out_dir: Path, input_path: Path | None = None) -> dict[str, Any]:
    """Run the centralized pipeline; returns the stats written to `stats.json`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    io.write_text(out_dir / "config.toml", to_toml(cfg))
    t0 = time.perf_counter()
    loaded = load_from_config(cfg.data, input_path)
    write_rejects(out_dir / "rejects.jsonl", loaded.rejects)
    samples = loaded.samples
    log.info("loaded %d samples (%d rejected)", len(samples), len(loaded.rejects))
    load_s = time.perf_counter() - t0
    cfg = prepare_dynamics(cfg, samples, out_dir)
    columns = [score_dataset(name, samples, cfg, out_dir / "scores") for name in cfg.scoring.scorers]
    primary = next(c for c in columns if c.name == primary_scorer(cfg))
    selection = select(orient(primary.values, primary.higher_is_better), cfg.selection, primary.reasons)
    _write_scores(out_dir / "scores.parquet", samples, columns, selection)
    io.write_jsonl(out_dir / "selected.jsonl",
                   ({**s.to_dict(), "score": primary.values[i]} for i, s in enumerate(samples) if selection.keep[i]))
    stats = _stats(samples, loaded.rejects, columns, primary, selection, cfg, load_s)
    io.write_json(out_dir / "stats.json", stats)
    return stats


DYNAMICS_SCORERS = {"clues", "datainf", "less"}


def prepare_dynamics(cfg: Config, samples: Sequence[Sample], out_dir: Path) -> Config:
    """Train the LoRA checkpoints that training-dynamics scorers need (reused when already there)."""
    if not DYNAMICS_SCORERS & set(cfg.scoring.scorers):
        return cfg
    from fedcurate.common.dynamics.prepare import prepare_checkpoints

    if not cfg.dynamics.checkpoints_dir:
        cfg = replace(cfg, dynamics=replace(cfg.dynamics, checkpoints_dir=str(out_dir / "dynamics")))
    prepare_checkpoints(cfg, samples)
    return cfg


def score_dataset(name: str, samples: Sequence[Sample], cfg: Config, cache_dir: Path) -> ScoreColumn:
    """Score every sample with scorer `name`, in batches; reuse a cached result for the same inputs."""
    key = _cache_key(name, samples, cfg)
    cache = cache_dir / f"{name}.json"
    if cache.exists():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            log.info("scorer %s: reusing %s", name, cache)
            values = [float("nan") if v is None else float(v) for v in cached["values"]]
            return ScoreColumn(name, cached["higher_is_better"], values, cached["reasons"], cached["seconds"])
    scorer = SCORERS.get(name)(cfg)
    t0 = time.perf_counter()
    if hasattr(scorer, "score_dataset"):  # dataset-level (kNN, curation): one call over everything
        values = list(scorer.score_dataset(samples))
    else:
        values = []
        step = max(1, cfg.model.batch_size * 8)
        for start in tqdm(range(0, len(samples), step), desc=f"score {name}", unit="batch", leave=False):
            values.extend(scorer.score_batch(samples[start:start + step]))
    if len(values) != len(samples):
        raise RuntimeError(f"scorer {name!r} returned {len(values)} scores for {len(samples)} samples")
    seconds = time.perf_counter() - t0
    column = ScoreColumn(name, bool(scorer.higher_is_better), [float(v) for v in values],
                         [failure_reason(v) for v in values], seconds)
    io.write_json(cache, {"key": key, **asdict(column)})
    return column


def _cache_key(name: str, samples: Sequence[Sample], cfg: Config) -> str:
    h = hashlib.sha256()
    # every section a scorer may read, but not where outputs go or how many samples are kept
    settings = {k: v for k, v in to_dict(cfg).items() if k not in ("run", "data", "selection", "federation")}
    settings["scoring"] = {"seed": cfg.scoring.seed}
    h.update(json.dumps([name, settings], sort_keys=True).encode())
    for s in samples:
        h.update(json.dumps([s.id, s.instruction, s.input, s.response]).encode())
    return h.hexdigest()


def _write_scores(path: Path, samples: Sequence[Sample], columns: Sequence[ScoreColumn],
                  selection: Selection) -> None:
    data: dict[str, Any] = {"id": [s.id for s in samples]}
    for c in columns:
        data[c.name] = c.values
        data[f"{c.name}_reason"] = c.reasons
    data["selected"] = selection.keep.tolist()
    data["drop_reason"] = selection.reasons
    labels = ground_truth(samples)
    if labels is not None:
        data["clean"] = labels.tolist()
    table = pa.table(data)
    io.write_with(path, lambda tmp: pq.write_table(table, tmp))


def ground_truth(samples: Sequence[Sample]) -> np.ndarray | None:
    """The `clean` flags of labelled (e.g. synthetic) data, or None if any sample lacks one."""
    flags = [s.metadata.get("clean") for s in samples]
    if not flags or any(not isinstance(f, bool) for f in flags):
        return None
    return np.asarray(flags, dtype=bool)


def _stats(samples: Sequence[Sample], rejects: Sequence[Any], columns: Sequence[ScoreColumn],
           primary: ScoreColumn, selection: Selection, cfg: Config, load_s: float) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "num_samples": len(samples),
        "num_rejected_rows": len(rejects),
        "primary_scorer": primary.name,
        "kept": selection.num_kept,
        "dropped": len(samples) - selection.num_kept,
        "dropped_by_reason": selection.dropped_by_reason(),
        "threshold": selection.threshold,
        "failures_by_scorer": {c.name: sum(1 for r in c.reasons if r) for c in columns},
        "timings_s": {"load": round(load_s, 3), **{f"score_{c.name}": round(c.seconds, 3) for c in columns}},
    }
    labels = ground_truth(samples)
    if labels is not None:
        stats["precision"] = precision_by_scorer(labels, columns, cfg)
    return stats


def precision_by_scorer(labels: np.ndarray, columns: Sequence[ScoreColumn], cfg: Config) -> dict[str, Any]:
    """Share of clean samples among those each scorer keeps at the configured budget, next to full data."""
    out: dict[str, Any] = {"full": float(labels.mean())}
    for c in columns:
        sel = select(orient(c.values, c.higher_is_better), cfg.selection, c.reasons)
        out[c.name] = float(labels[sel.keep].mean()) if sel.num_kept else float("nan")
    return out
