"""Phase `warmup`: federated LoRA rounds on every site's samples; each round's average (adapter and Adam
moments) is one shared checkpoint for the training-dynamics scorers (CLUES, LESS, DataInf).

    server/phases/warmup.py  ->  client/steps/warmup.py  ->  replies checked by `lora.check_state`
"""

from __future__ import annotations

from fedcurate.common.protocol.lora import ROUNDS as _LORA
from fedcurate.common.protocol.lora import check_state

DYNAMICS_SCORERS = frozenset({"clues", "datainf", "less"})  # the scorers that need checkpoints
ROUNDS = tuple(r for r in _LORA if r.step.startswith("warmup/"))
__all__ = ["DYNAMICS_SCORERS", "ROUNDS", "check_state"]
