"""The threshold phase's histogram maths, free of Flower: one grid for all, interval histograms, the cut.

    lo, hi = merge_ranges([(0.1, 4.2), (0.0, 3.9)])       # sites' (min, max), or the score's known range
    edges = bin_edges(lo, hi, bins=1024)                  # broadcast by the server
    hist = interval_histogram(scores, edges, closed=True) # at each site; only `hist` travels
    cut = find_cut(summed_counts, num_above, edges, True, target, can_refine=True)
    # cut.threshold is final, or cut.next is the interval the next round bins (one bin, finer)
    keep = keep_mask(scores, cut.threshold)               # at each site (tie_quota when ties straddle it)

**Grid.** The server fixes the grid so that every site bins on the same edges. `lo`/`hi` come either
from the score's known range (a 0-5 rating, a probability; `privacy.score-range`) or from a first round in
which each site reports the (min, max) of its finite scores, merged by `merge_ranges`. A min/max round
reveals each site's extremes; use the known range when that matters.

**Rounds.** Each round, a site counts its scores inside the interval per bin, and those above it, below
it and NaN (`interval_histogram`; nothing is clamped). Because counts add up, the summed histogram is the
pooled data's histogram on that grid. `find_cut` finds where the `target`-th best score lies: the
largest kept set not above the target; when the cut falls inside a bin the next round bins that bin alone
(`Interval`), so a few rounds of 1024 bins reach any float's resolution.

**Threshold rule.** Samples are kept when `score >= t` (`keep_mask`): NaN is never kept, t = +inf keeps
none, t = -inf keeps all. `kept_by_threshold` counts what a bin-edge threshold keeps on a histogram.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

def bin_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """`bins + 1` evenly spaced float64 edges from `lo` to `hi`."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise ValueError(f"bin grid needs finite lo < hi, got lo={lo}, hi={hi}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    return np.linspace(float(lo), float(hi), int(bins) + 1, dtype=np.float64)


def merge_ranges(ranges: Iterable[tuple[float, float] | None], margin: float = 0.0) -> tuple[float, float]:
    """(min of lows, max of highs) over the sites' (min, max) replies; sites without finite scores reply
    None or NaN and are skipped. `margin` widens the range by that share of its width; a single-valued
    range is widened by 0.5 on each side so that `bin_edges` accepts it."""
    finite = [(float(a), float(b)) for r in ranges if r is not None
              for a, b in [r] if math.isfinite(a) and math.isfinite(b)]
    if not finite:
        raise ValueError("no site reported a finite score range")
    lo, hi = min(a for a, _ in finite), max(b for _, b in finite)
    if lo > hi:
        raise ValueError(f"inconsistent ranges: merged low {lo} > high {hi}")
    if lo == hi:
        return lo - 0.5, hi + 0.5
    pad = margin * (hi - lo)
    return lo - pad, hi + pad


def kept_by_threshold(counts: Sequence[float] | np.ndarray, edges: np.ndarray, threshold: float) -> int:
    """How many counted samples a bin-edge `threshold` keeps (what the sites' `keep_mask` keeps, clamped
    values included). For a threshold between edges (e.g. the CLUES tau) only whole bins at or above it
    are counted, so the result is a lower bound."""
    counts, edges = np.asarray(counts), np.asarray(edges, dtype=np.float64)
    if threshold == -math.inf:
        return int(counts.sum())
    if threshold == math.inf:
        return 0
    j = int(np.searchsorted(edges, threshold, side="left"))  # first bin starting at or above threshold
    return int(counts[j:].sum())


def keep_mask(scores: Sequence[float] | np.ndarray, threshold: float) -> np.ndarray:
    """True where `score >= threshold`; NaN is never kept and a +inf threshold keeps nothing."""
    s = np.asarray(scores, dtype=np.float64)
    if threshold == math.inf:
        return np.zeros(s.shape, dtype=bool)
    return ~np.isnan(s) & (s >= threshold)


# ------------------------------------------------------------------ exact cut by histogram refinement
@dataclass(frozen=True)
class Interval:
    """The score range a histogram round bins: [lo, hi) or, when `closed`, [lo, hi]."""

    lo: float
    hi: float
    closed: bool = True


def interval_histogram(scores: Sequence[float] | np.ndarray, edges: np.ndarray, closed: bool) -> dict[str, Any]:
    """A site's reply to one refinement round: counts of the scores inside the grid's interval per bin
    (bins [e_i, e_i+1), the last one closed when `closed`), and how many scores lie above the interval
    (>= hi, or > hi when closed; +inf included), below it (-inf included) and are NaN. Nothing is clamped."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    edges = np.asarray(edges, dtype=np.float64)
    lo, hi, bins = edges[0], edges[-1], len(edges) - 1
    nan = np.isnan(s)
    above = (s > hi) if closed else (s >= hi)
    below = s < lo
    inside = s[~nan & ~above & ~below]
    idx = np.clip(np.searchsorted(edges, inside, side="right") - 1, 0, bins - 1)
    return {"counts": np.bincount(idx, minlength=bins).astype(np.int64), "num-above": int(above.sum()),
            "num-below": int(below.sum()), "num-nan": int(nan.sum()),
            "inside-min": float(inside.min()) if inside.size else math.nan,
            "inside-max": float(inside.max()) if inside.size else math.nan}


def tie_quota(scores: Sequence[float] | np.ndarray, threshold: float, tie_fraction: float) -> np.ndarray:
    """Keep mask for a cut that falls inside a run of equal scores: every score > threshold, and of the
    scores == threshold the first floor(tie_fraction * n_ties) in sample order. With one site this keeps
    exactly the target; over sites the sum of floors keeps at most it."""
    s = np.asarray(scores, dtype=np.float64)
    keep = ~np.isnan(s) & (s > threshold)
    ties = np.flatnonzero(s == threshold)
    keep[ties[: int(math.floor(tie_fraction * ties.size + 1e-9))]] = True
    return keep


@dataclass(frozen=True)
class Cut:
    """One refinement step's outcome: a final threshold, or the interval to bin next."""

    threshold: float | None  # keep score >= threshold; None = refine `next`
    kept: int  # samples the threshold keeps (when final), else those surely kept (above the next interval)
    next: Interval | None = None


def find_cut(counts: np.ndarray, num_above: int, edges: np.ndarray, closed: bool, target: int,
             can_refine: bool) -> Cut:
    """Where the `target`-th best score lies on a summed histogram (see `interval_histogram`).

    S_j = num_above + counts[j:].sum() is how many scores are >= e_j (S_bins = num_above). The smallest j
    with S_j <= target gives the largest kept set not above the target. If S_j == target, or the cut
    cannot be narrowed further, e_j is final (at most `target` kept, exact unless ties straddle it);
    otherwise the cut lies in bin j-1 and the next round bins that bin alone.
    """
    counts = np.asarray(counts, dtype=np.int64)
    bins = len(counts)
    kept = np.append(np.cumsum(counts[::-1])[::-1], 0) + int(num_above)
    if kept[bins] > target:  # more +inf scores than the target (or target 0): keep none
        return Cut(math.inf, 0)
    j = int(np.argmax(kept <= target))
    top = edges[-1] if not closed else np.nextafter(edges[-1], math.inf)
    t_j = float(edges[j]) if j < bins else float(top)
    a, b = float(edges[j - 1]) if j > 0 else float(edges[0]), float(edges[j]) if j < bins else float(edges[-1])
    if kept[j] == target or j == 0 or not can_refine or not (np.nextafter(a, math.inf) < b):
        return Cut(t_j, int(kept[j]))
    return Cut(None, int(kept[j]), Interval(a, b, closed=closed and j == bins))
