"""Tests for common/privacy.py: zCDP formulas, accountant and noisy counts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedcurate.common.privacy import (
    HISTOGRAM_SENSITIVITY,
    Accountant,
    PrivacyBudgetError,
    epsilon_of,
    noisy_counts,
    rho_for,
    rho_of,
    sigma_for,
)

DELTA_E4 = math.exp(-4.0)  # ln(1/delta) = 4 makes the hand computations exact


def test_known_values_by_hand():
    # sigma = sqrt(2), sensitivity 1: rho = 1 / (2 * 2) = 0.25; eps = 0.25 + 2 sqrt(0.25 * 4) = 2.25
    assert rho_of(math.sqrt(2.0), 1.0) == pytest.approx(0.25, rel=1e-12)
    assert epsilon_of(0.25, DELTA_E4) == pytest.approx(2.25, rel=1e-12)
    # inverse: (sqrt(2.25 + 4) - sqrt(4))^2 = (2.5 - 2)^2 = 0.25
    assert rho_for(2.25, DELTA_E4) == pytest.approx(0.25, rel=1e-12)
    # 4 releases share rho 0.25: 1/16 each, sigma = 1 / sqrt(2/16) = sqrt(8); sensitivity 3 scales sigma by 3
    assert sigma_for(2.25, DELTA_E4, 4, 1.0) == pytest.approx(math.sqrt(8.0), rel=1e-12)
    assert sigma_for(2.25, DELTA_E4, 4, 3.0) == pytest.approx(3 * math.sqrt(8.0), rel=1e-12)


@pytest.mark.parametrize("epsilon,delta,releases,sensitivity", [
    (1.0, 1e-5, 1, 1.0), (4.0, 1e-6, 3, 2.5), (0.01, 1e-9, 7, 1.0), (50.0, 1e-3, 20, 12.0),
])
def test_sigma_for_then_accountant_spends_exactly_the_budget(epsilon, delta, releases, sensitivity):
    # Prepare
    sigma = sigma_for(epsilon, delta, releases, sensitivity)
    accountant = Accountant(delta)
    # Execute
    for i in range(releases):
        accountant.spend(f"release {i}", sigma, sensitivity)
    # Assert
    assert abs(accountant.epsilon - epsilon) < 1e-9
    assert epsilon_of(rho_for(epsilon, delta), delta) == pytest.approx(epsilon, abs=1e-12)
    accountant.check(epsilon)  # spending exactly the budget is allowed


def test_composition_adds_rho():
    accountant = Accountant(1e-5)
    rhos = [accountant.spend("a", 1.0, 1.0), accountant.spend("b", 3.0, 2.0), accountant.spend("c", 0.5, 0.1)]
    assert rhos == pytest.approx([0.5, 4.0 / 18.0, 0.02])
    assert accountant.rho == pytest.approx(sum(rhos))
    assert accountant.epsilon == pytest.approx(epsilon_of(sum(rhos), 1e-5))
    assert accountant.epsilon < sum(epsilon_of(r, 1e-5) for r in rhos)  # zCDP composes tighter than eps


def test_accountant_json_round_trip_continues_the_sum():
    # Prepare
    first = Accountant(1e-6)
    first.spend("histogram", 2.0, HISTOGRAM_SENSITIVITY)
    first.spend("train/1", 0.5, 0.25)
    # Execute
    resumed = Accountant.from_json(json.loads(json.dumps(first.to_json())))
    resumed.spend("histogram 2", 5.0, HISTOGRAM_SENSITIVITY)
    # Assert
    assert resumed.delta == first.delta
    assert [r["what"] for r in resumed.releases] == ["histogram", "train/1", "histogram 2"]
    assert resumed.rho == pytest.approx(first.rho + rho_of(5.0, HISTOGRAM_SENSITIVITY))
    with pytest.raises(ValueError, match="spent_rho"):
        Accountant.from_json({"delta": 1e-6, "releases": []})


def test_check_raises_over_budget_naming_spent_and_budget():
    accountant = Accountant(1e-5)
    accountant.spend("histogram", 1.0, 1.0)
    accountant.check(accountant.epsilon + 0.1)
    with pytest.raises(PrivacyBudgetError, match=r"spent epsilon = 5\.29.*budget epsilon = 1\b"):
        accountant.check(1.0)


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="sigma"):
        rho_of(0.0, 1.0)
    with pytest.raises(ValueError, match="delta"):
        epsilon_of(1.0, 1.0)
    with pytest.raises(ValueError, match="releases"):
        sigma_for(1.0, 1e-5, 0, 1.0)
    with pytest.raises(ValueError, match="epsilon"):
        sigma_for(0.0, 1e-5, 1, 1.0)


def test_noisy_counts_unbiased_and_rounded():
    # Prepare: 4000 copies of a 3-bin histogram, noise without clipping (clipping biases small counts up)
    counts = np.tile(np.array([100, 40, 7]), (4000, 1))
    rng = np.random.default_rng(0)
    # Execute
    noisy = noisy_counts(counts, 3.0, rng, clip_negative=False)
    # Assert: standard error of each mean is 3 / sqrt(4000) = 0.047
    assert noisy.shape == counts.shape and noisy.dtype == np.int64
    np.testing.assert_allclose(noisy.mean(axis=0), [100, 40, 7], atol=0.2)
    assert not np.array_equal(noisy, counts)


def test_noisy_counts_post_processing_gives_non_negative_integers():
    counts = np.array([[0, 1, 2], [3, 0, 50]])
    noisy = noisy_counts(counts, 5.0, np.random.default_rng(1))
    assert noisy.shape == (2, 3) and noisy.dtype == np.int64
    assert (noisy >= 0).all()
    raw = noisy_counts(counts, 5.0, np.random.default_rng(1), round_to_int=False, clip_negative=False)
    assert raw.dtype == np.float64 and (raw < 0).any() and (raw != np.rint(raw)).all()


def test_noise_std_matches_sigma():
    noisy = noisy_counts(np.zeros(20000), 2.5, np.random.default_rng(2), round_to_int=False, clip_negative=False)
    assert abs(noisy.std() / 2.5 - 1.0) < 0.05
