"""Turn an LLM judge's free text into a score, or into NaN with the reason it could not.

    parse_score("The answer is correct.\\nScore: 4", low=0, high=5)   # Rating(score=4.0)
    parse_score("4/5", 0, 5).score                                   # 4.0
    parse_score("Rating: 7 out of 5", 0, 5).reason                   # 'out of range: 7 not in [0, 5]'
    parse_ds2('{"Rarity": 6, ..., "Overall rating": 8}')             # Rating(score=4.0), sub-scores in .extra
    ds2_compress(8) == 4.0                                           # s = clip(overall, 4, 9) - 4

A failure is never 0 or a default. Reasons are `category: detail`, so `stats.json` can count them by
the category (text before the first colon): `backend error`, `empty output`, `no score found`,
`out of range`, `scale mismatch`, `no JSON object`, `missing key`, `not a number`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from fedcurate.common.rating.base import Generation, Rating

NUMBER = r"(-?\d+(?:\.\d+)?)"
_NOT_RANGE = r"(?![\d/]|\.\d)(?!\s*(?:to|-|–)\s*\d)"  # "4" but not "4/10", "1 to 5" or "1-5"
# "Score: 4", "Overall rating: **4**", "score of 4", "Educational score = 3", "Rating - 4"
_LABELLED = re.compile(
    r"\b(?:score|rating|grade|mark|overall(?:\s+(?:rating|score|quality))?)\s*(?:\(\s*\d+\s*-\s*\d+\s*\))?"
    r"\s*(?:is|of|=|:|-|–)?\s*[*_`\"']*\s*" + NUMBER + _NOT_RANGE,
    re.IGNORECASE,
)
# "4/5", "4 / 5", "4 out of 5"
_FRACTION = re.compile(NUMBER + r"\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
# "I'd rate it 4.", "I would give this response a 3", "rating it a 2", "I assign a 5"
_VERB = re.compile(
    r"\b(?:rate|rating|give|giving|score|scoring|grade|grading|assign|assigning|award|awarding)\s+"
    r"(?:(?:it|this|that|the\s+\w+|this\s+\w+)\s+)?(?:(?:an?|as)\s+)?[*_`]*" + NUMBER + r"\b" + _NOT_RANGE,
    re.IGNORECASE,
)
_BOLD = re.compile(r"\*\*\s*" + NUMBER + r"\s*\*\*")
_BARE = re.compile(r"^\s*[*_`\"']*\s*" + NUMBER + r"\s*[*_`\"']*\s*\.?\s*$")
_OVERALL = re.compile(r"\boverall(?:\s+rating)?\s*[\"']?\s*[:=]\s*" + NUMBER, re.IGNORECASE)
SCORE_KEYS = ("score", "rating", "overall", "overallrating", "overallscore", "grade")


def parse_score(text: str, low: float, high: float, *, pick: str = "last") -> Rating:
    """A single score in [low, high] from free text; NaN with a reason when none can be read.

    Tried in order, first hit wins: a JSON object with a score-like key (the last object in the text),
    a labelled number ("Score: 4"), a fraction over `high` ("4/5", "4 out of 5"), a rating verb ("rate
    it 4"), a bold number ("**4**"), and a text that is just a number. Within one kind, `pick` chooses
    the first or the last match (judges asked to lead with the score: "first"; to conclude: "last").
    """
    if not text.strip():
        return Rating.failure("empty output", text)
    obj = last_json_object(text)
    if obj is not None:
        value = _lookup(obj, SCORE_KEYS)
        if value is not None:
            return _checked(value, low, high, text)
    fractions = [m for m in _FRACTION.finditer(text) if float(m.group(2)) == float(high)]
    for matches in (list(_LABELLED.finditer(text)), fractions, list(_VERB.finditer(text)),
                    list(_BOLD.finditer(text)), list(_BARE.finditer(text))):
        if matches:
            match = matches[0] if pick == "first" else matches[-1]
            return _checked(match.group(1), low, high, text)
    other = next(_FRACTION.finditer(text), None)
    if other is not None:
        return Rating.failure(f"scale mismatch: {other.group(0)!r} is not out of {_fmt(high)}", text)
    return Rating.failure("no score found: expected e.g. 'Score: 4' or '4/5'", text)


def parse_ds2(text: str) -> Rating:
    """DS2's JSON ratings (1-10 each): the score is the compressed overall rating (0-5).

    The last JSON object in the text is read; its sub-ratings (Rarity, Complexity, Informativeness)
    go to `extra` when present. Without any JSON object, an "Overall rating: N" line is accepted.
    """
    if not text.strip():
        return Rating.failure("empty output", text)
    obj = last_json_object(text)
    extra: dict[str, Any] = {}
    if obj is not None:
        value = _lookup(obj, ("overallrating", "overall", "overallscore"))
        if value is None:
            return Rating.failure(f"missing key: no 'Overall rating' in {sorted(obj)}", text)
        for key in ("Rarity", "Complexity", "Informativeness"):
            sub = _number(_lookup(obj, (key.lower(),)))
            if sub is not None:
                extra[key.lower()] = sub
    else:
        match = _OVERALL.search(text)
        if match is None:
            return Rating.failure("no JSON object: expected {\"Overall rating\": N, ...}", text)
        value = match.group(1)
    overall = _checked(value, 1, 10, text)
    if overall.reason:
        return overall
    extra["overall"] = overall.score
    return Rating(ds2_compress(overall.score), raw=text, extra=extra)


def ds2_compress(overall: float) -> float:
    """DS2's 1-10 overall rating to its 0-5 score: s = clip(overall, 4, 9) - 4 (NaN stays NaN)."""
    if math.isnan(overall):
        return math.nan
    return min(max(overall, 4.0), 9.0) - 4.0


def from_generation(gen: Generation, low: float, high: float, pick: str = "last") -> Rating:
    """`parse_score` of a backend completion, or its error as the failure reason."""
    if gen.error:
        return Rating.failure(f"backend error: {gen.error}", gen.text)
    return parse_score(gen.text, low, high, pick=pick)


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last top-level JSON object in `text` (inside code fences or prose), or None."""
    decoder = json.JSONDecoder()
    found: dict[str, Any] | None = None
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found = obj
        i = text.find("{", end)
    return found


def _lookup(obj: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """The value of the first of `keys` present in `obj`, comparing keys without case or punctuation."""
    norm = {re.sub(r"[^a-z0-9]", "", str(k).lower()): v for k, v in obj.items()}
    for key in keys:
        if key in norm:
            return norm[key]
    return None


def _number(value: Any) -> float | None:
    """A JSON value as a float: a number, or a string that starts with one ("8", "8/10")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = re.match(r"\s*" + NUMBER, value)
        return float(match.group(1)) if match else None
    return None


def _checked(value: Any, low: float, high: float, raw: str) -> Rating:
    number = _number(value)
    if number is None or math.isnan(number):
        return Rating.failure(f"not a number: {value!r}", raw)
    if not low <= number <= high:
        return Rating.failure(f"out of range: {_fmt(number)} not in [{_fmt(low)}, {_fmt(high)}]", raw)
    return Rating(number, raw=raw)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
