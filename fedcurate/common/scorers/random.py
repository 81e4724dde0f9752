"""`random`: a uniform score per sample, the baseline every selection must beat.

The score is a hash of (seed, sample id), so it does not depend on batch size, order or which other
samples are present: a site in a federation draws the same value a centralized run would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from fedcurate.common.config import Config
from fedcurate.common.data.sample import Sample
from fedcurate.common.scorers.base import SCORERS


@SCORERS.register("random")
class RandomScorer:
    name = "random"
    higher_is_better = True

    def __init__(self, config: Config) -> None:
        self.seed = config.scoring.seed

    def score_batch(self, samples: Sequence[Sample]) -> list[float]:
        return [_uniform(f"{self.seed}:{s.id}") for s in samples]


def _uniform(key: str) -> float:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
