"""Global-threshold maths: bin grid, site histograms, fraction/budget thresholds, CLUES and local rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcurate.server.threshold import (
    bin_edges,
    clues_threshold,
    keep_mask,
    kept_by_threshold,
    local_thresholds,
    merge_ranges,
    site_histogram,
    sum_histograms,
    threshold_for_budget,
    threshold_for_fraction,
)


def test_bin_edges_and_merge_ranges():
    # Execute
    edges = bin_edges(0.0, 5.0, 5)
    lo, hi = merge_ranges([(0.5, 3.0), None, (math.nan, math.nan), (-1.0, 2.0)])

    # Assert
    assert edges.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert (lo, hi) == (-1.0, 3.0)
    assert merge_ranges([(2.0, 2.0)]) == (1.5, 2.5)
    assert merge_ranges([(0.0, 10.0)], margin=0.1) == (-1.0, 11.0)
    with pytest.raises(ValueError, match="lo < hi"):
        bin_edges(1.0, 1.0, 4)
    with pytest.raises(ValueError, match="no site"):
        merge_ranges([None])


def test_site_histogram_counts_nan_and_clamps_out_of_range_values():
    # Prepare
    edges = bin_edges(0.0, 4.0, 4)
    scores = [0.0, 0.5, 1.0, 3.99, 4.0, 7.0, -2.0, math.inf, math.nan, math.nan]

    # Execute
    hist = site_histogram(scores, edges)

    # Assert: [0,1): 0.0, 0.5, -2 (clamped); [1,2): 1.0; [3,4]: 3.99, 4.0, 7 and inf (clamped)
    assert hist.counts.tolist() == [3, 1, 0, 4]
    assert (hist.num_nan, hist.num_below, hist.num_above, hist.num_samples) == (2, 1, 2, 8)


def test_fraction_and_budget_thresholds_on_a_known_histogram():
    # Prepare: bins [0,1) .. [4,5] hold 10, 20, 30, 25, 15 samples (N = 100)
    edges, counts = bin_edges(0.0, 5.0, 5), np.array([10, 20, 30, 25, 15])

    # Execute / Assert: kept by edge 1..4 is 90, 70, 40, 15
    assert threshold_for_fraction(counts, edges, 0.40) == 3.0  # keeps exactly 40
    assert threshold_for_fraction(counts, edges, 0.50) == 3.0  # at most 50 -> 40
    assert threshold_for_fraction(counts, edges, 0.50, rounding="nearest") == 3.0  # |40-50| < |70-50|
    assert threshold_for_fraction(counts, edges, 0.60, rounding="nearest") == 2.0  # |70-60| < |40-60|
    assert threshold_for_fraction(counts, edges, 1.0) == -math.inf
    assert threshold_for_fraction(counts, edges, 0.0) == math.inf
    assert threshold_for_budget(counts, edges, 15) == 4.0
    assert threshold_for_budget(counts, edges, 14) == math.inf
    assert threshold_for_budget(counts, edges, 1000) == -math.inf
    assert threshold_for_fraction(np.full(100, 1), bin_edges(0, 1, 100), 0.29) == pytest.approx(0.71)


def test_summed_site_histograms_give_the_pooled_threshold_and_sites_keep_what_the_server_expects():
    # Prepare
    rng = np.random.default_rng(0)
    sites = [rng.normal(mu, 1.0, n) for mu, n in [(0.0, 300), (1.0, 500), (-0.5, 200)]]
    edges = bin_edges(*merge_ranges([(s.min(), s.max()) for s in sites]), 256)

    # Execute
    total = sum_histograms([site_histogram(s, edges) for s in sites])
    pooled = site_histogram(np.concatenate(sites), edges)
    t = threshold_for_fraction(total.counts, edges, 0.3)

    # Assert
    assert total.counts.tolist() == pooled.counts.tolist()
    assert t == threshold_for_fraction(pooled.counts, edges, 0.3)
    kept = sum(int(keep_mask(s, t).sum()) for s in sites)
    assert kept == kept_by_threshold(total.counts, edges, t)
    assert 300 - total.counts.max() < kept <= 300


def test_sum_histograms_rejects_different_grids():
    # Prepare
    a, b = site_histogram([0.1], bin_edges(0, 1, 4)), site_histogram([0.1], bin_edges(0, 1, 8))

    # Execute / Assert
    with pytest.raises(ValueError, match="different numbers of bins"):
        sum_histograms([a, b])


def test_clues_threshold_is_the_mean_finite_anchor_score():
    # Execute / Assert
    assert clues_threshold([1.0, 2.0, 6.0, math.nan]) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="no finite anchor"):
        clues_threshold([math.nan])


def test_local_thresholds_keep_each_sites_top_fraction():
    # Prepare
    site_scores = {"a": [5.0, 1.0, 3.0, 2.0, math.nan], "b": [0.1, 0.2], "c": []}

    # Execute
    t = local_thresholds(site_scores, 0.5)

    # Assert
    assert t == {"a": 3.0, "b": 0.2, "c": math.inf}
    assert keep_mask(site_scores["a"], t["a"]).tolist() == [True, False, True, False, False]
    assert not keep_mask([math.inf], math.inf).any()


@settings(max_examples=200, deadline=None)
@given(scores=st.lists(st.floats(-10, 10) | st.sampled_from([math.nan, -math.inf, math.inf]), max_size=200),
       bins=st.integers(1, 64), fraction=st.floats(0.0, 1.0), budget=st.integers(0, 250),
       rounding=st.sampled_from(["at-most", "nearest"]))
def test_kept_count_is_within_one_bin_of_the_target(scores, bins, fraction, budget, rounding):
    # Prepare
    edges = bin_edges(-5.0, 5.0, bins)  # part of the scores falls outside and is clamped
    hist = site_histogram(scores, edges)
    n, widest = hist.num_samples, int(hist.counts.max(initial=0))

    for target, t in [(fraction * n, threshold_for_fraction(hist.counts, edges, fraction, rounding)),
                      (budget, threshold_for_budget(hist.counts, edges, budget, rounding))]:
        # Execute
        kept = int(keep_mask(scores, t).sum())

        # Assert: sites keep what the server computed, and that is within one bin of the target
        assert kept == kept_by_threshold(hist.counts, edges, t)
        if rounding == "at-most":
            assert min(target, n) - widest < kept <= target + 1e-9 or kept == min(target, n)
        else:
            assert abs(kept - min(target, n)) <= widest / 2 + 1e-9
