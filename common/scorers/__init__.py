"""Scorers: one file per scorer, registered in `SCORERS` by the import lines below."""

from fedcurate.common.scorers.base import SCORERS, Scorer, failed, failure_reason

__all__ = ["SCORERS", "Scorer", "failed", "failure_reason"]

# One import line per scorer module registers it.
from fedcurate.common.scorers import ds2, ifd, length, llm_rating, perplexity, random  # noqa: E402,F401
