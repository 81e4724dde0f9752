"""SelectIT's uncertainty-aware self-rating maths (Liu et al., 2024, "SelectIT: Selective Instruction
Tuning for LLMs via Uncertainty-Aware Self-Reflection", arXiv 2402.16705).

Token level, for one (sample, rating prompt), from the next-token probabilities p_k of the K rating
tokens "1".."K" after the prompt (one prefill, no generation):

    P'_k     = p_k / sum_j p_j                      (renormalised; equal to a softmax over the K logits)
    S_base   = argmax_k P'_k                        (1-based; the lowest score on ties)
    S_token  = S_base * 1/(K-1) * sum_i (P'_{S_base} - P'_i)          in [0, K]

Sentence level, over the token scores S_1..S_m of m paraphrased prompts (population std):

    S_sent   = mean(S_j) / (1 + alpha * std(S_j))

Model level, over N raters with parameter counts theta_n:  S_model = sum_n (theta_n / sum theta) S_sent_n.

`normalization="code-head"` reproduces the reference code after its 2024-03-02 change, which applies a
further softmax to P' (it compresses the scores: a one-hot P' gives S_token = 1.28, not 5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

NORMALIZATIONS = ("paper", "code-head")


def renormalise(probs: Sequence[float], normalization: str = "paper") -> np.ndarray:
    """P' over the K rating tokens from their probabilities (any positive scale)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization = {normalization!r}; allowed: {', '.join(NORMALIZATIONS)}")
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.size < 2 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"need K >= 2 finite non-negative probabilities with a positive sum, got {list(p)}")
    p = p / p.sum()
    if normalization == "code-head":
        e = np.exp(p - p.max())
        p = e / e.sum()
    return p


def token_score(probs: Sequence[float], normalization: str = "paper") -> float:
    """S_token for one prompt from the K rating-token probabilities (index 0 is score 1)."""
    p = renormalise(probs, normalization)
    base = int(np.argmax(p))  # np.argmax returns the first maximum: the lower score on ties
    gap = float(np.sum(p[base] - p)) / (p.size - 1)
    return (base + 1) * gap


def sentence_score(token_scores: Sequence[float], alpha: float) -> float:
    """S_sent = mean / (1 + alpha * population std) over the prompts' token scores; NaN if any is NaN."""
    s = np.asarray(token_scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("sentence_score needs at least one token score")
    if not np.all(np.isfinite(s)):
        return math.nan
    return float(s.mean() / (1.0 + alpha * s.std(ddof=0)))


def normalised_weights(weights: Sequence[float]) -> np.ndarray:
    """Weights scaled to sum to 1 (SelectIT model level: parameter counts -> parameter shares)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.size == 0 or np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {list(w)}")
    return w / w.sum()


def model_score(sentence_scores: Sequence[float], weights: Sequence[float]) -> float:
    """S_model = sum_n w_n S_sent_n with w normalised to sum 1; NaN if any model's score is NaN."""
    s = np.asarray(sentence_scores, dtype=np.float64)
    w = normalised_weights(weights)
    if s.shape != w.shape:
        raise ValueError(f"{s.size} scores but {w.size} weights")
    if not np.all(np.isfinite(s)):
        return math.nan
    return float(np.dot(w, s))


def rating_candidates(levels: int) -> list[str]:
    """The rating-token strings "1".."K" whose next-token probabilities SelectIT reads."""
    if levels < 2:
        raise ValueError(f"selectit_levels = {levels}: need at least 2 rating levels")
    return [str(k) for k in range(1, levels + 1)]
