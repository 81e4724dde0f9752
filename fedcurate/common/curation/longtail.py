"""DS2's long-tail (rarity) score: how isolated a sample is in embedding space.

LT_i = round(tanh(mean_{j<k} d_j(i) / 2), 4), i.e. round(2 / (1 + exp(-mean)) - 1, 4), where d_j(i) are
the cosine distances to the k nearest samples *including the sample itself* (d_0 = 0), k = 10 by
default (notes/ds2_docta.md §1.6). Higher = rarer. Rounding to 4 decimals follows the reference and
creates ties (the selection breaks them by lower index); unlike the reference, the mean is computed in
float64, not float16. It is read from the candidate lists (no N x N matrix).

With `duplicate=True` (the reference's duplicated dataset) every sample's twin is among its nearest at
distance 0, so the distances are [0, 0, d_1, ..., d_{k-2}]: the same mean over k with one real
neighbour fewer.
"""

from __future__ import annotations

import numpy as np

from fedcurate.common.curation.knn import Candidates


def longtail_scores(candidates: Candidates, k: int = 10, duplicate: bool = False) -> np.ndarray:
    """LT score of every sample (float64 [N]) from its first k candidates (self included)."""
    n, width = candidates.idx.shape
    if n < k or width < k:
        raise ValueError(f"the long-tail score needs k = {k} neighbours (self included): got N = {n} "
                         f"samples and {width} candidates per sample (need N >= {k})")
    others = k - 2 if duplicate else k - 1
    d = 1.0 - candidates.sims[:, 1:1 + others].astype(np.float64)
    return np.round(np.tanh(d.sum(axis=1) / k / 2.0), 4)
