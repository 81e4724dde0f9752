"""The threshold phase's histogram maths: bin grid, interval histograms that add up over sites, the cut."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcurate.common.protocol.histogram import (
    bin_edges,
    find_cut,
    interval_histogram,
    keep_mask,
    kept_by_threshold,
    merge_ranges,
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


def test_interval_histogram_counts_inside_outside_and_nan():
    # Prepare
    edges = bin_edges(0.0, 1.0, 4)
    scores = [0.1, 0.3, 0.3, 1.0, 1.5, -0.2, math.nan, math.inf, -math.inf]

    # Execute
    closed, half_open = interval_histogram(scores, edges, closed=True), interval_histogram(scores, edges, False)

    # Assert: 1.0 is inside a closed interval, above a half-open one; nothing is clamped
    assert closed["counts"].tolist() == [1, 2, 0, 1]
    assert (closed["num-above"], closed["num-below"], closed["num-nan"]) == (2, 2, 1)
    assert half_open["counts"].tolist() == [1, 2, 0, 0] and half_open["num-above"] == 3
    assert (closed["inside-min"], closed["inside-max"]) == (0.1, 1.0)


def test_summed_site_histograms_are_the_pooled_histogram_and_the_cut_keeps_what_the_server_expects():
    # Prepare
    rng = np.random.default_rng(0)
    sites = [rng.normal(mu, 1.0, n) for mu, n in [(0.0, 300), (1.0, 500), (-0.5, 200)]]
    edges = bin_edges(*merge_ranges([(s.min(), s.max()) for s in sites]), 256)

    # Execute
    hists = [interval_histogram(s, edges, closed=True) for s in sites]
    total = np.sum([h["counts"] for h in hists], axis=0)
    pooled = interval_histogram(np.concatenate(sites), edges, closed=True)
    cut = find_cut(total, sum(h["num-above"] for h in hists), edges, True, 300, can_refine=False)

    # Assert
    assert total.tolist() == pooled["counts"].tolist()
    kept = sum(int(keep_mask(s, cut.threshold).sum()) for s in sites)
    assert kept == cut.kept == kept_by_threshold(total, edges, cut.threshold)
    assert 300 - total.max() < kept <= 300


def test_keep_mask_never_keeps_nan_and_inf_threshold_keeps_none():
    # Execute / Assert
    assert keep_mask([5.0, 1.0, 3.0, math.nan], 3.0).tolist() == [True, False, True, False]
    assert not keep_mask([math.inf], math.inf).any()
    assert keep_mask([-math.inf, 0.0], -math.inf).tolist() == [True, True]


@settings(max_examples=200, deadline=None)
@given(scores=st.lists(st.floats(-10, 10) | st.sampled_from([math.nan, -math.inf, math.inf]), max_size=200),
       bins=st.integers(1, 64), target=st.integers(0, 250))
def test_refined_cut_keeps_exactly_what_the_server_counted_and_never_more_than_the_target(scores, bins, target):
    # Prepare: the loop the server runs (`server/phases/threshold.refine`), on one site's scores
    edges, closed = bin_edges(-5.0, 5.0, bins), True
    for rounds in range(8):
        hist = interval_histogram(scores, edges, closed)

        # Execute
        cut = find_cut(hist["counts"], hist["num-above"], edges, closed, target, can_refine=rounds < 7)
        if cut.threshold is not None:
            break
        edges, closed = bin_edges(cut.next.lo, cut.next.hi, bins), cut.next.closed

    # Assert
    kept = int(keep_mask(scores, cut.threshold).sum())
    assert kept == cut.kept <= target
