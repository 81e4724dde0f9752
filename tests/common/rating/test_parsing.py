"""Reading scores out of judge text: every accepted shape, and every failure as NaN with its reason."""

import math

import pytest

from fedcurate.common.rating.base import Generation
from fedcurate.common.rating.parsing import (
    ds2_compress,
    from_generation,
    last_json_object,
    parse_ds2,
    parse_score,
)

VALID = [
    ("Score: 4", 4.0),
    ("score:4", 4.0),
    ("The response is accurate.\nScore: 3", 3.0),
    ("4/5", 4.0),
    ("I give it 2 / 5 overall", 2.0),
    ("Rating: 4 out of 5", 4.0),
    ("I would say 3 out of 5.", 3.0),
    ("**4**", 4.0),
    ("Verdict: **5** - excellent", 5.0),
    ("I'd rate it 4.", 4.0),
    ("I would give this response a 3 because it is short.", 3.0),
    ("**Score:** 2", 2.0),
    ("Overall rating: **1**", 1.0),
    ("Score (0-5): 5", 5.0),
    ("Educational score: 0", 0.0),
    ("5", 5.0),
    ("  3.\n", 3.0),
    ("Score: 4.5", 4.5),
    ('Here you go: {"score": 2, "reason": "thin"}', 2.0),
    ('```json\n{"Rating": "3"}\n```', 3.0),
    ("On a scale of 1 to 5 I rate it 2.", 2.0),  # the range "1 to 5" is not a score
    ("A score of 1-5 is asked. Score: 4", 4.0),
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_accepted_shapes(text, expected):
    # Execute
    rating = parse_score(text, 0, 5)
    # Assert
    assert rating.reason == ""
    assert rating.score == expected
    assert rating.raw == text


FAILING = [
    ("", "empty output"),
    ("   \n", "empty output"),
    ("The answer is fine but I will not grade it.", "no score found"),
    ("Score: 7", "out of range: 7 not in [0, 5]"),
    ("Rating: -1", "out of range: -1 not in [0, 5]"),
    ("8/10", "scale mismatch: '8/10' is not out of 5"),
    ("Score: 4/10", "scale mismatch"),
    ("Score: 6 out of 5", "out of range: 6 not in [0, 5]"),
    ('{"score": "excellent"}', "not a number: 'excellent'"),
    ('{"score": true}', "not a number: True"),
]


@pytest.mark.parametrize(("text", "reason"), FAILING)
def test_failures_are_nan_with_a_reason(text, reason):
    # Execute
    rating = parse_score(text, 0, 5)
    # Assert
    assert math.isnan(rating.score)
    assert rating.reason.startswith(reason)


def test_first_or_last_labelled_score():
    # Prepare
    text = "Score: 2\nA score of 5 would need sources."
    # Execute
    first, last = parse_score(text, 0, 5, pick="first"), parse_score(text, 0, 5, pick="last")
    # Assert
    assert (first.score, last.score) == (2.0, 5.0)


def test_json_beats_text_and_the_last_object_counts():
    # Prepare
    text = 'Draft: {"score": 1}\nFinal: {"score": 4, "why": {"nested": 5}} Score: 2'
    # Execute
    obj = last_json_object(text)
    rating = parse_score(text, 0, 5)
    # Assert
    assert obj == {"score": 4, "why": {"nested": 5}}
    assert rating.score == 4.0


@pytest.mark.parametrize(("overall", "compressed"), [(1, 0.0), (4, 0.0), (5, 1.0), (7, 3.0), (9, 5.0), (10, 5.0),
                                                     (6.5, 2.5)])
def test_ds2_compression(overall, compressed):
    # Execute / Assert
    assert ds2_compress(overall) == compressed


def test_ds2_compression_keeps_nan():
    # Execute / Assert
    assert math.isnan(ds2_compress(math.nan))


def test_ds2_json_with_sub_scores():
    # Prepare
    text = ('Thinking...\n{"Rarity": 3, "Complexity": 6, "Informativeness": "7", "Overall rating": 8}')
    # Execute
    rating = parse_ds2(text)
    # Assert
    assert rating.score == 4.0
    assert rating.extra == {"rarity": 3.0, "complexity": 6.0, "informativeness": 7.0, "overall": 8.0}


@pytest.mark.parametrize(("text", "score", "reason"), [
    ("Overall rating: 6", 2.0, ""),
    ('{"Rarity": 3}', math.nan, "missing key"),
    ('{"Overall rating": 11}', math.nan, "out of range: 11 not in [1, 10]"),
    ('{"Overall rating": 0}', math.nan, "out of range: 0 not in [1, 10]"),
    ("no ratings here", math.nan, "no JSON object"),
    ("", math.nan, "empty output"),
])
def test_ds2_fallbacks_and_failures(text, score, reason):
    # Execute
    rating = parse_ds2(text)
    # Assert
    if reason:
        assert rating.reason.startswith(reason) and math.isnan(rating.score)
    else:
        assert rating.reason == "" and rating.score == score


def test_backend_error_is_the_reason():
    # Execute
    rating = from_generation(Generation(error="HTTP 500 after 5 retries"), 0, 5)
    # Assert
    assert math.isnan(rating.score)
    assert rating.reason == "backend error: HTTP 500 after 5 retries"
