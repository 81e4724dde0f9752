"""How a phase's rounds are declared: each round's request and reply fields, and what each reply field
reveals about a site. The declarations are the protocol's documentation and are checked by the tests (every
field a site step replies is declared, `tests/common/protocol/test_rounds.py`).

    Round("select", request=(Field("threshold", "float | None"),),
          reply=(Field("kept", "int >= 0", "how many samples the site keeps"), ...))

Kinds are written as a reader would check them ("int >= 0", "float[bins] int64", "dict scorer -> [5 floats]").
Every reply also carries `COMMON_REPLY` (added by the site's step runner).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Field:
    """One request or reply field: its name (a `values` key, or an `arrays` key when `array`), its kind, and
    for a reply field what the server learns about the site from it."""

    name: str
    kind: str
    reveals: str = ""
    array: bool = False
    optional: bool = False


@dataclass(frozen=True)
class Round:
    """One round: the step name (`<i>` stands for a round number), its request and reply fields, and the
    reply fields summed under secure aggregation (`privacy.secure-aggregation`), the only ones that then
    leave the site (masked)."""

    step: str
    request: tuple[Field, ...]
    reply: tuple[Field, ...]
    secure: tuple[str, ...] = ()
    doc: str = ""

    def matches(self, step: str) -> bool:
        """'warmup/3' matches 'warmup/<i>'."""
        mine, theirs = self.step.split("/"), step.split("/")
        return len(mine) == len(theirs) and all(a == b or (a == "<i>" and b.isdigit())
                                                for a, b in zip(mine, theirs, strict=True))

    def reply_keys(self) -> set[str]:
        return {f.name for f in (*self.reply, *COMMON_REPLY)}


COMMON_REPLY = (
    Field("site", "str", "the site's name"),
    Field("seconds", "float", "how long the step took"),
    Field("resumed", "bool", "the reply was stored from an earlier identical request", optional=True),
)


def num(v: Any) -> float:
    """A reply number as float (None -> NaN)."""
    return float("nan") if v is None else float(v)


def finite_or(x: Any, default: float) -> float:
    v = num(x)
    return v if math.isfinite(v) else default


def require(values: dict[str, Any], *keys: str) -> list[str]:
    """Problems for the keys missing from a reply's values."""
    return [f"missing value {k!r}" for k in keys if k not in values]
