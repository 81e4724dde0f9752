"""A score that could not be computed: a NaN that carries its reason.

Lives outside `scorers/` so that model helpers (e.g. `models/lm_loss.py`) can report per-sample
failures without importing the scorer registry.
"""

from __future__ import annotations

import math


class ScoreFailure(float):
    """A NaN score carrying the reason it is missing."""

    reason: str

    def __new__(cls, reason: str) -> ScoreFailure:
        obj = super().__new__(cls, math.nan)
        obj.reason = reason
        return obj

    def __repr__(self) -> str:
        return f"failed({self.reason!r})"


def failed(reason: str) -> float:
    """The score of a sample that could not be scored, with its reason."""
    return ScoreFailure(reason)


def failure_reason(value: float) -> str:
    """The reason attached to a failed score; '' for a valid score, 'nan' for an unexplained NaN."""
    if isinstance(value, ScoreFailure):
        return value.reason
    return "nan" if value != value else ""
