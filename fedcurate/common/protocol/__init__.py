"""The protocol between the server and the sites, free of Flower: what each phase sends and what comes back.

    from fedcurate.common.protocol import ROUNDS, Payload, round_of
    round_of("threshold/hist/2").reply        # the fields a site replies, each with what it reveals

One module per phase (`prepare`, `curate`, `warmup`, `dynamics`, `threshold`, `select`, `train`,
`evaluate`) declares its rounds (`rounds.Round`: request and reply fields, and what each reply field
reveals about a site) and holds the validation of those replies. `payload` is the message content and the
`Transport` interface, `layout` the run directory, `histogram` the threshold maths both sides share,
`validation` the generic checks of counts and arrays. The server's side of a phase is
`server/phases/<phase>.py`, a site's side `client/steps/<phase>.py`; both import this package and neither
imports the other.
"""

from __future__ import annotations

from fedcurate.common.protocol import curate, dynamics, evaluate, prepare, select, threshold, train, warmup
from fedcurate.common.protocol.layout import PHASES
from fedcurate.common.protocol.payload import Payload, RoundResult, SecureSum, Transport
from fedcurate.common.protocol.rounds import Field, Round

ROUNDS: dict[str, tuple[Round, ...]] = {
    "prepare": prepare.ROUNDS, "curate": curate.ROUNDS, "warmup": warmup.ROUNDS, "dynamics": dynamics.ROUNDS,
    "threshold": threshold.ROUNDS, "select": select.ROUNDS, "train": train.ROUNDS, "evaluate": evaluate.ROUNDS,
}
assert tuple(ROUNDS) == PHASES


def round_of(step: str) -> Round:
    """The declaration of a step ('warmup/3', 'threshold/hist/0', 'select', ...)."""
    for r in ROUNDS.get(step.split("/")[0], ()):
        if r.matches(step):
            return r
    raise KeyError(f"no round {step!r} in the protocol")


__all__ = ["PHASES", "ROUNDS", "Field", "Payload", "Round", "RoundResult", "SecureSum", "Transport", "round_of"]
