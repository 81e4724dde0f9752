"""Which samples take part in DS2 curation, and how each round's subsample is drawn.

Scores are score classes 0..K-1 (floats are accepted when integral). A NaN score (a failed rating)
excludes its sample from HOC and SimiFeat: it is never drawn into a subsample, so it is never anyone's
neighbour either; `rated_labels` counts and logs these rows. Long-tail scores need only embeddings and
still cover every row.

Subsample size (notes/ds2_docta.md §1.4): m = min(hoc_sample_size, floor(hoc_sample_fraction * R)) where
R is the number of rated rows, or 2R with `compat_duplicate` (the reference's duplicated dataset: a
round draws m of 2R rows without replacement and maps row r to rated sample r mod R, so a sample can be
drawn twice -- its "twin" then sits at distance 0 with the same label).

Random streams: every consumer gets its own generator from `stream(seed, name)`, so HOC rounds and
SimiFeat epochs draw the same subsamples whether they run in one process (centralized) or in two
federated phases.
"""

from __future__ import annotations

import logging
import math
import zlib

import numpy as np

from fedcurate.common.config import CurationConfig

logger = logging.getLogger(__name__)


def rated_labels(scores: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels (-1 where the score is NaN) and the sorted ids of rated samples.

    Raises ValueError if a non-NaN score is not an integer in [0, num_classes).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    nan = np.isnan(s)
    valid = s[~nan]
    bad = (valid != np.round(valid)) | (valid < 0) | (valid >= num_classes)
    if bad.any():
        where = np.flatnonzero(~nan)[bad]
        raise ValueError(f"{int(bad.sum())} score(s) are not integer classes in [0, {num_classes}) "
                         f"(curation.num_classes = {num_classes}); first at row {int(where[0])}: "
                         f"{s[where[0]]!r}")
    if nan.any():
        logger.warning("curation: %d of %d sample(s) have no score (NaN) and are excluded from HOC and "
                       "SimiFeat", int(nan.sum()), s.size)
    labels = np.full(s.size, -1, dtype=np.int64)
    labels[~nan] = valid.astype(np.int64)
    return labels, np.flatnonzero(~nan)


def subsample_size(num_rated: int, cfg: CurationConfig) -> int:
    """m = min(cap, floor(fraction * R)), with R doubled under `compat_duplicate`."""
    base = 2 * num_rated if cfg.compat_duplicate else num_rated
    return int(min(cfg.hoc_sample_size, math.floor(cfg.hoc_sample_fraction * base)))


def require_subsample(num_rated: int, num_total: int, cfg: CurationConfig, need: int, what: str) -> int:
    """The subsample size m, or a ValueError naming N, m and the minimum N when m < `need`."""
    m = subsample_size(num_rated, cfg)
    if m >= need:
        return m
    if cfg.hoc_sample_size < need:
        hint = f"raise curation.hoc_sample_size to at least {need}"
    else:
        n_min = next(n for n in range(1, 100 * need + 100) if subsample_size(n, cfg) >= need)
        hint = f"need at least {n_min} rated samples at hoc_sample_fraction = {cfg.hoc_sample_fraction}"
    raise ValueError(f"{what} needs subsamples of at least {need} rows, but N = {num_total} samples "
                     f"({num_rated} rated, {num_total - num_rated} NaN) give m = {m}: {hint}")


def stream(seed: int, name: str) -> np.random.Generator:
    """An independent, reproducible generator for one consumer (e.g. "hoc", "simifeat")."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def draw_members(rng: np.random.Generator, rated: np.ndarray, m: int, duplicate: bool) -> np.ndarray:
    """Sample ids of one subsample, sorted (ids repeat only under `duplicate`)."""
    r = rated.size
    rows = rng.choice(2 * r if duplicate else r, size=m, replace=False)
    return np.sort(rated[rows % r])
