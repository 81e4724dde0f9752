"""SimiFeat-rank: noise rates, one epoch's votes and flags, aggregation, curated scores, guards."""

import numpy as np
import pytest

from fedcurate.common.config import CurationConfig
from fedcurate.common.curation.ds2 import site_candidates
from fedcurate.common.curation.simifeat import _aggregate, curated_scores, detect, epoch_flags, noise_rates
from fedcurate.simulations.raters import clusterable_data, corrupt_scores, transition_matrix_from_diagonal


def test_noise_rates_clip_only_the_extremes():
    # Prepare: posteriors T_cc p_c / p~_c of 0.6, 1.5 (> 1), 0 and 0.99; class 4 never rated
    T = np.diag([0.6, 0.75, 0.0, 0.99, 0.5])
    p = np.array([0.2, 0.2, 0.2, 0.2, 0.2])
    noisy = np.array([0.2, 0.1, 0.3, 0.2, 0.0])
    # Execute
    r = noise_rates(T, p, noisy)
    # Assert
    np.testing.assert_allclose(r[:4], [0.4, 0.05, 0.95, 0.01])
    assert np.isnan(r[4])


def test_one_epoch_votes_with_the_replaced_self_distance():
    # Prepare: member 0 (rated 0) has neighbours rated 1, 1, 0; member 1 (rated 1) has 1, 1, 1
    nbr = np.array([[0, 1, 2, 3], [1, 2, 1, 2]])
    sims = np.array([[1.0, 0.8, 0.7, 0.55], [1.0, 0.9, 0.9, 0.9]], dtype=np.float32)
    labels = np.array([0, 1, 1, 0])
    rates = np.array([0.5, 0.5])
    # Execute
    flagged, suggestion = epoch_flags(nbr, sims, labels, labels[:2], rates)
    # Assert: d0 = 2*0.2 - 0.3 = 0.1, so member 0 votes class 0: 0.9 + 0.55 < class 1: 0.8 + 0.7
    # (with the raw self distance 0 it would be 1 + 0.55 > 1.5)
    assert suggestion.tolist() == [1, 1]
    assert flagged.tolist() == [True, True]  # one member per class: the 50th percentile is its own sigma


def test_a_class_absent_from_the_subsample_is_skipped():
    # Prepare: rates for 3 classes, members only rated 0
    nbr = np.array([[0, 1, 2], [1, 0, 2], [2, 1, 0]])
    sims = np.full((3, 3), 0.9, dtype=np.float32)
    labels = np.array([0, 0, 0])
    # Execute
    flagged, _ = epoch_flags(nbr, sims, labels, labels, np.array([0.3, 0.3, 0.3]))
    # Assert
    assert flagged.shape == (3,)


def test_aggregation_smooths_flags_and_masks_the_own_score():
    # Prepare: sample 0 flagged 8 of 8 times towards 2; sample 1 flagged 3 of 4 (eta 0.67); sample 2
    # 1 of 2 (eta exactly 0.5, not an error); sample 3 unrated
    labels = np.array([0, 1, 1, -1])
    t, f = np.array([8, 4, 2, 0]), np.array([8, 3, 1, 0])
    s = np.zeros((4, 3), dtype=np.int64)
    s[0, 2], s[1, 1], s[1, 0], s[2, 0] = 8, 2, 1, 1
    # Execute
    det = _aggregate(labels, t, f, s, np.full(3, 0.3), 0)
    # Assert
    assert det.flagged.tolist() == [True, True, False, False]
    assert det.eta[0] == pytest.approx(0.9) and det.eta[2] == 0.5 and np.isnan(det.eta[3])
    assert det.suggested.tolist() == [2, 0, 0, -1]  # sample 1's own class 1 is masked
    assert det.confidence[0] == pytest.approx(0.9 * 9 / 11)
    assert det.confidence[1] == pytest.approx((2 / 6) * (4 / 6))


def test_curated_scores_change_only_confident_flags():
    # Prepare
    raw = np.array([0.0, 1.0, 2.0, np.nan])
    det = _aggregate(np.array([0, 1, 2, -1]), np.array([8, 8, 8, 0]), np.array([8, 8, 1, 0]),
                     np.array([[0, 8, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]), np.full(3, 0.3), 0)
    # Execute
    out = curated_scores(raw, det, theta=0.5)
    # Assert: sample 0 is sure (kappa 0.74), sample 1 has no consistent suggestion (kappa 0.3)
    assert out[:3].tolist() == [1.0, 1.0, 2.0]
    assert np.isnan(out[3])


def test_detection_finds_corrupted_scores_and_ignores_unrated_samples():
    # Prepare
    emb, true = clusterable_data(3000, 6, 384, seed=0)
    T = transition_matrix_from_diagonal([0.6, 0.55, 0.65, 0.5, 0.7, 0.6])
    raw = corrupt_scores(true, T, seed=1).astype(float)
    raw[:50] = np.nan
    cfg = CurationConfig(detect_epochs=11)
    # Execute
    prior = np.bincount(true, minlength=6) / true.size
    det = detect(emb, raw, T, prior, cfg, site_candidates(emb, raw, cfg, progress=False), progress=False)
    # Assert
    wrong = (raw != true)[50:]
    hit = det.flagged[50:]
    precision, recall = (hit & wrong).sum() / hit.sum(), (hit & wrong).sum() / wrong.sum()
    print(f"precision {precision:.3f} recall {recall:.3f}")
    assert precision > 0.7 and recall > 0.7
    assert det.excluded == 50 and not det.flagged[:50].any() and np.isnan(det.eta[:50]).all()
    assert (det.suggested[50:] != raw[50:]).all()


def test_too_few_samples_name_N_and_the_minimum():
    # Prepare
    emb, true = clusterable_data(9, 6, 8, seed=0)
    cfg = CurationConfig()
    # Execute / Assert
    with pytest.raises(ValueError, match=r"N = 9 samples .* m = 8: need at least 12 rated samples"):
        detect(emb, true.astype(float), np.eye(6), np.full(6, 1 / 6), cfg,
               site_candidates(emb, true, cfg, progress=False), progress=False)


def test_a_transition_matrix_of_the_wrong_size_is_rejected():
    # Prepare
    emb, true = clusterable_data(200, 6, 8, seed=0)
    cfg = CurationConfig()
    # Execute / Assert
    with pytest.raises(ValueError, match="T must be 6x6"):
        detect(emb, true, np.eye(5), np.full(5, 0.2), cfg, site_candidates(emb, true, cfg, progress=False))
