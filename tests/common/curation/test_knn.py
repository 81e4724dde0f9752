"""Candidate lists and kNN within subsamples: order, equality with brute force, fallback, twins."""

import numpy as np
import pytest

from fedcurate.common.curation.knn import (
    candidate_neighbours,
    candidates_needed,
    load_candidates,
    save_candidates,
    subsample_knn,
)
from fedcurate.simulations.raters import clusterable_data


def _unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_within(emb: np.ndarray, members: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: per member, all members ranked by (same id first, similarity desc, lower id)."""
    idx, sims = [], []
    for own in members:
        s = emb[members] @ emb[own]
        key = [(0 if j == own else 1, -float(s[p]), int(j)) for p, j in enumerate(members)]
        order = sorted(range(members.size), key=lambda p: key[p])[:k]
        idx.append(members[order])
        sims.append(np.where(members[order] == own, 1.0, s[order]))
    return np.array(idx), np.array(sims, dtype=np.float32)


def test_candidates_put_self_first_then_ties_by_lower_index():
    # Prepare: rows 1, 4 and 6 are exact duplicates
    emb = _unit_rows(40, 8, 0)
    emb[4] = emb[1]
    emb[6] = emb[1]
    # Execute
    cand = candidate_neighbours(emb, 10, progress=False)
    # Assert
    assert (cand.idx[:, 0] == np.arange(40)).all()
    assert (cand.sims[:, 0] == 1.0).all()
    assert cand.idx[4, :3].tolist() == [4, 1, 6]
    assert cand.idx[6, :3].tolist() == [6, 1, 4]
    assert (np.diff(cand.sims[:, 1:], axis=1) <= 0).all()


def test_subsample_knn_equals_brute_force_without_fallback():
    # Prepare
    emb = _unit_rows(300, 16, 1)
    cand = candidate_neighbours(emb, 300, progress=False)
    members = np.sort(np.random.default_rng(2).choice(300, 200, replace=False))
    # Execute
    got = subsample_knn(emb, cand, members, 10)
    # Assert
    want_idx, want_sims = _brute_within(emb, members, 10)
    assert got.fallback == 0
    assert (got.idx == want_idx).all()
    np.testing.assert_allclose(got.sims, want_sims, atol=1e-5)


def test_short_candidate_lists_fall_back_to_exact_brute_force():
    # Prepare: 12 candidates and a 10% subsample, so most members have < 10 candidates inside it
    emb = _unit_rows(600, 16, 3)
    cand = candidate_neighbours(emb, 12, progress=False)
    members = np.sort(np.random.default_rng(4).choice(600, 60, replace=False))
    # Execute
    got = subsample_knn(emb, cand, members, 10)
    # Assert
    want_idx, want_sims = _brute_within(emb, members, 10)
    assert got.fallback > 30
    assert (got.idx == want_idx).all()
    np.testing.assert_allclose(got.sims, want_sims, atol=1e-5)


def test_a_sample_drawn_twice_has_its_twin_next_to_itself():
    # Prepare: the duplicated-rows mode draws ids with repetition
    emb = _unit_rows(200, 16, 5)
    cand = candidate_neighbours(emb, 200, progress=False)
    members = np.sort(np.concatenate([np.arange(0, 120), np.arange(0, 40)]))
    # Execute
    got = subsample_knn(emb, cand, members, 5)
    # Assert
    twice = members < 40
    assert (got.idx[twice, 0] == members[twice]).all()
    assert (got.idx[twice, 1] == members[twice]).all()
    assert (got.sims[twice, :2] == 1.0).all()
    want_idx, _ = _brute_within(emb, members, 5)
    assert (got.idx == want_idx).all()


def test_subsample_smaller_than_k_is_rejected():
    # Prepare
    emb = _unit_rows(20, 4, 6)
    cand = candidate_neighbours(emb, 10, progress=False)
    # Execute / Assert
    with pytest.raises(ValueError, match="subsample of 5 rows cannot give 10"):
        subsample_knn(emb, cand, np.arange(5), 10)


def test_candidates_needed_grows_as_the_subsample_share_falls():
    # Execute
    dense, sparse = candidates_needed(50_000, 45_000, 10), candidates_needed(300_000, 50_000, 10)
    # Assert
    assert 10 <= dense < 20
    assert 100 < sparse < 160
    assert candidates_needed(100, 100, 10) == 10


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_approximate_indexes_find_nearly_all_exact_neighbours(index):
    # Prepare
    emb, _ = clusterable_data(3000, 6, 32, seed=0)
    exact = candidate_neighbours(emb, 20, progress=False)
    # Execute
    approx = candidate_neighbours(emb, 20, index=index, progress=False)
    # Assert
    recall = np.mean([np.intersect1d(a[:10], e[:10]).size / 10 for a, e in zip(approx.idx, exact.idx, strict=True)])
    assert recall > 0.95
    assert (approx.idx[:, 0] == np.arange(3000)).all()


def test_candidates_survive_a_round_trip_to_disk(tmp_path):
    # Prepare
    cand = candidate_neighbours(_unit_rows(50, 8, 7), 10, progress=False)
    # Execute
    save_candidates(tmp_path / "cand.npz", cand)
    back = load_candidates(tmp_path / "cand.npz")
    # Assert
    assert (back.idx == cand.idx).all() and (back.sims == cand.sims).all()
