"""Global-threshold maths of the `threshold` phase, free of Flower: bin grid, site histograms, thresholds.

    lo, hi = merge_ranges([(0.1, 4.2), (0.0, 3.9)])       # or the score's known range, e.g. (0, 5)
    edges = bin_edges(lo, hi, bins=1024)                  # broadcast by the server
    hist = site_histogram(scores, edges)                  # at each site; only `hist` travels
    total = sum_histograms([hist_a, hist_b, ...])         # at the server
    t = threshold_for_fraction(total.counts, edges, 0.3)  # or threshold_for_budget / clues_threshold
    keep = keep_mask(scores, t)                           # at each site

**Grid.** The server fixes the grid so that every site bins on the same edges. `lo`/`hi` come either
from the score's known range (a 0-5 rating, a probability) or from a first round in which each site
reports the (min, max) of its finite scores, merged by `merge_ranges`. A min/max round reveals each
site's extremes; use the known range when that matters. Bins are [e_i, e_i+1) and the last one is
closed; finite values outside [lo, hi] and ±inf are clamped into the end bins (and counted), NaN is
left out (and counted).

**Threshold rule.** Samples are kept when `score >= t` (`keep_mask`). The server only knows bin counts,
so t is a bin edge: t_0 = -inf (keep all), t_j = e_j for 0 < j < bins, t_bins = +inf (keep none). With
S_j = counts[j:].sum() (what t_j keeps; S_0 = N >= S_1 >= ... >= S_bins = 0) and the target k:

* ``rounding="at-most"`` (default) picks the smallest j with S_j <= k. Then S_j <= k < S_{j-1}, so
  k - counts[j-1] < kept <= k: the budget is never exceeded and the shortfall is under one bin's count.
* ``rounding="nearest"`` picks whichever of S_j, S_{j-1} is closer to k (ties keep more), so
  |kept - k| <= counts[j-1] / 2.

Because counts add up, the threshold of the summed site histograms equals the pooled data's threshold
on the same grid; finer bins make the kept count closer to the target.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ROUNDING = ("at-most", "nearest")


@dataclass(frozen=True)
class SiteHistogram:
    """Counts of finite scores per bin, plus what the counts do not show."""

    counts: np.ndarray  # int64, one per bin; clamped values included
    num_nan: int = 0  # left out of `counts`
    num_below: int = 0  # below the grid (or -inf), counted in the first bin
    num_above: int = 0  # above the grid (or +inf), counted in the last bin

    @property
    def num_samples(self) -> int:
        """Scores counted in the bins (every non-NaN score)."""
        return int(self.counts.sum())


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


def site_histogram(scores: Sequence[float] | np.ndarray, edges: np.ndarray) -> SiteHistogram:
    """Histogram of `scores` on `edges` (see the module docstring for NaN and clamping)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    edges = np.asarray(edges, dtype=np.float64)
    bins = len(edges) - 1
    nan = np.isnan(s)
    v = s[~nan]
    idx = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, bins - 1)
    counts = np.bincount(idx, minlength=bins).astype(np.int64)
    below, above = int((v < edges[0]).sum()), int((v > edges[-1]).sum())
    if below or above:
        logger.info("histogram: %d score(s) below %.6g and %d above %.6g clamped into the end bins",
                    below, edges[0], above, edges[-1])
    return SiteHistogram(counts, int(nan.sum()), below, above)


def sum_histograms(hists: Sequence[SiteHistogram]) -> SiteHistogram:
    """Bin-wise sum of site histograms on one grid."""
    if not hists:
        raise ValueError("no histograms to sum")
    sizes = {len(h.counts) for h in hists}
    if len(sizes) != 1:
        raise ValueError(f"histograms have different numbers of bins: {sorted(sizes)}")
    return SiteHistogram(np.sum([np.asarray(h.counts, dtype=np.int64) for h in hists], axis=0),
                         sum(h.num_nan for h in hists), sum(h.num_below for h in hists),
                         sum(h.num_above for h in hists))


def _edge_threshold(edges: np.ndarray, j: int) -> float:
    """The score threshold that keeps bins j, j+1, ... (-inf keeps all, +inf keeps none)."""
    bins = len(edges) - 1
    return -math.inf if j == 0 else math.inf if j == bins else float(edges[j])


def _threshold_for_target(counts: np.ndarray, edges: np.ndarray, target: float, rounding: str) -> float:
    counts = np.asarray(counts, dtype=np.float64)
    if len(counts) != len(edges) - 1:
        raise ValueError(f"{len(counts)} counts for {len(edges) - 1} bins")
    if rounding not in ROUNDING:
        raise ValueError(f"rounding must be one of {ROUNDING}, got {rounding!r}")
    kept = np.append(np.cumsum(counts[::-1])[::-1], 0.0)  # kept[j] = counts[j:].sum()
    slack = 1e-9 * max(1.0, float(kept[0]))  # 0.29 * 100 = 28.999999999999996 still allows 29
    j = int(np.argmax(kept <= target + slack))  # smallest j keeping at most `target`; kept[-1] = 0
    if rounding == "nearest" and j > 0 and kept[j - 1] - target <= target - kept[j]:
        j -= 1
    return _edge_threshold(np.asarray(edges), j)


def threshold_for_fraction(counts: Sequence[float] | np.ndarray, edges: np.ndarray, keep_fraction: float,
                           rounding: str = "at-most") -> float:
    """Bin-edge threshold keeping `keep_fraction` of the counted samples (rounding as documented above)."""
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must lie in [0, 1], got {keep_fraction}")
    total = float(np.sum(counts))
    return _threshold_for_target(np.asarray(counts), np.asarray(edges), keep_fraction * total, rounding)


def threshold_for_budget(counts: Sequence[float] | np.ndarray, edges: np.ndarray, budget: int,
                         rounding: str = "at-most") -> float:
    """Bin-edge threshold keeping `budget` samples over all sites (rounding as documented above)."""
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    return _threshold_for_target(np.asarray(counts), np.asarray(edges), float(budget), rounding)


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


def clues_threshold(anchor_scores: Sequence[float] | np.ndarray) -> float:
    """CLUES global threshold: tau = mean score of the public anchor set, scored on the same checkpoints
    and anchor gradients as the sites' samples (notes: clues_selectit.md §1.4). NaN anchors are skipped."""
    s = np.asarray(anchor_scores, dtype=np.float64).ravel()
    finite = s[np.isfinite(s)]
    if finite.size == 0:
        raise ValueError(f"no finite anchor score among {s.size}; the CLUES threshold is undefined")
    if finite.size < s.size:
        logger.warning("CLUES threshold: %d of %d anchor scores are not finite and were skipped",
                       s.size - finite.size, s.size)
    return float(finite.mean())


def local_thresholds(site_scores: Mapping[str, Sequence[float] | np.ndarray],
                     keep_fraction: float) -> dict[str, float]:
    """Baseline: each site keeps its own top `keep_fraction` (floor(f * n_valid) samples), as if no
    global standard existed. Per site, the threshold is the score of its last kept sample (+inf when
    nothing is kept); ties at that score are also kept by `keep_mask`."""
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must lie in [0, 1], got {keep_fraction}")
    out = {}
    for site, scores in site_scores.items():
        s = np.asarray(scores, dtype=np.float64)
        valid = np.sort(s[~np.isnan(s)])[::-1]
        k = int(math.floor(keep_fraction * valid.size + 1e-9))
        out[site] = float(valid[k - 1]) if k else math.inf
    return out


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
