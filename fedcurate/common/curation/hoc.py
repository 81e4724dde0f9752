"""HOC: the score transition matrix T and true-score prior p from kNN consensus counts.

Zhu, Song, Liu, "Clusterability as an Alternative to Anchor Points When Learning with Noisy Labels"
(ICML 2021), as used by DS2 (notes/ds2_docta.md §1.4). For a sample and its two nearest neighbours
(which, by 2-NN clusterability, share its true score y), the raw scores (y0, y1, y2) are independent
draws from row y of T, T_ij = P(raw = j | true = i). Hence the consensus moments

    c1[a] = sum_i p_i T_ia,  c2[a,b] = sum_i p_i T_ia T_ib,  c3[a,b,c] = sum_i p_i T_ia T_ib T_ic.

`consensus_counts` counts (y0, y1, y2) patterns over the subsample rounds as *integers* (K + K^2 + K^3
numbers plus the row count), so counts from several sites add up exactly (`sum_counts`): the server
of a federation solves one T and p from the sum. `solve_hoc` fits T = softmax_row(U), p = softmax(v)
to the normalised counts c^_r = counts_r / rows by Adam on the un-squared norms
L = |c^1 - c1|_2 + |c^2 - c2|_F + |c^3 - c3|_F, starting from U0 = 5I - 11^T (diagonal 4,
off-diagonal -1) and v0 = 1/K + 0.1 U(0,1) (seeded).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcurate.common.config import CurationConfig
from fedcurate.common.curation.sampling import stream

logger = logging.getLogger(__name__)

_BETAS, _EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam defaults, as the reference


@dataclass(frozen=True)
class ConsensusCounts:
    """Integer consensus counts of (own, 1st-NN, 2nd-NN) raw scores, summed over rounds (and sites)."""

    first: np.ndarray  # int64 [K]
    second: np.ndarray  # int64 [K, K]
    third: np.ndarray  # int64 [K, K, K]
    rows: int  # subsample members counted (sum of m over rounds)

    @property
    def num_classes(self) -> int:
        return int(self.first.size)

    def moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normalised moments c^1, c^2, c^3 (float64): counts divided by rows."""
        if self.rows <= 0:
            raise ValueError("consensus counts are empty (rows = 0): no subsample was counted")
        return self.first / self.rows, self.second / self.rows, self.third / self.rows

    def to_dict(self) -> dict[str, Any]:
        """Plain ints, for a Flower message or a JSON file."""
        return {"num_classes": self.num_classes, "rows": self.rows, "third": self.third.ravel().tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConsensusCounts:
        k = int(d["num_classes"])
        return _from_third(np.asarray(d["third"], dtype=np.int64).reshape(k, k, k), int(d["rows"]))


def counts_from_third(third: np.ndarray, rows: int) -> ConsensusCounts:
    """Consensus counts from third-order counts (flat K^3 or [K, K, K]); the lower orders are its sums."""
    k = round(np.asarray(third).size ** (1 / 3))
    return _from_third(np.asarray(third, dtype=np.int64).reshape(k, k, k), rows)


def _from_third(third: np.ndarray, rows: int) -> ConsensusCounts:
    second = third.sum(axis=2)
    return ConsensusCounts(second.sum(axis=1), second, third, rows)


def consensus_counts(labels: np.ndarray, rounds: Iterable[np.ndarray], num_classes: int) -> ConsensusCounts:
    """Count patterns over rounds; each round is an int array [m, >=3] of (self, 1st-NN, 2nd-NN) ids.

    One bincount per round on the code y0 K^2 + y1 K + y2.
    """
    k = num_classes
    third = np.zeros(k**3, dtype=np.int64)
    rows = 0
    for nbr in rounds:
        y = labels[nbr[:, :3]]
        assert (y >= 0).all(), "unrated samples must never be drawn into a subsample"
        third += np.bincount(y[:, 0] * k * k + y[:, 1] * k + y[:, 2], minlength=k**3)
        rows += nbr.shape[0]
    return _from_third(third.reshape(k, k, k), rows)


def sum_counts(counts: Sequence[ConsensusCounts]) -> ConsensusCounts:
    """Counts of several sites added up (pure; the federated server's only aggregation for HOC)."""
    if not counts:
        raise ValueError("sum_counts needs at least one site's counts")
    ks = {c.num_classes for c in counts}
    if len(ks) != 1:
        raise ValueError(f"sites disagree on the number of score classes: {sorted(ks)}")
    return _from_third(sum(c.third for c in counts), sum(c.rows for c in counts))


@dataclass(frozen=True)
class HocResult:
    """The estimate: T [K, K] (rows = true score, sum to 1), prior p [K], and how it was reached."""

    T: np.ndarray
    p: np.ndarray
    loss: float  # loss of the returned iterate
    steps: int  # Adam updates made
    best_step: int  # iterate returned (0 = initial point; `steps` = last iterate)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _unit(r: np.ndarray) -> tuple[float, np.ndarray]:
    """|r| and its gradient r/|r| (0 at r = 0)."""
    norm = float(np.sqrt((r * r).sum()))
    return norm, (r / norm if norm > 0 else np.zeros_like(r))


def hoc_loss_and_grad(U: np.ndarray, v: np.ndarray, moments: tuple[np.ndarray, np.ndarray, np.ndarray]
                      ) -> tuple[float, np.ndarray, np.ndarray]:
    """HOC loss at (U, v) and its analytic gradients dL/dU, dL/dv (float64)."""
    m1, m2, m3 = moments
    T, p = _softmax(U), _softmax(v)
    c1 = p @ T
    c2 = T.T @ (p[:, None] * T)
    c3 = np.einsum("i,ia,ib,ic->abc", p, T, T, T)
    (n1, g1), (n2, g2), (n3, g3) = _unit(c1 - m1), _unit(c2 - m2), _unit(c3 - m3)
    # dL/dT[i, a] and dL/dp[i] through c1, c2 (symmetrised) and c3 (each of the three positions)
    sym3 = (np.einsum("abc,ib,ic->ia", g3, T, T) + np.einsum("bac,ib,ic->ia", g3, T, T)
            + np.einsum("bca,ib,ic->ia", g3, T, T))
    dT = p[:, None] * (g1[None, :] + T @ (g2 + g2.T) + sym3)
    dp = T @ g1 + np.einsum("ia,ib,ab->i", T, T, g2) + np.einsum("ia,ib,ic,abc->i", T, T, T, g3)
    dU = T * (dT - (dT * T).sum(axis=1, keepdims=True))
    dv = p * (dp - dp @ p)
    return n1 + n2 + n3, dU, dv


def solve_hoc(counts: ConsensusCounts, cfg: CurationConfig) -> HocResult:
    """Fit T and p to the counts by `cfg.hoc_steps` Adam updates (lr `cfg.hoc_lr`).

    Returns the BEST-LOSS iterate among the initial point and all updates (the reference means to,
    but an aliasing bug makes it return the last one); `cfg.compat_last_iterate` returns the last.
    A score class a that no sample has: c^1[a] = 0, so column a of T is driven towards 0 and the
    solve does not fail; row a (true score a) is then only weakly identified and p_a is unreliable
    -- a warning says so.
    """
    k = counts.num_classes
    moments = counts.moments()
    absent = np.flatnonzero(counts.first == 0)
    if absent.size:
        logger.warning("HOC: score class(es) %s never occur among %d counted rows; their T columns go to "
                       "~0 and their T rows / prior are weakly identified", absent.tolist(), counts.rows)
    U = 5.0 * np.eye(k) - 1.0
    v = 1.0 / k + 0.1 * stream(cfg.seed, "hoc-init").random(k)
    state = [np.zeros_like(U), np.zeros_like(U), np.zeros_like(v), np.zeros_like(v)]
    best = (np.inf, U, v, 0)
    loss = np.inf
    for step in range(cfg.hoc_steps + 1):
        loss, dU, dv = hoc_loss_and_grad(U, v, moments)
        if loss < best[0]:
            best = (loss, U.copy(), v.copy(), step)
        if step < cfg.hoc_steps:
            U, v = _adam(U, dU, v, dv, state, step + 1, cfg.hoc_lr)
    if cfg.compat_last_iterate:
        best = (loss, U, v, cfg.hoc_steps)
    logger.info("HOC: loss %.3g at iterate %d of %d (%s)", best[0], best[3], cfg.hoc_steps,
                "last" if cfg.compat_last_iterate else "best")
    return HocResult(_softmax(best[1]), _softmax(best[2]), float(best[0]), cfg.hoc_steps, best[3])


def _adam(U: np.ndarray, dU: np.ndarray, v: np.ndarray, dv: np.ndarray, state: list[np.ndarray],
          t: int, lr: float) -> tuple[np.ndarray, np.ndarray]:
    """One Adam update of (U, v), as torch.optim.Adam with default betas and eps."""
    out = []
    for j, (x, g) in enumerate(((U, dU), (v, dv))):
        m1, m2 = state[2 * j], state[2 * j + 1]
        m1 *= _BETAS[0]
        m1 += (1 - _BETAS[0]) * g
        m2 *= _BETAS[1]
        m2 += (1 - _BETAS[1]) * g * g
        step = lr * (m1 / (1 - _BETAS[0] ** t)) / (np.sqrt(m2 / (1 - _BETAS[1] ** t)) + _EPS)
        out.append(x - step)
    return out[0], out[1]
