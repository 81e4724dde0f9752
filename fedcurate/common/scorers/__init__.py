"""Scorers: one file per scorer, registered in `SCORERS` by the import lines below."""

from fedcurate.common.scorers.base import SCORERS, Scorer, failed, failure_reason

__all__ = ["SCORERS", "Scorer", "failed", "failure_reason"]

# One import line per scorer module registers it.
from fedcurate.common.scorers import (  # noqa: E402,F401
    clues,
    datainf,
    ds2,
    ifd,
    length,
    less,
    llm_rating,
    perplexity,
    random,
)
