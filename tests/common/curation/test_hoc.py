"""HOC: integer consensus counts, their additivity across sites, and the T / p solve."""

import logging

import numpy as np
import pytest
import torch

from fedcurate.common.config import CurationConfig
from fedcurate.common.curation.ds2 import site_counts
from fedcurate.common.curation.hoc import (
    ConsensusCounts,
    consensus_counts,
    hoc_loss_and_grad,
    solve_hoc,
    sum_counts,
)
from fedcurate.common.curation.knn import candidate_neighbours, subsample_knn
from fedcurate.simulations.raters import clusterable_data, corrupt_scores, transition_matrix_from_diagonal

DIAG = [0.6, 0.55, 0.65, 0.5, 0.7, 0.6]
PRIOR = np.array([0.1, 0.15, 0.25, 0.25, 0.15, 0.1])


def _exact_counts(T: np.ndarray, p: np.ndarray, scale: float = 1e7) -> ConsensusCounts:
    third = np.round(np.einsum("i,ia,ib,ic->abc", p, T, T, T) * scale).astype(np.int64)
    return ConsensusCounts(third.sum((1, 2)), third.sum(2), third, int(third.sum()))


def test_counts_are_integer_pattern_counts():
    # Prepare: labels of ids 0..3 and two rounds of (self, nn1, nn2)
    labels = np.array([0, 1, 1, 2])
    rounds = [np.array([[0, 1, 2], [1, 2, 0]]), np.array([[3, 2, 1], [0, 1, 2]])]
    # Execute
    counts = consensus_counts(labels, rounds, 3)
    # Assert
    assert counts.rows == 4
    assert counts.third[0, 1, 1] == 2 and counts.third[1, 1, 0] == 1 and counts.third[2, 1, 1] == 1
    assert counts.third.sum() == 4
    assert counts.second.tolist() == [[0, 2, 0], [0, 1, 0], [0, 1, 0]]
    assert counts.first.tolist() == [2, 1, 1]


def test_summed_site_counts_equal_counts_of_the_pooled_site_graphs():
    # Prepare: three sites, each with its own kNN rounds
    rng = np.random.default_rng(0)
    sites, rounds_by_site = [], []
    for n in (150, 220, 90):
        emb, _ = clusterable_data(n, 4, 16, seed=n)
        labels = rng.integers(0, 4, n)
        cand = candidate_neighbours(emb, 40, progress=False)
        rounds = [subsample_knn(emb, cand, np.sort(rng.choice(n, n // 2, replace=False)), 3).idx
                  for _ in range(3)]
        sites.append(labels)
        rounds_by_site.append(rounds)
    # Execute
    summed = sum_counts([consensus_counts(lab, r, 4) for lab, r in zip(sites, rounds_by_site, strict=True)])
    offsets = np.cumsum([0] + [lab.size for lab in sites[:-1]])
    pooled = consensus_counts(np.concatenate(sites),
                              [r + off for rs, off in zip(rounds_by_site, offsets, strict=True) for r in rs], 4)
    # Assert
    assert summed.rows == pooled.rows == sum(3 * (lab.size // 2) for lab in sites)
    assert (summed.third == pooled.third).all()
    assert (summed.first == pooled.first).all()


def test_counts_round_trip_through_a_message():
    # Prepare
    counts = _exact_counts(transition_matrix_from_diagonal(DIAG), PRIOR, 1e4)
    # Execute
    back = ConsensusCounts.from_dict(counts.to_dict())
    # Assert
    assert back.rows == counts.rows and (back.third == counts.third).all() and (back.second == counts.second).all()


def test_sum_counts_rejects_mismatched_classes_and_empty_input():
    # Prepare
    a, b = _exact_counts(np.eye(3), np.ones(3) / 3, 10), _exact_counts(np.eye(4), np.ones(4) / 4, 10)
    # Execute / Assert
    with pytest.raises(ValueError, match="disagree"):
        sum_counts([a, b])
    with pytest.raises(ValueError, match="at least one"):
        sum_counts([])


def test_analytic_gradient_matches_autograd():
    # Prepare
    rng = np.random.default_rng(1)
    U, v = rng.normal(size=(6, 6)), rng.normal(size=6)
    m3 = rng.random((6, 6, 6))
    m3 /= m3.sum()
    moments = (m3.sum((1, 2)), m3.sum(2), m3)
    # Execute
    loss, dU, dv = hoc_loss_and_grad(U, v, moments)
    # Assert
    Ut, vt = torch.tensor(U, requires_grad=True), torch.tensor(v, requires_grad=True)
    T, p = torch.softmax(Ut, 1), torch.softmax(vt, 0)
    c = (p @ T, T.T @ torch.diag(p) @ T, torch.einsum("i,ia,ib,ic->abc", p, T, T, T))
    ref = sum(torch.linalg.norm(ci - torch.tensor(mi)) for ci, mi in zip(c, moments, strict=True))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(dU, Ut.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(dv, vt.grad.numpy(), atol=1e-12)


def test_solve_recovers_T_from_exact_moments_and_returns_the_best_iterate():
    # Prepare
    T = transition_matrix_from_diagonal(DIAG)
    counts = _exact_counts(T, PRIOR)
    # Execute
    best = solve_hoc(counts, CurationConfig())
    last = solve_hoc(counts, CurationConfig(compat_last_iterate=True))
    # Assert
    assert np.abs(best.T - T).mean() < 0.005
    assert np.abs(best.p - PRIOR).max() < 0.01
    assert best.best_step < best.steps == 1500
    assert last.best_step == 1500
    assert best.loss <= last.loss
    np.testing.assert_allclose(best.T.sum(1), 1.0)


def test_solve_is_seeded():
    # Prepare
    counts = _exact_counts(transition_matrix_from_diagonal(DIAG), PRIOR)
    cfg = CurationConfig(hoc_steps=200)
    # Execute
    a, b = solve_hoc(counts, cfg), solve_hoc(counts, cfg)
    # Assert
    assert (a.T == b.T).all()


def test_absent_score_class_is_solved_with_a_warning(caplog):
    # Prepare: no sample is rated 5
    T = transition_matrix_from_diagonal(DIAG)
    T[:, 4] += T[:, 5]
    T[:, 5] = 0.0
    counts = _exact_counts(T, PRIOR)
    # Execute
    with caplog.at_level(logging.WARNING):
        est = solve_hoc(counts, CurationConfig(hoc_steps=500))
    # Assert
    assert "[5] never occur" in caplog.text
    assert np.isfinite(est.T).all()
    np.testing.assert_allclose(est.T.sum(1), 1.0)
    assert est.T[:5, 5].max() < 0.05


def test_empty_counts_are_rejected():
    # Prepare
    empty = ConsensusCounts(np.zeros(3, np.int64), np.zeros((3, 3), np.int64), np.zeros((3, 3, 3), np.int64), 0)
    # Execute / Assert
    with pytest.raises(ValueError, match="rows = 0"):
        solve_hoc(empty, CurationConfig(num_classes=3))


def _rated_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    emb, true = clusterable_data(n, 6, 384, seed=seed)
    T = transition_matrix_from_diagonal(DIAG)
    return emb, true, corrupt_scores(true, T, seed=seed + 1), T


def test_T_is_recovered_on_clusterable_data_at_5k():
    # Prepare
    emb, _, raw, T = _rated_data(5000, 0)
    # Execute
    est = solve_hoc(site_counts(emb, raw, CurationConfig(), progress=False), CurationConfig())
    # Assert
    mae = np.abs(est.T - T).mean()
    print(f"T MAE at N=5000: {mae:.4f}")
    assert mae <= 0.03


def test_four_site_sum_matches_the_pooled_estimate():
    # Prepare: one pool of 8k split into 4 iid sites
    emb, _, raw, T = _rated_data(8000, 3)
    cfg = CurationConfig(hoc_rounds=20)
    parts = np.array_split(np.random.default_rng(0).permutation(8000), 4)
    # Execute
    federated = solve_hoc(sum_counts([site_counts(emb[p], raw[p], cfg, progress=False) for p in parts]), cfg)
    pooled = solve_hoc(site_counts(emb, raw, cfg, progress=False), cfg)
    # Assert
    gap = np.abs(federated.T - pooled.T)
    print(f"|T_4sites - T_pooled|: mean {gap.mean():.4f}, max {gap.max():.4f}; "
          f"MAE vs truth {np.abs(federated.T - T).mean():.4f} (pooled {np.abs(pooled.T - T).mean():.4f})")
    assert gap.mean() <= 0.03  # per entry; sites of 2k have sparser local graphs than the pool of 8k
    assert np.abs(federated.T - T).mean() <= 0.03
