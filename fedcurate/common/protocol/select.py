"""Phase `select`: every site keeps what clears the global threshold (or, with `selection.scope = "local"`,
applies the selection rule to its own scores) and writes the kept samples it will train on.

    server/phases/select.py  ->  client/steps/select.py  ->  replies checked by `check_reply`
"""

from __future__ import annotations

from fedcurate.common.protocol.payload import Payload
from fedcurate.common.protocol.rounds import Field, Round, require

ROUNDS = (
    Round("select", request=(Field("threshold", "float | None (local rules)"),
                             Field("tie-fraction", "float | None")), reply=(
        Field("num-samples", "int", "the size of the site's data"),
        Field("kept", "int", "how many samples the site keeps"),
        Field("dropped", "int", "how many it drops"),
        Field("dropped-by-reason", "dict reason -> int", "drops per reason (below the threshold, a failure)"),
        Field("threshold", "float | None", "the threshold the site applied (its own, under local rules)"),
        Field("num-clean-kept", "int", "ground-truth clean samples kept (synthetic data only)", optional=True),
        Field("num-clean", "int", "ground-truth clean samples (synthetic data only)", optional=True),
    )),
)


def check_reply(site: str, r: Payload) -> list[str]:
    bad = require(r.values, "kept", "dropped", "num-samples")
    if not bad and int(r.values["kept"]) + int(r.values["dropped"]) != int(r.values["num-samples"]):
        bad.append("kept + dropped != num-samples")
    return bad
