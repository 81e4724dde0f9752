"""Phase `prepare`: every site loads and validates its data (and rates and embeds it when a scorer needs it).

    server/phases/prepare.py  ->  client/steps/prepare.py  ->  replies checked by `check_reply`
"""

from __future__ import annotations

from fedcurate.common.protocol.payload import Payload
from fedcurate.common.protocol.rounds import Field, Round, require

ROUNDS = (
    Round("prepare", request=(), reply=(
        Field("num-samples", "int >= 0", "the size of the site's valid data"),
        Field("num-rejects", "int >= 0", "how many rows were invalid"),
        Field("rejects-by-reason", "dict kind -> int", "invalid rows per kind of fault (no row content)"),
        Field("num-clean", "int", "ground-truth clean count (synthetic data only)", optional=True),
        Field("rating-failures", "dict reason -> int", "rating failures per kind", optional=True),
        Field("rating-histogram", "list[int]", "the site's rounded-rating histogram (not under secure "
              "aggregation)", optional=True),
        Field("num-unrated", "int", "samples without a rating", optional=True),
        Field("embedding-dim", "int", "the embedding model's width", optional=True),
    )),
)


def check_reply(site: str, r: Payload) -> list[str]:
    bad = require(r.values, "num-samples", "num-rejects")
    if not bad and (int(r.values["num-samples"]) < 0 or int(r.values["num-rejects"]) < 0):
        bad.append("negative counts")
    return bad
