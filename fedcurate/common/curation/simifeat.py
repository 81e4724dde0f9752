"""SimiFeat-rank detection of wrong scores, given the (global) transition matrix T and prior p.

Zhu, Dong, Liu, "Detecting Corrupted Labels Without Training a Model to Predict" (ICML 2022), in the
form DS2 uses (notes/ds2_docta.md §1.5). Per epoch e = 1..M, on a fresh subsample S:

1. each member n takes its k nearest neighbours within S (self at position 0) with distances
   d_0..d_{k-1}; the self distance is replaced by d_0 <- 2 d_1 - d_2;
2. weighted vote V[n, c] = sum_j (1 - d_j) 1[score of nu_j = c], normalised q = V / |V|_2;
3. corruption score sigma_n = -log(q[n, own score] + 1e-8) (q clipped at 0, since far neighbours
   with d > 1 give negative weights) and kNN suggestion argmax_c q[n, c] (first index on ties);
4. per score class c, flag the members rated c whose sigma is at least the 100 (1 - r_c) percentile
   (linear interpolation), r_c = 1 - min(T_cc p_c / p~_c, 1), with r_c >= 1 set to 0.95 and r_c <= 0
   set to 0.05 (values in between are kept). A class absent from S is skipped (the reference
   crashes); a class with p~_c = 0 has no members anyway.

Over the epochs: t_i = epochs sampled, f_i = epochs flagged, s_ic = epochs flagged with suggestion c
(a sample drawn twice in one epoch counts once per (i, c), as in the reference). Then
eta_i = (f_i + 1) / (t_i + 2), error iff eta_i > 0.5; S_ic = (s_ic + 1) / (sum_c s_ic + K) with the own
class masked to -1, suggestion c* = argmax_c S_ic (never the own class), confidence kappa = S_ic* eta.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from fedcurate.common.config import CurationConfig
from fedcurate.common.curation.knn import Candidates, subsample_knn
from fedcurate.common.curation.sampling import draw_members, rated_labels, require_subsample, stream

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    """Per-sample detection outcome; unrated (NaN) samples have eta NaN, not flagged, suggestion -1."""

    eta: np.ndarray  # float64 [N], smoothed flag frequency
    flagged: np.ndarray  # bool [N], eta > 0.5
    suggested: np.ndarray  # int64 [N], c* (differs from the raw score); -1 if unrated
    confidence: np.ndarray  # float64 [N], kappa = S_c* * eta; 0 if unrated
    sampled: np.ndarray  # int64 [N], t: epochs in which the sample was drawn
    flags: np.ndarray  # int64 [N], f: epochs in which it was flagged
    noise_rates: np.ndarray  # float64 [K], r_c used for the per-class thresholds (NaN = class skipped)
    fallback: int  # subsample members that needed brute-force kNN, over all epochs
    excluded: int  # samples without a score


def noise_rates(T: np.ndarray, p: np.ndarray, noisy_prior: np.ndarray) -> np.ndarray:
    """r_c = 1 - min(T_cc p_c / p~_c, 1); r_c >= 1 -> 0.95, r_c <= 0 -> 0.05; NaN where p~_c = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        posterior = np.where(noisy_prior > 0, np.diag(T) * p / noisy_prior, np.nan)
    r = 1.0 - np.minimum(posterior, 1.0)
    r[r >= 1.0] = 0.95
    r[r <= 0.0] = 0.05
    return r


def epoch_flags(nbr: np.ndarray, sims: np.ndarray, labels: np.ndarray, own: np.ndarray,
                rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One epoch: (flagged bool [m], kNN suggestion [m]) from members' neighbours within S."""
    m, k = nbr.shape
    num_classes = rates.size
    d = 1.0 - sims.astype(np.float64)
    d[:, 0] = 2.0 * d[:, 1] - d[:, 2]
    codes = (np.arange(m)[:, None] * num_classes + labels[nbr]).ravel()
    votes = np.bincount(codes, weights=(1.0 - d).ravel(), minlength=m * num_classes).reshape(m, num_classes)
    norm = np.linalg.norm(votes, axis=1, keepdims=True)
    q = np.divide(votes, norm, out=np.zeros_like(votes), where=norm > 0)
    sigma = -np.log(np.clip(q[np.arange(m), own], 0.0, None) + 1e-8)
    flagged = np.zeros(m, dtype=bool)
    for c in range(num_classes):
        sel = own == c
        if not sel.any() or np.isnan(rates[c]):
            continue
        flagged[sel] = sigma[sel] >= np.percentile(sigma[sel], 100.0 * (1.0 - rates[c]))
    return flagged, q.argmax(axis=1)


def detect(emb: np.ndarray, scores: np.ndarray, T: np.ndarray, p: np.ndarray, cfg: CurationConfig,
           candidates: Candidates, *, noisy_prior: np.ndarray | None = None,
           progress: bool = True) -> Detection:
    """Run `cfg.detect_epochs` SimiFeat-rank epochs with `cfg.detect_k` neighbours (self included).

    `noisy_prior` p~ defaults to the empirical distribution of this data's raw scores (the reference).
    """
    k_cls = cfg.num_classes
    labels, rated = rated_labels(scores, k_cls)
    n = labels.size
    m = require_subsample(rated.size, n, cfg, max(3, cfg.detect_k), "SimiFeat detection")
    if np.shape(T) != (k_cls, k_cls) or np.shape(p) != (k_cls,):
        raise ValueError(f"T must be {k_cls}x{k_cls} and p of length {k_cls} (curation.num_classes); "
                         f"got {np.shape(T)} and {np.shape(p)}")
    if noisy_prior is None:
        noisy_prior = np.bincount(labels[rated], minlength=k_cls) / rated.size
    rates = noise_rates(np.asarray(T, float), np.asarray(p, float), np.asarray(noisy_prior, float))
    t, f = np.zeros(n, np.int64), np.zeros(n, np.int64)
    s = np.zeros(n * k_cls, np.int64)
    rng, fallback = stream(cfg.seed, "simifeat"), 0
    for _ in tqdm(range(cfg.detect_epochs), desc="SimiFeat epochs", disable=not progress):
        members = draw_members(rng, rated, m, cfg.compat_duplicate)
        knn = subsample_knn(emb, candidates, members, cfg.detect_k)
        fallback += knn.fallback
        flagged, suggestion = epoch_flags(knn.idx, knn.sims, labels, labels[members], rates)
        t[np.unique(members)] += 1
        f[np.unique(members[flagged])] += 1
        s[np.unique(members[flagged] * k_cls + suggestion[flagged])] += 1
    logger.info("SimiFeat: %d epochs of m = %d, r = %s, %d brute-force fallbacks", cfg.detect_epochs, m,
                np.round(rates, 3).tolist(), fallback)
    return _aggregate(labels, t, f, s.reshape(n, k_cls), rates, fallback)


def _aggregate(labels: np.ndarray, t: np.ndarray, f: np.ndarray, s: np.ndarray, rates: np.ndarray,
               fallback: int) -> Detection:
    """eta, error flags, suggestions and confidences from the epoch records."""
    n, k_cls = s.shape
    rated = labels >= 0
    eta = (f + 1.0) / (t + 2.0)
    support = (s + 1.0) / (s.sum(axis=1, keepdims=True) + k_cls)
    support[np.flatnonzero(rated), labels[rated]] = -1.0
    suggested = support.argmax(axis=1)
    confidence = support[np.arange(n), suggested] * eta
    eta[~rated] = np.nan
    confidence[~rated] = 0.0
    suggested[~rated] = -1
    return Detection(eta, rated & (eta > 0.5), suggested, confidence, t, f, rates, fallback,
                     int((~rated).sum()))


def curated_scores(raw: np.ndarray, detection: Detection, theta: float) -> np.ndarray:
    """y'_i = c*_i if flagged and kappa_i >= theta, else the raw score (NaN stays NaN)."""
    out = np.asarray(raw, dtype=np.float64).copy()
    change = detection.flagged & (detection.confidence >= theta)
    out[change] = detection.suggested[change]
    return out
