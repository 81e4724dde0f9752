"""Selection by fraction, count and threshold; orientation, NaN handling, deterministic ties."""

import math

import numpy as np
import pytest

from fedcurate.common.config import SelectionConfig
from fedcurate.common.selection import OUTSIDE_BUDGET, budget, orient, rank, select


def test_fraction_keeps_the_best_and_names_reasons():
    # Prepare
    scores = orient([0.1, 0.9, math.nan, 0.5, 0.7], higher_is_better=True)
    # Execute
    sel = select(scores, SelectionConfig(mode="fraction", fraction=0.4), ["", "", "ifd >= 1", "", ""])
    # Assert
    assert sel.keep.tolist() == [False, True, False, False, True]
    assert sel.reasons[2] == "score failed: ifd >= 1"
    assert sel.reasons[0] == OUTSIDE_BUDGET
    assert sel.dropped_by_reason() == {"score failed: ifd >= 1": 1, OUTSIDE_BUDGET: 2}
    assert sel.threshold == pytest.approx(0.7)


def test_lower_is_better_is_oriented():
    # Execute
    sel = select(orient([3.0, 1.0, 2.0], higher_is_better=False), SelectionConfig(mode="count", count=1))
    # Assert
    assert sel.keep.tolist() == [False, True, False]


def test_threshold_mode_never_keeps_nan():
    # Execute
    sel = select(np.array([0.2, math.nan, 0.8]), SelectionConfig(mode="threshold", threshold=0.5))
    # Assert
    assert sel.keep.tolist() == [False, False, True]
    assert sel.reasons == ["below threshold", "score failed: nan", ""]


def test_ties_keep_input_order_and_budget_caps():
    # Assert
    assert rank(np.array([1.0, 2.0, 2.0, math.nan, 1.0])).tolist() == [1, 2, 0, 4]
    assert budget(10, SelectionConfig(mode="count", count=50)) == 10
    assert budget(10, SelectionConfig(mode="fraction", fraction=0.3)) == 3
