"""The DS2 site pipeline: federated == centralized, quality vs the reference settings, selection, guards."""

import numpy as np
import pytest

from fedcurate.common.config import CurationConfig
from fedcurate.common.curation.ds2 import (
    curate,
    curate_centralized,
    ds2_select,
    ds2_select_without_curation,
    site_counts,
)
from fedcurate.common.curation.hoc import solve_hoc, sum_counts
from fedcurate.simulations.raters import clusterable_data, corrupt_scores, transition_matrix_from_diagonal

T_TRUE = transition_matrix_from_diagonal([0.6, 0.55, 0.65, 0.5, 0.7, 0.6])


@pytest.fixture(scope="module")
def data():
    emb, true = clusterable_data(5000, 6, 384, seed=0)
    return emb, true, corrupt_scores(true, T_TRUE, seed=1)


def _quality(hoc, result, true, raw):
    wrong, hit = raw != true, result.detection.flagged
    precision, recall = (hit & wrong).sum() / max(hit.sum(), 1), (hit & wrong).sum() / wrong.sum()
    return {"T_mae": float(np.abs(hoc.T - T_TRUE).mean()), "acc": float((result.curated == true).mean()),
            "f1": float(2 * precision * recall / max(precision + recall, 1e-12))}


def test_one_site_federation_is_exactly_centralized_ds2(data):
    # Prepare
    emb, _, raw = data
    cfg = CurationConfig(hoc_rounds=10, detect_epochs=5)
    # Execute
    hoc_c, central = curate_centralized(emb, raw, cfg, progress=False)
    hoc_f = solve_hoc(sum_counts([site_counts(emb, raw, cfg, progress=False)]), cfg)
    federated = curate(emb, raw, hoc_f.T, hoc_f.p, cfg, progress=False)
    # Assert
    assert (hoc_f.T == hoc_c.T).all() and (hoc_f.p == hoc_c.p).all()
    assert (federated.curated == central.curated).all()
    assert (federated.detection.eta == central.detection.eta).all()
    assert (federated.longtail == central.longtail).all()


def test_defaults_beat_the_reference_settings_and_raise_accuracy(data):
    # Prepare
    emb, true, raw = data
    compat = CurationConfig(compat_duplicate=True, compat_last_iterate=True)
    # Execute
    ours = _quality(*curate_centralized(emb, raw, CurationConfig(), progress=False), true, raw)
    ref = _quality(*curate_centralized(emb, raw, compat, progress=False), true, raw)
    # Assert
    print(f"N=5000 default {ours}, reference-compatible {ref}, raw acc {(raw == true).mean():.4f}")
    assert ours["T_mae"] < ref["T_mae"] and ours["acc"] > ref["acc"] and ours["f1"] > ref["f1"]
    assert ours["T_mae"] <= 0.03
    assert ours["acc"] >= (raw == true).mean() + 0.08


def test_selection_takes_whole_buckets_then_the_rarest_of_the_boundary_bucket():
    # Prepare
    curated = np.array([5, 3, 4, 3, np.nan, 3, 4, 3])
    longtail = np.array([0.1, 0.2, 0.1, 0.9, 0.9, 0.2, 0.3, 0.5])
    # Execute
    picked = ds2_select(curated, longtail, 5)
    # Assert: bucket 5 ({0}), bucket 4 ({2, 6}), then 3 by LT desc: 3 (0.9), 7 (0.5); 1 and 5 tie at 0.2
    assert picked.tolist() == [0, 2, 6, 3, 7]
    assert ds2_select(curated, longtail, 6).tolist() == [0, 2, 6, 3, 7, 1]
    assert sorted(ds2_select(curated, longtail, 100).tolist()) == [0, 1, 2, 3, 5, 6, 7]
    assert ds2_select(curated, longtail, 0).size == 0


def test_without_curation_selects_on_raw_scores(data):
    # Prepare
    emb, true, raw = data
    cfg = CurationConfig(hoc_rounds=10)  # theta = 0.5 needs many epochs: kappa <= 0.47 with 5
    _, result = curate_centralized(emb, raw, cfg, progress=False)
    # Execute
    plain = ds2_select_without_curation(result.raw, result.longtail, 1000)
    cured = ds2_select(result.curated, result.longtail, 1000)
    # Assert: curation moves truly better samples into the budget
    assert (plain == ds2_select(raw.astype(float), result.longtail, 1000)).all()
    assert true[cured].mean() > true[plain].mean() + 0.2


def test_nan_ratings_are_excluded_but_still_get_a_longtail_score(data):
    # Prepare
    emb, _, raw = data
    scores = raw.astype(float)
    scores[::10] = np.nan
    cfg = CurationConfig(hoc_rounds=5, detect_epochs=5)
    # Execute
    hoc, result = curate_centralized(emb, scores, cfg, progress=False)
    # Assert
    assert result.detection.excluded == 500
    assert np.isnan(result.curated[::10]).all() and not result.detection.flagged[::10].any()
    assert np.isfinite(result.longtail).all()
    assert np.isfinite(hoc.T).all()


def test_absent_score_class_does_not_crash(data):
    # Prepare: nobody is rated 5
    emb, _, raw = data
    scores = np.minimum(raw, 4)
    cfg = CurationConfig(hoc_rounds=5, detect_epochs=5)
    # Execute
    hoc, result = curate_centralized(emb, scores, cfg, progress=False)
    # Assert
    assert np.isnan(result.detection.noise_rates[5])
    assert np.isfinite(hoc.T).all() and hoc.T[:, 5].max() < 0.05
    assert result.curated.max() <= 5


def test_duplicate_embeddings_give_a_deterministic_result():
    # Prepare: every sample appears three times with the same embedding
    emb, true = clusterable_data(400, 6, 64, seed=2)
    emb = np.repeat(emb, 3, axis=0)
    raw = corrupt_scores(np.repeat(true, 3), T_TRUE, seed=3)
    cfg = CurationConfig(hoc_rounds=3, detect_epochs=3, hoc_steps=100)
    # Execute
    a = curate_centralized(emb, raw, cfg, progress=False)[1]
    b = curate_centralized(emb, raw, cfg, progress=False)[1]
    # Assert: copies are each other's nearest neighbours, at distance 0
    assert (a.curated == b.curated).all()
    assert a.longtail[0] == a.longtail[1] == a.longtail[2]


@pytest.mark.parametrize("n", [2, 11])
def test_too_few_samples_raise_a_clear_error(n):
    # Prepare
    emb, true = clusterable_data(n, 6, 8, seed=0)
    # Execute / Assert
    with pytest.raises(ValueError, match=f"N = {n} samples"):
        curate_centralized(emb, true, CurationConfig(), progress=False)


def test_duplicated_rows_pull_a_small_site_towards_the_identity(data):
    # Prepare
    emb, _, raw = data
    cfg = CurationConfig(hoc_rounds=10)
    # Execute
    plain = solve_hoc(site_counts(emb, raw, cfg, progress=False), cfg)
    dup_cfg = CurationConfig(hoc_rounds=10, compat_duplicate=True)
    dup = solve_hoc(site_counts(emb, raw, dup_cfg, progress=False), dup_cfg)
    # Assert
    assert np.diag(dup.T).mean() > np.diag(plain.T).mean() + 0.15
