"""`rating` scorer: the combined score of the LLM raters in [rating] (judge prompts and/or SelectIT).

    [scoring]
    scorers = ["rating"]
    [[rating.raters]]
    name = "selectit-tiny"
    kind = "selectit"

The score is the `rating` column of `fedcurate.common.rating.raters.rate_dataset`: the raters' valid
scores combined by `rating.combine` (e.g. the weighted mean, SelectIT's model level). Higher is better.
Ratings are cached under rating.cache-dir (default `<run.dir>/cache`), so the pipeline's batches and a
re-run never rate the same sample twice. Papers: DS2 (Pang et al., 2024), AlpaGasus (Chen et al., 2024),
FineWeb-Edu (Penedo et al., 2024), SelectIT (Liu et al., 2024; equations in common/rating/selectit.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from fedcurate.common.config import Config
from fedcurate.common.data.sample import Sample
from fedcurate.common.rating.base import Rater
from fedcurate.common.rating.raters import build_rater, rate_dataset
from fedcurate.common.rating.run import rating_cache_dir
from fedcurate.common.scorers.base import SCORERS, failed


@SCORERS.register("rating")
class RatingScorer:
    """Combined LLM rating of each sample; the raters (and their models) are built on first use."""

    name = "rating"
    higher_is_better = True

    def __init__(self, config: Config) -> None:
        if not config.rating.raters:
            raise ValueError("scorer 'rating' needs at least one [[rating.raters]] table in the config")
        self.config = config
        self.cache_dir = rating_cache_dir(config, config.run.dir)
        self._raters: list[Rater] | None = None

    def score_batch(self, samples: Sequence[Sample]) -> list[float]:
        if not samples:
            return []
        if self._raters is None:
            self._raters = [build_rater(r, cache_dir=self.cache_dir) for r in self.config.rating.raters]
        result = rate_dataset(samples, self.config.rating, self.cache_dir, raters=self._raters)
        return [failed(why) if why else value
                for value, why in zip(result.columns["rating"], result.columns["rating_reason"], strict=True)]
