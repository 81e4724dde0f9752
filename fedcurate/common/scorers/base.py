"""The `Scorer` protocol, the scorer registry, and how a scorer reports a per-sample failure.

A scorer turns a batch of samples into one float each, in the same order. A sample it cannot
score gets `failed(reason)`: a NaN that carries its reason, so the pipeline records why, and no
sample is ever given a silent default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from fedcurate.common.data.sample import Sample
from fedcurate.common.failures import ScoreFailure, failed, failure_reason  # noqa: F401 (re-exported)
from fedcurate.common.registry import Registry


@runtime_checkable
class Scorer(Protocol):
    """What every scorer provides. Models load lazily, on the first `score_batch` call."""

    name: str
    higher_is_better: bool

    def score_batch(self, samples: Sequence[Sample]) -> list[float]:
        """One score per sample, same order; `failed(reason)` for a sample that cannot be scored."""
        ...


# A dataset-level scorer (its score depends on the other samples, e.g. through a kNN graph) also has
# `score_dataset(samples) -> list[float]` and `dataset_level = True`; the pipeline then calls it once
# over the whole dataset instead of `score_batch` per batch.


SCORERS: Registry[type[Any]] = Registry("scorer")
