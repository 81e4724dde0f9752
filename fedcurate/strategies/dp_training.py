"""Site-level central differential privacy for the federated LoRA rounds, with Flower's DP strategy wrapper.

    new_state, release = dp_average(site_states, current_state, server_round=3, noise_multiplier=1.0,
                                    clipping_norm=0.5)
    accountant.spend("train/3", release.sigma, release.sensitivity)

Each round, Flower's `DifferentialPrivacyServerSideFixedClipping` (wrapping Flower's `FedAvg`) clips every
site's update (its returned state minus the broadcast one: LoRA factors and Adam moments together) to L2
norm C, averages the clipped updates uniformly (a weight of 1 per site, so no site counts for more than
1/n), and adds Gaussian noise of standard deviation z C / n. Adding or removing one site's whole data
moves the average by at most C / n: the release is a Gaussian mechanism with that sensitivity, which the
run's zCDP accountant (`common/privacy.py`) sums over rounds. The guarantee protects a site (all its
samples), not a sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
from flwr.supercore.differential_privacy import compute_stdv

State = dict[str, np.ndarray]
WEIGHT_KEY = "dp-weight"


@dataclass(frozen=True)
class Release:
    """One noisy average: noise standard deviation, L2 sensitivity to one site, sites averaged."""

    sigma: float
    sensitivity: float
    sites: int


def dp_average(states: list[State], current: State, *, server_round: int, noise_multiplier: float,
               clipping_norm: float) -> tuple[State, Release]:
    """The uniform average of the sites' clipped updates plus Gaussian noise, applied to `current`."""
    if not states:
        raise ValueError("dp_average: no site states")
    if noise_multiplier <= 0 or clipping_norm <= 0:
        raise ValueError(f"dp_average: noise multiplier {noise_multiplier} and clipping norm {clipping_norm} "
                         f"must be > 0")
    keys = list(current)
    n = len(states)
    for i, st in enumerate(states):  # Flower's clipping divides by the update's norm
        if not any(np.any(np.asarray(st[k], dtype=np.float64) != np.asarray(current[k], dtype=np.float64))
                   for k in keys):
            raise ValueError(f"dp_average: state {i} equals the broadcast state (a zero update cannot be clipped)")
    strategy = DifferentialPrivacyServerSideFixedClipping(
        FedAvg(weighted_by_key=WEIGHT_KEY, min_train_nodes=1, min_available_nodes=1),
        noise_multiplier, clipping_norm, n)
    strategy.current_arrays = _record(current, keys)  # what configure_train would have broadcast
    replies = [_reply(RecordDict({"arrays": _record(s, keys), "metrics": MetricRecord({WEIGHT_KEY: 1})}), i)
               for i, s in enumerate(states, start=1)]
    arrays, _ = strategy.aggregate_train(server_round, replies)
    if arrays is None:
        raise RuntimeError(f"Flower's DP wrapper refused to aggregate round {server_round}")
    out = {k: np.asarray(arrays[k].numpy(), dtype=np.asarray(current[k]).dtype) for k in keys}
    return out, Release(compute_stdv(noise_multiplier, clipping_norm, n), clipping_norm / n, n)


def _reply(content: RecordDict, site: int) -> Message:
    """A train reply as the wrapper receives it (built here: the orchestrator's transport may not be Flower)."""
    meta = Metadata(run_id=0, message_id=f"site-{site}", src_node_id=site, dst_node_id=0, reply_to_message_id="",
                    group_id="", created_at=time.time(), ttl=3600.0, message_type=MessageType.TRAIN)
    return Message(content, metadata=meta)


def _record(state: State, keys: list[str]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(state[k], dtype=np.float64)) for k in keys})
