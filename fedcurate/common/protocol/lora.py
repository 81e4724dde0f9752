"""Phases `warmup` and `train`: rounds of federated LoRA. The server sends the global adapter state
(`weight/<key>` LoRA weights and `exp_avg/`, `exp_avg_sq/` Adam moments) and the round's schedule; every
site takes that many local steps on its own samples (all of them in warm-up, the kept ones in training)
and replies with its new state and how many examples it trained on.

    server/phases/warmup.py, train.py  ->  client/steps/lora.py  ->  replies checked by `check_state`

Under site-level DP (`privacy.train-noise-multiplier`) only the `weight/` arrays leave the site and the
losses are left out; the moments stay at the site.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedcurate.common.protocol.payload import Payload
from fedcurate.common.protocol.rounds import Field, Round, require
from fedcurate.common.protocol.validation import validate_arrays

WEIGHT_PREFIX = "weight/"  # the adapter weights in a state; the other parts are Adam moments

_REQUEST = (Field("start-step", "int"), Field("steps", "int"), Field("total-steps", "int"),
            Field("seed", "int"), Field("<state key>", "float32 adapter state", array=True))
_REPLY = (
    Field("num-examples", "int >= 0", "how many samples the site trained on"),
    Field("lr-mean", "float", "the mean learning rate of the round (the schedule, not the data)"),
    Field("loss-first", "float", "the site's training loss at the first step (NaN under DP)"),
    Field("loss-last", "float", "the site's training loss at the last step (NaN under DP)"),
    Field("<state key>", "float32 adapter state", "the site's adapter after its local steps (and Adam "
          "moments, unless DP)", array=True),
)
ROUNDS = (Round("warmup/<i>", _REQUEST, _REPLY), Round("train/<i>", _REQUEST, _REPLY))


def check_state(spec: dict[str, Any]) -> Callable[[str, Payload], list[str]]:
    """A LoRA reply: a non-negative example count and, when it trained, exactly the arrays of `spec`."""
    def check(site: str, r: Payload) -> list[str]:
        bad = require(r.values, "num-examples")
        if bad:
            return bad
        n = int(r.values["num-examples"])
        if n < 0:
            return [f"num-examples = {n} < 0"]
        if n == 0:
            return [] if not r.arrays else ["arrays sent with num-examples = 0"]
        return validate_arrays(r.arrays, spec)
    return check
