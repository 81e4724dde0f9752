"""Simulated raters and clusterable embeddings."""

import numpy as np
import pytest

from fedcurate.simulations.raters import (
    DS2_RATER_DIAGONALS,
    clusterable_data,
    corrupt_scores,
    transition_matrix_from_diagonal,
)


def test_transition_matrix_keeps_the_diagonal_and_decays_with_distance():
    # Execute
    T = transition_matrix_from_diagonal([0.6, 0.5, 0.7], decay=0.5)
    # Assert
    np.testing.assert_allclose(T.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.diag(T), [0.6, 0.5, 0.7])
    assert T[0, 1] == pytest.approx(2 * T[0, 2])  # weights 1 and 0.5
    assert T[1, 0] == pytest.approx(T[1, 2])


def test_seeded_transition_matrix_is_irregular_but_reproducible():
    # Execute
    a = transition_matrix_from_diagonal([0.6] * 6, seed=1)
    b = transition_matrix_from_diagonal([0.6] * 6, seed=1)
    # Assert
    assert (a == b).all()
    assert not np.allclose(a, transition_matrix_from_diagonal([0.6] * 6))
    np.testing.assert_allclose(a.sum(axis=1), 1.0)


def test_bad_diagonal_is_rejected():
    # Execute / Assert
    with pytest.raises(ValueError, match="diagonal"):
        transition_matrix_from_diagonal([0.5, 1.2])


def test_presets_are_the_paper_diagonals():
    # Assert
    assert set(DS2_RATER_DIAGONALS) == {"gpt-4o-mini", "llama-3.1-8b", "mistral-7b"}
    assert DS2_RATER_DIAGONALS["gpt-4o-mini"] == [0.61, 0.55, 0.57, 0.55, 0.66, 0.02]
    for diag in DS2_RATER_DIAGONALS.values():
        T = transition_matrix_from_diagonal(diag)
        np.testing.assert_allclose(T.sum(axis=1), 1.0)


def test_corrupted_scores_follow_T():
    # Prepare
    T = transition_matrix_from_diagonal([0.6, 0.55, 0.65, 0.5, 0.7, 0.6])
    true = np.repeat(np.arange(6), 40_000)
    # Execute
    rated = corrupt_scores(true, T, seed=0)
    # Assert
    confusion = np.zeros((6, 6))
    np.add.at(confusion, (true, rated), 1)
    np.testing.assert_allclose(confusion / 40_000, T, atol=0.01)
    assert (corrupt_scores(true, T, seed=0) == rated).all()


def test_clusterable_data_puts_same_score_samples_next_to_each_other():
    # Execute
    emb, true = clusterable_data(3000, 6, 384, seed=0)
    # Assert
    assert emb.shape == (3000, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    purity = (true[sims.argmax(axis=1)] == true).mean()
    assert purity > 0.9
    np.testing.assert_allclose(np.bincount(true) / 3000, [0.1, 0.15, 0.25, 0.25, 0.15, 0.1], atol=0.03)
