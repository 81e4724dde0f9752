"""Turn scores into a selection: keep a fraction, a count, or everything clearing a threshold.

Scores are first *oriented* (negated when lower is better) so that "higher is kept" holds for
every scorer. A sample whose score failed (NaN) is never kept; its drop reason names the failure.
Ties are broken by input order, so a selection is deterministic.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedcurate.common.config import SelectionConfig

KEPT = ""
BELOW_THRESHOLD = "below threshold"
OUTSIDE_BUDGET = "outside budget"


@dataclass(frozen=True)
class Selection:
    """Which samples are kept and, for each dropped one, why."""

    keep: np.ndarray  # bool, one per sample
    reasons: list[str]  # "" for kept samples
    threshold: float  # the oriented score of the last kept sample (or the configured threshold)

    @property
    def num_kept(self) -> int:
        return int(self.keep.sum())

    def dropped_by_reason(self) -> dict[str, int]:
        return dict(Counter(r for r in self.reasons if r))


def orient(scores: Sequence[float], higher_is_better: bool) -> np.ndarray:
    """Scores as float64 with "higher is better"; NaN stays NaN."""
    arr = np.asarray(scores, dtype=np.float64)
    return arr if higher_is_better else -arr


def budget(num_samples: int, cfg: SelectionConfig) -> int:
    """How many samples a fraction or count selection keeps out of `num_samples`."""
    if cfg.mode == "fraction":
        return min(num_samples, int(math.floor(cfg.fraction * num_samples + 1e-9)))
    if cfg.mode == "count":
        return min(num_samples, cfg.count)
    raise ValueError(f"selection.mode = {cfg.mode!r} has no budget")


def select(oriented: np.ndarray, cfg: SelectionConfig, fail_reasons: Sequence[str] | None = None) -> Selection:
    """Select from oriented scores according to `cfg`.

    `fail_reasons[i]` explains a NaN score (e.g. "ifd >= 1"); it becomes the drop reason.
    """
    n = len(oriented)
    valid = ~np.isnan(oriented)
    reasons = ["" for _ in range(n)]
    for i in np.flatnonzero(~valid):
        why = fail_reasons[i] if fail_reasons and fail_reasons[i] else "nan"
        reasons[i] = f"score failed: {why}"
    keep = np.zeros(n, dtype=bool)
    if cfg.mode == "threshold":
        keep = valid & (np.nan_to_num(oriented, nan=-np.inf) >= cfg.threshold)
        for i in np.flatnonzero(valid & ~keep):
            reasons[i] = BELOW_THRESHOLD
        return Selection(keep, reasons, cfg.threshold)
    k = budget(n, cfg)
    order = rank(oriented)
    chosen = order[:k]
    keep[chosen] = True
    for i in order[k:]:
        reasons[i] = OUTSIDE_BUDGET
    last = float(oriented[chosen[-1]]) if k else math.inf
    return Selection(keep, reasons, last)


def rank(oriented: np.ndarray) -> np.ndarray:
    """Indices of valid samples from best to worst; ties keep input order. NaNs are excluded."""
    valid_idx = np.flatnonzero(~np.isnan(oriented))
    order = np.lexsort((valid_idx, -oriented[valid_idx]))
    return valid_idx[order]
