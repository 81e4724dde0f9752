"""Long-tail score: formula, rounding, duplicated-rows mode, guard, and rarity ordering."""

import numpy as np
import pytest

from fedcurate.common.curation.knn import Candidates, candidate_neighbours
from fedcurate.common.curation.longtail import longtail_scores


def _cands(sims: list[list[float]]) -> Candidates:
    s = np.array(sims, dtype=np.float32)
    return Candidates(np.tile(np.arange(s.shape[1]), (s.shape[0], 1)), s)


def test_score_is_tanh_of_half_the_mean_distance_including_self():
    # Prepare: distances 0 (self), 0.2, 0.4, 0.6
    cand = _cands([[1.0, 0.8, 0.6, 0.4]] * 4)
    # Execute
    lt = longtail_scores(cand, k=4)
    # Assert
    assert lt[0] == pytest.approx(round(np.tanh(0.3 / 2), 4), abs=1e-12)
    assert lt[0] == round(lt[0], 4)


def test_duplicated_rows_mode_counts_the_twin_as_a_zero_distance():
    # Prepare
    cand = _cands([[1.0, 0.8, 0.6, 0.4]] * 4)
    # Execute
    lt = longtail_scores(cand, k=4, duplicate=True)
    # Assert: distances 0, 0 (twin), 0.2, 0.4
    assert lt[0] == pytest.approx(round(np.tanh(0.15 / 2), 4), abs=1e-12)


def test_too_few_samples_are_rejected():
    # Execute / Assert
    with pytest.raises(ValueError, match="N = 3 samples"):
        longtail_scores(_cands([[1.0, 0.5, 0.2]] * 3), k=10)


def test_an_isolated_sample_scores_higher_than_a_clustered_one():
    # Prepare: 50 points near one direction and one point far away
    rng = np.random.default_rng(0)
    x = np.tile([1.0, 0.0, 0.0, 0.0], (51, 1)) + 0.05 * rng.standard_normal((51, 4))
    x[50] = [0.0, 0.0, 1.0, 0.0]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    # Execute
    lt = longtail_scores(candidate_neighbours(x.astype(np.float32), 10, progress=False), k=10)
    # Assert
    assert lt[50] > 0.3 > lt[:50].max()
