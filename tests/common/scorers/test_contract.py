"""Every registered scorer honours the Scorer contract (STYLE.md §2)."""

import math

import pytest

from fedcurate.common.config import load_config
from fedcurate.common.data.sample import Sample
from fedcurate.common.scorers import SCORERS, Scorer, failure_reason

SAMPLES = [
    Sample(id=f"s{i}", instruction=f"Reverse the word: {w}", response=w[::-1], metadata={"clean": True, "rating": i % 6})
    for i, w in enumerate(["planet", "cat", "orange", "sky", "river", "moon"])
]
# Scorers that need settings beyond the defaults to be constructed.
SETTINGS = {
    "ds2": {"curation.score-field": "rating"},
    "ds2-raw": {"curation.score-field": "rating"},
    "rating": {"rating.raters": [{"name": "judge", "kind": "selectit", "model": "tiny", "batch-size": 4,
                                  "selectit-prompts": 2}]},
}


@pytest.mark.parametrize("name", SCORERS.names())
def test_scorer_contract(name, tmp_path):
    # Prepare
    cfg = load_config(None, {"run.dir": str(tmp_path), "model.max-length": 256, "model.batch-size": 4, **SETTINGS.get(name, {})})
    scorer = SCORERS.get(name)(cfg)
    # Execute
    score = getattr(scorer, "score_dataset", scorer.score_batch)
    scores = score(SAMPLES)
    reversed_scores = score(SAMPLES[::-1])
    # Assert
    assert isinstance(scorer, Scorer)
    assert scorer.name == name and isinstance(scorer.higher_is_better, bool)
    assert len(scores) == len(SAMPLES) and all(isinstance(s, float) for s in scores)
    for a, b in zip(scores, reversed_scores[::-1], strict=True):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-5, abs=1e-6)
    for s in scores:
        assert not math.isnan(s) or failure_reason(s) not in ("", "nan"), "a NaN score must carry its reason"
