"""The server's side of every phase, one module each, free of Flower (in run order):

    prepare    sites load and validate their data                         replies: counts
    curate     DS2: consensus counts -> server sums, solves T and p ->     replies: counts, then numbers
               sites detect and correct with the global T                  of changed scores
    warmup     federated LoRA rounds; each round's average (adapter and    replies: adapter + Adam moments
               Adam moments) is one shared CLUES checkpoint
    dynamics   server computes the anchor gradients at every checkpoint    replies: per-scorer moments
               and broadcasts them with the checkpoints; sites score
    threshold  composite score range, then histograms on server grids      replies: min/max, bin counts
               narrowing to the cut -> one global threshold (or the CLUES
               anchor rule, a fixed threshold, or per-site local rules)
    select     sites keep what clears it                                   replies: kept / dropped by reason
    train      federated LoRA on the kept data (FedAvg per round, or       replies: adapter + Adam moments
               one local run per site and a one-shot merge)
    evaluate   the server evaluates the merged adapter on its test set    (optional round at the sites)

Each is a function `Run -> summary` (`server/run.py`). The rounds and replies of phase P are declared in
`common/protocol/P.py`, and what a site computes for them is `client/steps/P.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedcurate.common.protocol.layout import PHASES
from fedcurate.server.phases.curate import phase_curate
from fedcurate.server.phases.dynamics import phase_dynamics
from fedcurate.server.phases.evaluate import phase_evaluate
from fedcurate.server.phases.prepare import phase_prepare
from fedcurate.server.phases.select import phase_select
from fedcurate.server.phases.threshold import phase_threshold
from fedcurate.server.phases.train import phase_train
from fedcurate.server.phases.warmup import phase_warmup
from fedcurate.server.run import Run

PHASE_FUNCTIONS: dict[str, Callable[[Run], dict[str, Any]]] = {
    "prepare": phase_prepare, "curate": phase_curate, "warmup": phase_warmup, "dynamics": phase_dynamics,
    "threshold": phase_threshold, "select": phase_select, "train": phase_train, "evaluate": phase_evaluate,
}
assert tuple(PHASE_FUNCTIONS) == PHASES
