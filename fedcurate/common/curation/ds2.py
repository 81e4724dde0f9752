"""DS2 score curation of one site's data, as pure functions (Pang et al., "Improving Data Efficiency
via Curating LLM-Driven Rating Systems", ICLR 2025; notes/ds2_docta.md).

Federated:   counts_s = site_counts(emb_s, scores_s, cfg)              at every site
             hoc = solve_hoc(sum_counts([counts_1, ...]), cfg)         at the server
             result_s = curate(emb_s, scores_s, hoc.T, hoc.p, cfg)    at every site
             keep = ds2_select(result_s.curated, result_s.longtail, budget)
Centralized: hoc, result = curate_centralized(emb, scores, cfg) -- exactly the same calls with one site.

kNN stays local (each site's own graph); only the K + K^2 + K^3 integer counts leave a site.
Every function computes the candidate neighbour lists itself unless given them (`site_candidates`),
so a caller running both phases in one process computes them once.

`cfg.compat_duplicate` reproduces the reference's duplicated dataset: subsamples are drawn from 2R rows
(R rated samples) and row r maps to sample r mod R, so a sample and its exact "twin" can share a
subsample, where the twin is its nearest neighbour at distance 0 with the same score. With
m = min(50k, 0.9 * 2R) the chance that a drawn sample's twin is drawn too is about (m - 1)/(2R - 1):
~8% at R = 300k, ~48% at 52k and ~90% for any R below ~28k. So on small sites -- the usual case in a
federation -- most consensus patterns and SimiFeat votes agree by construction: T is pulled towards the
identity, fewer scores are flagged and curated, and the long-tail score loses one real neighbour.
It is off by default.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from fedcurate.common.config import CurationConfig
from fedcurate.common.curation.hoc import ConsensusCounts, HocResult, consensus_counts, solve_hoc
from fedcurate.common.curation.knn import Candidates, candidate_neighbours, candidates_needed, subsample_knn
from fedcurate.common.curation.longtail import longtail_scores
from fedcurate.common.curation.sampling import (
    draw_members,
    rated_labels,
    require_subsample,
    stream,
    subsample_size,
)
from fedcurate.common.curation.simifeat import Detection, curated_scores, detect

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurationResult:
    """A site's curation: raw and curated scores, long-tail scores, and the detection behind them."""

    raw: np.ndarray  # float64 [N], NaN = unrated
    curated: np.ndarray  # float64 [N]
    longtail: np.ndarray  # float64 [N]
    detection: Detection
    T: np.ndarray  # the transition matrix used
    p: np.ndarray  # the true-score prior used

    @property
    def changed(self) -> np.ndarray:
        """bool [N]: samples whose score curation changed."""
        return np.isfinite(self.raw) & (self.curated != self.raw)


def normalised(emb: np.ndarray, num_scores: int | None = None) -> np.ndarray:
    """Embeddings as contiguous L2-normalised float32, checked (finite, non-zero, one row per score)."""
    x = np.ascontiguousarray(emb, dtype=np.float32)
    if x.ndim != 2 or (num_scores is not None and x.shape[0] != num_scores):
        raise ValueError(f"embeddings must be [N, dim] with N = {num_scores} (one per score); got {x.shape}")
    norms = np.linalg.norm(x, axis=1)
    if not np.isfinite(norms).all() or (norms == 0).any():
        bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
        raise ValueError(f"{bad.size} embedding row(s) are zero or not finite; first at row {int(bad[0])}")
    if np.abs(norms - 1.0).max() > 1e-4:
        x = x / norms[:, None]
    return x


def site_candidates(emb: np.ndarray, scores: np.ndarray, cfg: CurationConfig,
                    progress: bool = True) -> Candidates:
    """Candidate lists for this site, wide enough that brute-force fallbacks stay rare.

    M = max(cfg.candidates, longtail_k, the smallest M for which a member of a detection subsample
    lacks detect_k candidates in it with probability <= 1e-3), capped at 1024 and N.
    """
    x = normalised(emb, len(scores))
    num_rated = int(np.isfinite(np.asarray(scores, dtype=np.float64)).sum())
    m = subsample_size(num_rated, cfg)
    width = max(cfg.candidates, cfg.longtail_k)
    if m >= cfg.detect_k:
        needed = candidates_needed(x.shape[0], m, cfg.detect_k)
        if needed > width:
            logger.info("knn: %d candidates per sample (curation.candidates = %d) so that subsamples of "
                        "%d of %d rarely need brute force", needed, cfg.candidates, m, x.shape[0])
        width = max(width, needed)
    start = time.perf_counter()
    candidates = candidate_neighbours(x, width, index=cfg.knn_index, nprobe=cfg.ivf_nprobe, progress=progress)
    logger.info("knn: %d x %d %s candidates in %.1f s", x.shape[0], candidates.idx.shape[1], cfg.knn_index,
                time.perf_counter() - start)
    return candidates


def site_counts(emb: np.ndarray, scores: np.ndarray, cfg: CurationConfig, *,
                candidates: Candidates | None = None, progress: bool = True) -> ConsensusCounts:
    """This site's HOC consensus counts over `cfg.hoc_rounds` subsamples of its local kNN graph."""
    labels, rated = rated_labels(scores, cfg.num_classes)
    m = require_subsample(rated.size, labels.size, cfg, 3, "HOC consensus counting (self + 2 neighbours)")
    x = normalised(emb, labels.size)
    cand = candidates if candidates is not None else site_candidates(x, scores, cfg, progress)
    rng, fallback = stream(cfg.seed, "hoc"), [0]

    def rounds() -> Iterator[np.ndarray]:
        for _ in tqdm(range(cfg.hoc_rounds), desc="HOC rounds", disable=not progress):
            knn = subsample_knn(x, cand, draw_members(rng, rated, m, cfg.compat_duplicate), 3)
            fallback[0] += knn.fallback
            yield knn.idx

    counts = consensus_counts(labels, rounds(), cfg.num_classes)
    logger.info("HOC counts: %d rounds of m = %d (%d brute-force fallbacks)", cfg.hoc_rounds, m, fallback[0])
    return counts


def curate(emb: np.ndarray, scores: np.ndarray, T: np.ndarray, p: np.ndarray, cfg: CurationConfig, *,
           candidates: Candidates | None = None, noisy_prior: np.ndarray | None = None,
           progress: bool = True) -> CurationResult:
    """Detection with the given T and p, curated scores (theta = cfg.confidence) and long-tail scores."""
    raw = np.asarray(scores, dtype=np.float64).ravel()
    x = normalised(emb, raw.size)
    if raw.size < cfg.longtail_k:
        raise ValueError(f"the long-tail score needs N >= longtail_k = {cfg.longtail_k}; got N = {raw.size}")
    cand = candidates if candidates is not None else site_candidates(x, raw, cfg, progress)
    detection = detect(x, raw, T, p, cfg, cand, noisy_prior=noisy_prior, progress=progress)
    curated = curated_scores(raw, detection, cfg.confidence)
    longtail = longtail_scores(cand, cfg.longtail_k, duplicate=cfg.compat_duplicate)
    logger.info("curation: %d flagged, %d scores changed (theta = %.2f) of %d", int(detection.flagged.sum()),
                int((np.isfinite(raw) & (curated != raw)).sum()), cfg.confidence, raw.size)
    return CurationResult(raw, curated, longtail, detection, np.asarray(T), np.asarray(p))


def curate_centralized(emb: np.ndarray, scores: np.ndarray, cfg: CurationConfig, *,
                       candidates: Candidates | None = None,
                       progress: bool = True) -> tuple[HocResult, CurationResult]:
    """DS2 on one site: site_counts -> solve_hoc -> curate (what the federation computes with one site)."""
    x = normalised(emb, len(scores))
    cand = candidates if candidates is not None else site_candidates(x, scores, cfg, progress)
    hoc = solve_hoc(site_counts(x, scores, cfg, candidates=cand, progress=progress), cfg)
    return hoc, curate(x, scores, hoc.T, hoc.p, cfg, candidates=cand, progress=progress)


def ds2_select(curated: np.ndarray, longtail: np.ndarray, budget: int) -> np.ndarray:
    """Indices of the DS2 selection, in selection order.

    Score buckets from the highest curated score down; whole buckets (ascending index) while they fit;
    the bucket at the budget boundary is filled by long-tail score descending, ties by lower index.
    Unscored (NaN) samples are never selected.
    """
    s = np.asarray(curated, dtype=np.float64)
    lt = np.asarray(longtail, dtype=np.float64)
    remaining, chosen = max(int(budget), 0), []
    for value in np.unique(s[np.isfinite(s)])[::-1]:
        if remaining == 0:
            break
        bucket = np.flatnonzero(s == value)
        if bucket.size > remaining:
            bucket = bucket[np.lexsort((bucket, -lt[bucket]))[:remaining]]
        chosen.append(bucket)
        remaining -= bucket.size
    return np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)


def ds2_select_without_curation(raw: np.ndarray, longtail: np.ndarray, budget: int) -> np.ndarray:
    """DS2's "w/o curation" ablation: the same bucket selection on the raw scores."""
    return ds2_select(raw, longtail, budget)
