"""FedAvg of the proxy-classifier head (FineWeb-Edu-style scorer trained at every site on its LLM ratings).

The head is a small state dict (e.g. `{"weight": (classes, dim), "bias": (classes,)}`) on top of a frozen,
shared embedding model, so plain FedAvg weighted by examples is exact. Replies are validated as in
`lora_fedavg.ValidatedFedAvg` (keys, shapes, dtypes, finite values, weight > 0); bad ones are excluded.

    strategy = HeadFedAvg(template=head.state_dict(), weighted_by_key="num-examples")
    result = strategy.start(grid, ArrayRecord(head.state_dict()), num_rounds=5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedcurate.strategies.lora_fedavg import ValidatedFedAvg
from fedcurate.strategies.merging import weighted_mean


def average_head(states: Sequence[Mapping[str, Any]], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """Weighted mean (weights rescaled to sum 1) of head state dicts, in the first state's dtypes."""
    mean = weighted_mean(states, weights)
    return {k: v.numpy().astype(np.asarray(states[0][k]).dtype) for k, v in mean.items()}


class HeadFedAvg(ValidatedFedAvg):
    """Validated FedAvg of the proxy-classifier head; arguments as `ValidatedFedAvg` (template + FedAvg's)."""

    def aggregate_arrays(self, states: list[dict[str, np.ndarray]], weights: list[float]) -> dict[str, np.ndarray]:
        return average_head(states, weights)
