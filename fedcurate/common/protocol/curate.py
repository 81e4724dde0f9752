"""Phase `curate` (DS2, federated): consensus counts summed at the server, which solves the transition
matrix T and prior p (HOC) and sends them back; every site then detects and corrects its own ratings.

    server/phases/curate.py  ->  client/steps/curate.py  ->  replies checked by `check_counts`, `check_apply`
"""

from __future__ import annotations

from collections.abc import Callable

from fedcurate.common.protocol.payload import Payload, SecureSum
from fedcurate.common.protocol.rounds import Field, Round, require
from fedcurate.common.protocol.validation import validate_counts

DS2_SCORERS = frozenset({"ds2", "ds2-raw"})  # the scorers that need this phase (they use the global T)

ROUNDS = (
    Round("curate/counts", request=(), reply=(
        Field("third", "int64[K^3]", "the site's consensus counts of rating triples among neighbours",
              array=True),
        Field("rows", "int >= 0", "how many neighbour triples the site counted"),
        Field("num-classes", "int", "K, the rating scale"),
        Field("num-rated", "int", "how many samples have a rating"),
    ), secure=("third", "rows")),
    Round("curate/apply", request=(Field("T", "float64[K, K]", array=True), Field("p", "float64[K]", array=True)),
          reply=(Field("flagged", "int", "how many ratings the site found corrupted"),
                 Field("changed", "int", "how many ratings curation changed"))),
)


def check_counts(k: int) -> Callable[[str, Payload], list[str]]:
    def check(site: str, r: Payload) -> list[str]:
        bad = require(r.values, "rows") + ([] if "third" in r.arrays else ["missing array 'third'"])
        return bad or validate_counts(r.arrays["third"], expected_shape=(k ** 3,), total=int(r.values["rows"]))
    return check


def check_summed_counts(k: int) -> Callable[[SecureSum], list[str]]:
    return lambda r: validate_counts(r.sums["third"], expected_shape=(k ** 3,), total=int(r.sums["rows"][0]))


def check_apply(site: str, r: Payload) -> list[str]:
    return require(r.values, "changed", "flagged")
