"""A site's side of every step, one module per phase, free of Flower (the server sends them in order):

    prepare            load and validate the data               -> counts of samples, rejects by kind
    curate/counts      DS2: raw ratings, embeddings, HOC counts  -> consensus counts (K^3 integers)
    curate/apply       DS2 with the global T and p               -> numbers flagged / changed
    warmup/<r>         LoRA steps from the global adapter        -> adapter + Adam moments, examples
    dynamics           every scorer (CLUES with the broadcast    -> per scorer: count, sum, sum of squares,
                       checkpoints and anchor gradients)            min, max of the oriented scores
    threshold/range    the composite score                      -> its min and max
    threshold/hist/<i> histogram on the server's grid           -> bin counts
    select             keep what clears the threshold           -> kept / dropped by reason
    train/<r>          LoRA steps on the kept samples            -> adapter + Adam moments, examples
    evaluate           the adapter on the site's held-out set    -> loss, token accuracy, exact match

Each step is `(cfg, where, payload, out) -> reply`, run by `client/handlers.handle`. The rounds and replies
of phase P are declared in `common/protocol/P.py`; the server's side is `server/phases/P.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fedcurate.client.site import SiteLocation
from fedcurate.client.steps.curate import step_curate_apply, step_curate_counts
from fedcurate.client.steps.dynamics import step_dynamics
from fedcurate.client.steps.evaluate import step_evaluate
from fedcurate.client.steps.prepare import step_prepare
from fedcurate.client.steps.select import step_select
from fedcurate.client.steps.threshold import step_threshold_hist, step_threshold_range
from fedcurate.client.steps.train import step_train
from fedcurate.client.steps.warmup import step_warmup
from fedcurate.common.config import Config
from fedcurate.common.protocol.payload import Payload

StepFn = Callable[[Config, SiteLocation, Payload, Path], Payload]

STEPS: dict[str, StepFn] = {
    "prepare": step_prepare,
    "curate/counts": step_curate_counts,
    "curate/apply": step_curate_apply,
    "warmup": step_warmup,
    "dynamics": step_dynamics,
    "threshold/range": step_threshold_range,
    "threshold/hist": step_threshold_hist,
    "select": step_select,
    "train": step_train,
    "evaluate": step_evaluate,
}
