"""Simulated LLM raters with a known score transition matrix T, and clusterable embeddings.

`corrupt_scores(true, T, seed)` rates a sample of true score i with a class drawn from row T[i]
(T_ij = P(rated j | true i)), the noise model DS2's curation assumes. `DS2_RATER_DIAGONALS` are the
diagonals of the transition matrices the DS2 paper estimates for its three raters (README figure,
notes/ds2_docta.md §1.4); `transition_matrix_from_diagonal` completes a diagonal into a full T.
`clusterable_data` makes embeddings in which samples of the same true score cluster, so their nearest
neighbours share it -- the k-NN clusterability that HOC and SimiFeat rely on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DS2_RATER_DIAGONALS: dict[str, list[float]] = {
    "gpt-4o-mini": [0.61, 0.55, 0.57, 0.55, 0.66, 0.02],
    "llama-3.1-8b": [0.47, 0.14, 0.16, 0.53, 0.43, 0.03],
    "mistral-7b": [0.07, 0.01, 0.48, 0.55, 0.50, 0.01],
}


def transition_matrix_from_diagonal(diagonal: Sequence[float], decay: float = 0.5,
                                    seed: int | None = None) -> np.ndarray:
    """A row-stochastic T with the given diagonal; row i's off-diagonal mass 1 - T_ii goes to the
    other classes j in proportion to decay^(|i - j| - 1): mostly to the neighbouring scores, as a judge
    that is off by one more often than by three. With `seed`, each weight is also multiplied by a
    uniform factor in [0.5, 1.5] (a less regular rater).
    """
    diag = np.asarray(diagonal, dtype=np.float64)
    if ((diag < 0) | (diag > 1)).any():
        raise ValueError(f"diagonal entries must lie in [0, 1]; got {diag.tolist()}")
    k = diag.size
    dist = np.abs(np.arange(k)[:, None] - np.arange(k)[None, :])
    weights = np.where(dist > 0, decay ** (dist - 1.0), 0.0)
    if seed is not None:
        weights *= np.random.default_rng(seed).uniform(0.5, 1.5, size=weights.shape)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights * (1.0 - diag)[:, None] + np.diag(diag)


def corrupt_scores(true_scores: np.ndarray, T: np.ndarray, seed: int) -> np.ndarray:
    """Rated scores (int64): each true class i is replaced by a class drawn from row T[i]."""
    y = np.asarray(true_scores, dtype=np.int64)
    cum = np.cumsum(np.asarray(T, dtype=np.float64), axis=1)
    u = np.random.default_rng(seed).random(y.size)
    return np.minimum((u[:, None] >= cum[y]).sum(axis=1), T.shape[1] - 1).astype(np.int64)


def clusterable_data(n: int, num_classes: int, dim: int, seed: int, *, prior: Sequence[float] | None = None,
                     topics: int = 64, class_shift: float = 0.2, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings float32 [n, dim] L2-normalised, true scores int64 [n]).

    A sample of topic t and true score c is topic_t + class_shift * dir_c + noise * g / sqrt(dim),
    normalised, with random unit topic and class directions and g standard normal. Samples of one
    topic are close (cosine ~0.8, like texts on one subject) and within a topic those of the same
    score are closest: with the defaults the nearest neighbour shares the true score for ~97% of
    samples at n = 5k and ~99% at n = 50k (6 classes, 384-d). True scores come from `prior`
    (default 0.1, 0.15, 0.25, 0.25, 0.15, 0.1 for 6 classes, else uniform); topics are uniform.
    """
    rng = np.random.default_rng(seed)
    if prior is None:
        prior = [0.1, 0.15, 0.25, 0.25, 0.15, 0.1] if num_classes == 6 else [1.0 / num_classes] * num_classes
    p = np.asarray(prior, dtype=np.float64)
    true = rng.choice(num_classes, size=n, p=p / p.sum())
    topic_dirs = _unit(rng.standard_normal((topics, dim)))
    class_dirs = _unit(rng.standard_normal((num_classes, dim)))
    topic = rng.integers(0, topics, size=n)
    x = (topic_dirs[topic] + class_shift * class_dirs[true]).astype(np.float32)
    x += rng.standard_normal((n, dim), dtype=np.float32) * np.float32(noise / np.sqrt(dim))
    return _unit(x).astype(np.float32, copy=False), true.astype(np.int64)


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x
