"""Differential privacy for what a run releases: the Gaussian mechanism, a zCDP accountant (Flower-free).

Two kinds of release use it. The threshold phase (`privacy.dp-epsilon`): each site adds Gaussian noise to
its own sample count and score histograms before they leave the site (`noisy_counts`, called by
`client/steps/threshold.py`), with the noise std the server's `server/phases/threshold.dp_plan` gets from
`sigma_for`. The LoRA rounds (`privacy.train-noise-multiplier`, `strategies/dp_training.py`): the server
clips every site's update, averages and noises them (one site's data is the neighbouring relation there).
For both, an `Accountant` (in `server/phases/threshold.py` and `server/phases/lora.py`) adds up the privacy
spent by every release of a run under zero-concentrated DP (zCDP) and reports it as (epsilon, delta)-DP.
Bun & Steinke, "Concentrated Differential Privacy: Simplifications, Extensions, and Lower Bounds" (TCC 2016):

    Gaussian mechanism, L2 sensitivity D, noise std sigma:  rho = D^2 / (2 sigma^2)    (Prop. 1.6)
    k releases compose by adding their rho                                            (Lemma 2.3)
    rho-zCDP implies (eps, delta)-DP with eps = rho + 2 sqrt(rho ln(1/delta))         (Prop. 1.3)

and its inverse rho = (sqrt(eps + ln(1/delta)) - sqrt(ln(1/delta)))^2, used by `sigma_for` to split a
total budget evenly over a run's releases. For the threshold phase, neighbouring datasets differ by adding
or removing one sample at one site (`HISTOGRAM_SENSITIVITY`); rounding and clipping noisy values are
post-processing and cost nothing.

Usage:

    sigma = sigma_for(epsilon=4.0, delta=1e-6, releases=2, sensitivity=HISTOGRAM_SENSITIVITY)
    accountant = Accountant(1e-6)
    reply = noisy_counts(histogram, sigma, rng, clip_negative=False)   # at the site, before sending
    accountant.spend("threshold histogram", sigma, HISTOGRAM_SENSITIVITY)
    accountant.check(4.0)                                               # PrivacyBudgetError when over budget
    write_json(run_dir / "privacy.json", accountant.to_json())          # resume: Accountant.from_json(...)
"""

from __future__ import annotations

import logging
import math
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
