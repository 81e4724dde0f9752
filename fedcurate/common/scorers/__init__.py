"""Scorers: one file per scorer, registered in `SCORERS` by the import lines below.

    from fedcurate.common.scorers import SCORERS
    scorer = SCORERS.get("length")(cfg)
    scores = scorer.score_batch(samples)

The config validates `scoring.scorers` against `fedcurate.common.config.SCORER_NAMES` without importing
this package (the scorers import the config); importing it checks that both name the same scorers.
"""

from fedcurate.common.config import SCORER_NAMES
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

if SCORERS.names() != sorted(SCORER_NAMES):  # what a config may name == what is registered
    raise RuntimeError(f"registered scorers {SCORERS.names()} differ from fedcurate.common.config.SCORER_NAMES "
                       f"{sorted(SCORER_NAMES)}: add the name to both")
