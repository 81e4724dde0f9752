"""Phase `dynamics`: every site scores every sample with every configured scorer; CLUES uses the server's
checkpoints and anchor gradients, broadcast in the request. Only five numbers per scorer leave a site.

    server/phases/dynamics.py  ->  client/steps/dynamics.py  ->  replies checked by `check_reply`
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from fedcurate.common.protocol.payload import Payload
from fedcurate.common.protocol.rounds import Field, Round, num, require

ROUNDS = (
    Round("dynamics", request=(
        Field("checkpoints", "list of {step, lr_mean}", optional=True),
        Field("ckpt<i>/<state key>", "float32 checkpoint state", array=True, optional=True),
        Field("grad<i>/<module>", "float32 anchor gradient", array=True, optional=True),
    ), reply=(
        Field("moments", "dict scorer -> [count, sum, sum of squares, min, max]",
              "per scorer: how many samples scored, the sum and sum of squares of their oriented scores, and "
              "the site's lowest and highest score"),
        Field("failures", "dict scorer -> int", "per scorer: how many samples failed scoring"),
    )),
)


def moments(oriented: np.ndarray) -> list[float]:
    """[count, sum, sum of squares, min, max] of the finite values (min/max NaN when there are none)."""
    v = oriented[np.isfinite(oriented)]
    if not v.size:
        return [0.0, 0.0, 0.0, float("nan"), float("nan")]
    return [float(v.size), float(v.sum()), float(np.square(v).sum()), float(v.min()), float(v.max())]


def check_reply(scorers: Sequence[str]) -> Callable[[str, Payload], list[str]]:
    def check(site: str, r: Payload) -> list[str]:
        bad = require(r.values, "moments")
        if bad:
            return bad
        problems = []
        for name in scorers:
            m = r.values["moments"].get(name)
            if m is None or len(m) != 5:
                problems.append(f"moments of {name!r} missing or malformed")
            elif not (math.isfinite(num(m[0])) and num(m[0]) >= 0 and math.isfinite(num(m[1]))
                      and math.isfinite(num(m[2])) and num(m[2]) >= 0):
                problems.append(f"moments of {name!r} not finite or negative: {m}")
        return problems
    return check
