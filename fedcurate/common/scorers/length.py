"""`length`: completion length in characters, the "longer responses are better" baseline of DS2.

Zhao et al. (2024, "Long Is More for Alignment") found that picking the longest responses is a
strong baseline for instruction tuning; DS2 reports it as `Completion_length`.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedcurate.common.config import Config
from fedcurate.common.data.sample import Sample
from fedcurate.common.scorers.base import SCORERS


@SCORERS.register("length")
class LengthScorer:
    name = "length"
    higher_is_better = True

    def __init__(self, config: Config) -> None:
        del config  # no settings

    def score_batch(self, samples: Sequence[Sample]) -> list[float]:
        return [float(len(s.response)) for s in samples]
