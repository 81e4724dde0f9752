"""FedAvg of federated LoRA states (the server's average of the sites' adapters and Adam moments).

    state = average_states([u.state for u in updates], [u.num_examples for u in updates], exact="svd")

"weight/" keys go through the LoRA maths of `merging.merge_adapters` (exact None = FedIT, A and B averaged
separately; "svd" = the mean product B A re-factored); Adam moments are plain weighted means. After "svd"
the factors live in a new basis, so their averaged moments are only an approximation. A `State` is as in
`common/federated_lora.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedcurate.common.protocol.lora import WEIGHT_PREFIX
from fedcurate.strategies.merging import merge_adapters, normalized

State = dict[str, np.ndarray]
_EXACT_METHODS = {None: "linear", "svd": "svd"}  # "stack" grows the rank, the moments could not follow


def average_states(states: Sequence[State], weights: Sequence[float], exact: str | None = None) -> State:
    """FedAvg weighted by `weights` (rescaled to sum 1): LoRA maths for weights, plain mean for moments."""
    if exact not in _EXACT_METHODS:
        raise ValueError(f"exact = {exact!r}: average_states supports {list(_EXACT_METHODS)} (the rank must stay "
                         f"fixed for the Adam moments to keep their shapes)")
    if not states:
        raise ValueError("average_states: no states to average")
    _check_alike(states)
    w = normalized(weights, len(states))
    keys = list(states[0])
    lora_keys = [k for k in keys if k.startswith(WEIGHT_PREFIX)]
    plain = [{k.split("/", 1)[1]: np.asarray(s[k], dtype=np.float32) for k in lora_keys} for s in states]
    merged = merge_adapters(plain, w, _EXACT_METHODS[exact]) if lora_keys else {}
    out = {f"{WEIGHT_PREFIX}{k}": np.asarray(v, dtype=np.float32) for k, v in merged.items()}
    for key in keys:
        if key not in out:
            mean = sum(wi * np.asarray(s[key], dtype=np.float64) for wi, s in zip(w, states, strict=True))
            out[key] = np.asarray(mean, dtype=np.float32)
    return {k: out[k] for k in keys}


def _check_alike(states: Sequence[State]) -> None:
    first = states[0]
    for i, s in enumerate(states[1:], start=1):
        differ = sorted(set(first) ^ set(s))
        if differ:
            raise ValueError(f"state {i} and state 0 differ in key {differ[0]!r} (present in only one of them)")
        for key in first:
            if np.shape(s[key]) != np.shape(first[key]):
                raise ValueError(f"state {i}: {key!r} has shape {np.shape(s[key])}, state 0 has "
                                 f"{np.shape(first[key])}")
