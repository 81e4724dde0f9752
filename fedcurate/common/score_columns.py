"""One scorer over a whole dataset, cached: the column every selection reads.

    column = score_dataset("perplexity", samples, cfg, cache_dir)    # ScoreColumn(values, reasons, ...)

A column is cached in `<cache_dir>/<scorer>.json` under a key of the scorer, every setting a scorer may read
and the samples' text, so a re-run with the same data and settings reuses it. A failed sample's score is a
NaN carrying its reason (`failures.failure_reason`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from fedcurate.common import io
from fedcurate.common.config import Config, to_dict
from fedcurate.common.data.sample import Sample
from fedcurate.common.scorers import SCORERS, failure_reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreColumn:
    """One scorer's output over a whole dataset."""

    name: str
    higher_is_better: bool
    values: list[float]
    reasons: list[str]
    seconds: float


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
