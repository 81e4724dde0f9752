"""Phase `train`: federated LoRA on the samples each site kept (FedAvg per round), or one local run per
site and a one-shot merge of the adapters (`federation.aggregation = "merge"`, one round `train/1`).

    server/phases/train.py  ->  client/steps/train.py  ->  replies checked by `lora.check_state`
"""

from __future__ import annotations

from fedcurate.common.protocol.lora import ROUNDS as _LORA
from fedcurate.common.protocol.lora import check_state

ROUNDS = tuple(r for r in _LORA if r.step.startswith("train/"))
__all__ = ["ROUNDS", "check_state"]
