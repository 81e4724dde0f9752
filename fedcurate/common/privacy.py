"""Differential privacy for the small statistics a site sends to the server (Flower-free).

Each site adds Gaussian noise to its own statistics before they leave the site (the local, or
"distributed", Gaussian mechanism): score histograms, HOC consensus counts, per-scorer moments. An
`Accountant` adds up the privacy spent by every release of a run under zero-concentrated DP (zCDP) and
reports it as (epsilon, delta)-DP. Bun & Steinke, "Concentrated Differential Privacy: Simplifications,
Extensions, and Lower Bounds" (TCC 2016):

    Gaussian mechanism, L2 sensitivity D, noise std sigma:  rho = D^2 / (2 sigma^2)    (Prop. 1.6)
    k releases compose by adding their rho                                            (Lemma 2.3)
    rho-zCDP implies (eps, delta)-DP with eps = rho + 2 sqrt(rho ln(1/delta))         (Prop. 1.3)

and its inverse rho = (sqrt(eps + ln(1/delta)) - sqrt(ln(1/delta)))^2, used by `sigma_for` to split a
total budget evenly over a run's releases. Neighbouring datasets differ by adding or removing one sample
at one site; every sensitivity below is an L2 bound under that relation. Rounding and clipping noisy
values are post-processing and cost nothing.

Usage:

    params = DPParams(epsilon=4.0, delta=1e-6, releases=3)
    sigma = params.sigma(HISTOGRAM_SENSITIVITY)
    accountant = Accountant(params.delta)
    reply = noisy_counts(histogram, sigma, rng)                  # at the site, before sending
    accountant.spend("threshold histogram", sigma, HISTOGRAM_SENSITIVITY)
    accountant.check(params.epsilon)                             # PrivacyBudgetError when over budget
    write_json(run_dir / "privacy.json", accountant.to_json())   # resume: Accountant.from_json(...)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

HISTOGRAM_SENSITIVITY = 1.0
"""A histogram of one score per sample on a data-independent (server-fixed) bin grid: adding or removing
one sample changes one count by one, so the L2 sensitivity is 1. A failed score counted in its own bin
is still one count. Totals derived from the noisy histogram (its sum) are post-processing."""

_CHECK_RTOL = 1e-9  # check() tolerates float rounding, so spending exactly the budget passes


class PrivacyBudgetError(RuntimeError):
    """The privacy spent by a run exceeds its budget."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_delta(delta: float) -> None:
    _require(0.0 < delta < 1.0, f"delta = {delta!r} must be in (0, 1)")


def rho_of(sigma: float, sensitivity: float) -> float:
    """zCDP cost rho = sensitivity^2 / (2 sigma^2) of one Gaussian release."""
    _require(sigma > 0.0, f"sigma = {sigma!r} must be > 0 (a release without noise has no privacy)")
    _require(sensitivity >= 0.0, f"sensitivity = {sensitivity!r} must be >= 0")
    return sensitivity**2 / (2.0 * sigma**2)


def epsilon_of(rho: float, delta: float) -> float:
    """The epsilon of (epsilon, delta)-DP implied by rho-zCDP: rho + 2 sqrt(rho ln(1/delta))."""
    _require(rho >= 0.0, f"rho = {rho!r} must be >= 0")
    _check_delta(delta)
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


def rho_for(epsilon: float, delta: float) -> float:
    """The largest rho whose (epsilon, delta) conversion stays within `epsilon` (inverse of `epsilon_of`)."""
    _require(epsilon > 0.0, f"epsilon = {epsilon!r} must be > 0")
    _check_delta(delta)
    log_inv = math.log(1.0 / delta)
    # sqrt(eps + L) - sqrt(L), written without the cancellation that loses digits when eps << L
    root = epsilon / (math.sqrt(epsilon + log_inv) + math.sqrt(log_inv))
    return root * root


def sigma_for(epsilon: float, delta: float, releases: int, sensitivity: float) -> float:
    """Noise std for each of `releases` equal releases so that together they spend (epsilon, delta)."""
    _require(isinstance(releases, int) and releases >= 1, f"releases = {releases!r} must be an integer >= 1")
    _require(sensitivity > 0.0, f"sensitivity = {sensitivity!r} must be > 0")
    rho_each = rho_for(epsilon, delta) / releases
    return sensitivity / math.sqrt(2.0 * rho_each)


@dataclass(frozen=True)
class DPParams:
    """A run's privacy budget: total (epsilon, delta), split evenly over `releases` Gaussian releases."""

    epsilon: float
    delta: float
    releases: int

    def __post_init__(self) -> None:
        _require(self.epsilon > 0.0, f"DP epsilon = {self.epsilon!r} must be > 0")
        _require(0.0 < self.delta < 1.0, f"DP delta = {self.delta!r} must be in (0, 1)")
        _require(isinstance(self.releases, int) and self.releases >= 1,
                 f"DP releases = {self.releases!r} must be an integer >= 1")

    def sigma(self, sensitivity: float) -> float:
        """Noise std of one release of a statistic with this L2 sensitivity."""
        return sigma_for(self.epsilon, self.delta, self.releases, sensitivity)


class Accountant:
    """Running zCDP total of a run's releases; its JSON state lets a resumed run continue the sum."""

    def __init__(self, delta: float, spent_rho: float = 0.0, releases: list[dict] | None = None) -> None:
        _check_delta(delta)
        _require(spent_rho >= 0.0, f"spent_rho = {spent_rho!r} must be >= 0")
        self.delta = float(delta)
        self._rho = float(spent_rho)
        self.releases: list[dict] = [dict(r) for r in releases or []]

    def spend(self, what: str, sigma: float, sensitivity: float) -> float:
        """Record one Gaussian release of `what` and return its rho."""
        rho = rho_of(sigma, sensitivity)
        self._rho += rho
        self.releases.append({"what": what, "sigma": float(sigma), "sensitivity": float(sensitivity), "rho": rho})
        logger.info("privacy: %s (sigma %.4g, sensitivity %.4g) spends rho %.4g; total rho %.4g = epsilon %.4g "
                    "at delta %.3g", what, sigma, sensitivity, rho, self._rho, self.epsilon, self.delta)
        return rho

    @property
    def rho(self) -> float:
        """Total zCDP spent so far."""
        return self._rho

    @property
    def epsilon(self) -> float:
        """Total spent as epsilon of (epsilon, self.delta)-DP."""
        return epsilon_of(self._rho, self.delta)

    def check(self, max_epsilon: float) -> None:
        """Raise PrivacyBudgetError if the epsilon spent exceeds `max_epsilon` (float rounding tolerated)."""
        if self.epsilon > max_epsilon * (1.0 + _CHECK_RTOL):
            raise PrivacyBudgetError(
                f"privacy budget exceeded: spent epsilon = {self.epsilon:.6g} (rho = {self._rho:.6g} over "
                f"{len(self.releases)} release(s), delta = {self.delta:.3g}) > budget epsilon = {max_epsilon:.6g}")

    def to_json(self) -> dict[str, Any]:
        """Plain JSON state (epsilon is included for readers; `from_json` recomputes it)."""
        return {"delta": self.delta, "spent_rho": self._rho, "epsilon": self.epsilon,
                "releases": [dict(r) for r in self.releases]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Accountant:
        """Rebuild from `to_json` output; a missing or malformed field raises ValueError naming it."""
        missing = [key for key in ("delta", "spent_rho", "releases") if key not in d]
        _require(not missing, f"privacy accountant state lacks field(s) {missing}; has {sorted(d)}")
        _require(isinstance(d["releases"], list), f"privacy accountant field 'releases' must be a list, "
                                                  f"got {type(d['releases']).__name__}")
        return cls(float(d["delta"]), float(d["spent_rho"]), d["releases"])


def hoc_sensitivity(rounds: int, max_neighbour_of: int, neighbours: int = 2, *, all_orders: bool = False,
                    copies: int = 1) -> float:
    """L2 sensitivity of a site's HOC consensus counts, summed over `rounds` subsamples.

    Setting (common/curation/hoc.py): every round draws m members uniformly without replacement; each
    member counts one pattern (own score, scores of its `neighbours` nearest members). The released vector
    is the highest-order counts (K^(neighbours+1) cells; lower orders are its sums, hence free), or with
    `all_orders` every order 1..neighbours+1 noised as one vector.

    `max_neighbour_of` = c must bound, in every round and for every sample, how many members list that
    sample among their nearest neighbours (the kNN in-degree; at most m - 1 unless capped by clipping).

    Derivation, one round. Couple the draws of neighbouring datasets so that the member sets differ by
    at most one swap (fixed m: member z replaced by the added sample x, or nothing changes) or by one
    extra member (m grows by one). Changed patterns: the own rows of z and x, and the rows whose nearest
    neighbours include z or x: at most 1 + 2c removals and 1 + 2c additions per order, each of size 1.
    The first order (own score only) sees just the own rows: 1 removal, 1 addition. Concentrating all
    additions in one cell and all removals in another gives the worst L2 norm:

        per round:  sqrt(2 (1 + 2c)^2)                   (highest order only)
                    sqrt(2 (1 + neighbours (1 + 2c)^2))  (all orders)

    Rounds add up (triangle inequality), so the bound is `rounds` times that; `copies` (2 under
    curation.compat_duplicate, where a sample has two rows in the pool) multiplies it again.
    The bound assumes the subsample draws are secret to the site (a public seed lets an observer tell
    which rows moved) and that the clipping which enforces c is itself not changed beyond these rows.
    """
    for name, value, least in (("rounds", rounds, 1), ("max_neighbour_of", max_neighbour_of, 0),
                               ("neighbours", neighbours, 1), ("copies", copies, 1)):
        _require(isinstance(value, int) and value >= least, f"{name} = {value!r} must be an integer >= {least}")
    moved = 1 + 2 * max_neighbour_of  # rows changed per order and per sign, in one round
    per_round_sq = 2.0 * (1 + neighbours * moved**2) if all_orders else 2.0 * moved**2
    return copies * rounds * math.sqrt(per_round_sq)


def moments_sensitivity(lo: float, hi: float) -> float:
    """L2 sensitivity of [count, sum, sum of squares] of one score per sample, clipped to [lo, hi].

    One sample with clipped value v changes the three by (1, v, v^2): sensitivities 1, max(|lo|, |hi|)
    and max(lo^2, hi^2), reached together at the same v, so the L2 norm is sqrt(1 + M^2 + M^4) with
    M = max(|lo|, |hi|).
    """
    _require(math.isfinite(lo) and math.isfinite(hi) and lo < hi, f"clip range [lo, hi] = [{lo!r}, {hi!r}] "
                                                                  "must be finite with lo < hi")
    big = max(abs(lo), abs(hi))
    return math.sqrt(1.0 + big**2 + big**4)


def noisy_counts(counts: np.ndarray, sigma: float, rng: np.random.Generator, *, round_to_int: bool = True,
                 clip_negative: bool = True) -> np.ndarray:
    """`counts` plus N(0, sigma^2) noise per entry (same shape); then optionally rounded (int64) and clipped at 0.

    sigma = 0 returns the counts unchanged (no privacy: do not spend it in an Accountant).
    """
    _require(sigma >= 0.0, f"sigma = {sigma!r} must be >= 0")
    values = np.asarray(counts, dtype=np.float64)
    _require(bool(np.isfinite(values).all()), "counts must be finite (no NaN or inf) before noise is added")
    noisy = values + rng.normal(0.0, sigma, size=values.shape) if sigma > 0 else values.copy()
    if round_to_int:
        noisy = np.rint(noisy)
    if clip_negative:
        noisy = np.maximum(noisy, 0.0)
    return noisy.astype(np.int64) if round_to_int else noisy


def noisy_moments(values: np.ndarray, lo: float, hi: float, sigma: float, rng: np.random.Generator) -> list[float]:
    """Noisy [count, sum, sum of squares] of `values` clipped to [lo, hi]; spend `moments_sensitivity(lo, hi)`.

    Values must be finite: drop failed (NaN) scores first, so that a failure is never a silent value.
    """
    _require(sigma >= 0.0, f"sigma = {sigma!r} must be >= 0")
    moments_sensitivity(lo, hi)  # validates the clip range
    v = np.asarray(values, dtype=np.float64).ravel()
    bad = ~np.isfinite(v)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {v.size} value(s) are not finite (first at index "
                         f"{int(np.flatnonzero(bad)[0])}); drop failed scores before computing moments")
    v = np.clip(v, lo, hi)
    exact = np.array([v.size, v.sum(), (v * v).sum()], dtype=np.float64)
    noise = rng.normal(0.0, sigma, size=3) if sigma > 0 else np.zeros(3)
    return [float(x) for x in exact + noise]
