"""A round of federated LoRA at a site (the `warmup` and `train` steps): local steps from the global state.

    reply = lora_round(cfg, samples, payload)    # adapter (+ Adam moments), examples, first and last loss

Under site-level DP only the adapter weights leave, to be clipped and noised (the moments stay here).
Protocol: `common/protocol/lora.py`; server side: `server/phases/lora.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedcurate.common.config import Config
from fedcurate.common.data.sample import Sample
from fedcurate.common.protocol.lora import WEIGHT_PREFIX
from fedcurate.common.protocol.payload import Payload


def lora_round(cfg: Config, samples: Sequence[Sample], payload: Payload) -> Payload:
    from fedcurate.common.federated_lora import local_update

    v = payload.values
    if not samples:
        return Payload({"num-examples": 0})
    update = local_update(cfg, samples, dict(payload.arrays), start_step=int(v["start-step"]),
                          steps=int(v["steps"]), total_steps=int(v["total-steps"]), seed=int(v["seed"]))
    losses = [float(x) for x in update.losses]
    state = dict(update.state)
    if cfg.privacy.train_noise_multiplier > 0:  # site-level DP: only the adapter leaves, to be clipped and noised
        state = {k: a for k, a in state.items() if k.startswith(WEIGHT_PREFIX)}
        losses = []
    return Payload({"num-examples": update.num_examples, "lr-mean": float(update.lr_mean),
                    "loss-first": losses[0] if losses else float("nan"),
                    "loss-last": losses[-1] if losses else float("nan")}, state)
