"""What a rating backend and a rater provide.

A *backend* is access to one LLM: free-text generation, and the probabilities of K candidate tokens
as the next token after a prompt (one prefill, no generation). A *rater* turns samples into scores
through a backend (a prompt template plus a parser, or SelectIT's token probabilities).

Failures are per sample and keyed by position: a failed sample gets `Rating.failure(reason)` (NaN
score with its reason) and never shifts any other sample's score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from fedcurate.common.data.sample import Sample
from fedcurate.common.registry import Registry


@dataclass(frozen=True)
class Generation:
    """One completion, or the reason there is none."""

    text: str = ""
    error: str = ""  # "" when `text` is valid


@dataclass(frozen=True)
class TokenProbs:
    """Probabilities of the K candidate tokens, renormalised over them, or the reason there are none."""

    probs: tuple[float, ...] = ()
    mass: float = math.nan  # unrenormalised total probability of the K tokens (diagnostic), if known
    error: str = ""


@runtime_checkable
class Backend(Protocol):
    """Access to one LLM."""

    model_name: str

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, temperature: float) -> list[Generation]:
        """One completion per prompt, same order."""
        ...

    def candidate_probs(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[TokenProbs]:
        """P(next token = c | prompt) for each candidate string c (each must be one token), renormalised."""
        ...


@dataclass(frozen=True)
class Rating:
    """A rater's verdict on one sample."""

    score: float
    reason: str = ""  # why `score` is NaN; "" when valid
    raw: str = ""  # the model's text, for audit
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. sub-scores, token probabilities

    @classmethod
    def failure(cls, reason: str, raw: str = "") -> Rating:
        return cls(math.nan, reason, raw)


@runtime_checkable
class Rater(Protocol):
    """Turns samples into ratings, one per sample, same order."""

    name: str

    def rate(self, samples: Sequence[Sample]) -> list[Rating]: ...


BACKENDS: Registry[type[Any]] = Registry("rating backend")
RATERS: Registry[type[Any]] = Registry("rater")
