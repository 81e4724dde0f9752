"""DS2 scorers (Pang et al., 2025, "Improving Data Efficiency via Curating LLM-Driven Rating Systems").

    ds2        curated score + long-tail score: sorting by it is exactly DS2's selection order
               (whole curated-score buckets from the top, ties broken by rarity), since LT lies in [0, 1)
    ds2-raw    raw rating + long-tail score: DS2 "without curation"
    longtail   the long-tail (rarity) score alone: tanh(mean cosine distance to the k nearest / 2)

These are dataset-level scorers: curation needs the kNN graph of the whole dataset, so the pipeline
calls `score_dataset` once rather than `score_batch` per batch. Raw ratings come from the metadata key
`curation.score-field` or from the `[rating]` judges (see `fedcurate.common.curation.run.raw_ratings`).
A dataset too small for curation gives every sample a failure with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedcurate.common.config import Config
from fedcurate.common.curation.ds2 import curate_centralized, normalised
from fedcurate.common.curation.embeddings import embed_samples
from fedcurate.common.curation.knn import candidate_neighbours
from fedcurate.common.curation.longtail import longtail_scores
from fedcurate.common.curation.run import raw_ratings
from fedcurate.common.data.sample import Sample
from fedcurate.common.scorers.base import SCORERS, failed

logger = logging.getLogger(__name__)


class _DS2Scorer:
    higher_is_better = True
    dataset_level = True
    name = ""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.cache_dir = Path(config.run.dir) / "cache"

    def score_batch(self, samples: Sequence[Sample]) -> list[float]:
        """The batch is taken as the whole dataset (see the module docstring)."""
        return self.score_dataset(samples)

    def score_dataset(self, samples: Sequence[Sample]) -> list[float]:
        if not samples:
            return []
        raw = raw_ratings(samples, self.config, None, self.cache_dir)
        emb = embed_samples(samples, self.config.curation, self.cache_dir / "embeddings")
        try:
            _, result = curate_centralized(emb, raw, self.config.curation)
        except ValueError as err:  # too few samples for subsampled kNN: every score fails, with the reason
            logger.error("scorer %s: %s", self.name, err)
            return [failed(f"curation impossible: {err}") for _ in samples]
        values = self.combine(result.raw, result.curated, result.longtail)
        return [failed("no raw rating") if np.isnan(v) else float(v) for v in values]

    def combine(self, raw: np.ndarray, curated: np.ndarray, longtail: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@SCORERS.register("ds2")
class DS2CuratedScorer(_DS2Scorer):
    name = "ds2"

    def combine(self, raw: np.ndarray, curated: np.ndarray, longtail: np.ndarray) -> np.ndarray:
        return curated + longtail


@SCORERS.register("ds2-raw")
class DS2RawScorer(_DS2Scorer):
    name = "ds2-raw"

    def combine(self, raw: np.ndarray, curated: np.ndarray, longtail: np.ndarray) -> np.ndarray:
        return raw + longtail


@SCORERS.register("longtail")
class LongtailScorer(_DS2Scorer):
    """Rarity alone; needs embeddings only, no ratings."""

    name = "longtail"

    def score_dataset(self, samples: Sequence[Sample]) -> list[float]:
        cfg = self.config.curation
        if len(samples) < cfg.longtail_k:
            return [failed(f"long-tail score needs at least {cfg.longtail_k} samples (curation.longtail-k), "
                           f"got {len(samples)}") for _ in samples]
        x = normalised(embed_samples(samples, cfg, self.cache_dir / "embeddings"))
        candidates = candidate_neighbours(x, cfg.longtail_k, index=cfg.knn_index, nprobe=cfg.ivf_nprobe,
                                          progress=False)
        return [float(v) for v in longtail_scores(candidates, cfg.longtail_k)]
