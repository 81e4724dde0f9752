"""Phase `evaluate`: the server evaluates the merged adapter on its test set; with `evaluation.at-sites`
every site evaluates the broadcast adapter on its own held-out set and only the figures come back.

    server/phases/evaluate.py  ->  client/steps/evaluate.py  ->  replies checked by `check_reply`
"""

from __future__ import annotations

import math

from fedcurate.common.protocol.payload import Payload
from fedcurate.common.protocol.rounds import Field, Round, num, require

SITE_METRICS = ("loss", "token-accuracy", "exact-match")

ROUNDS = (
    Round("evaluate", request=(Field("weight/<key>", "float32 adapter weights", array=True),), reply=(
        Field("num-samples", "int", "the size of the site's held-out set (0: none)"),
        Field("loss", "float", "the adapter's mean loss on it", optional=True),
        Field("token-accuracy", "float", "its token accuracy", optional=True),
        Field("exact-match", "float", "its exact-match rate", optional=True),
        Field("skipped", "str", "why the site has no held-out set", optional=True),
    )),
)


def check_reply(site: str, r: Payload) -> list[str]:
    bad = require(r.values, "num-samples")
    if bad or int(r.values["num-samples"]) == 0:
        return bad
    return [f"{k} = {r.values.get(k)!r} is not a finite number" for k in SITE_METRICS[:2]
            if not math.isfinite(num(r.values.get(k)))]
