"""How the server talks to sites, free of Flower: payloads, round results, the `Transport` interface.

    result = transport.round("prepare", "prepare", Payload())      # every site runs its `prepare` step
    result.replies["site-0"].values["num-samples"]

The server's phases (`server/phases/`) only see this interface. `FlowerTransport` (`server/server_app.py`)
sends payloads as Flower messages and unpacks the replies; `LocalTransport` (`app/local.py`) calls the
site steps (`client/handlers.py`) in this process (centralized mode, tests). A federated run and a
centralized run therefore go through the same functions.

A payload is what may leave a site or the server: small JSON-able `values` (numbers, strings, lists and
string-keyed dicts of them) and named numpy `arrays` (adapter tensors, counts, histograms). Never rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class Payload:
    """One message's content: JSON-able values and named arrays."""

    values: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def num_bytes(self) -> int:
        """Serialised size: the JSON of `values` plus the raw bytes of `arrays`."""
        return len(self.values_json().encode()) + sum(int(np.asarray(a).nbytes) for a in self.arrays.values())

    def values_json(self) -> str:
        return json.dumps(self.values, sort_keys=True, allow_nan=True)


@dataclass
class RoundResult:
    """Replies of one round by site name, the sites excluded (with the reason), bytes per site."""

    replies: dict[str, Payload]
    excluded: list[dict[str, Any]] = field(default_factory=list)
    traffic: dict[str, dict[str, int]] = field(default_factory=dict)  # site -> {"sent", "received"}

    def exclude(self, site: str, reason: str) -> None:
        """Drop a reply that failed validation; it is never aggregated."""
        logger.error("site %s excluded: %s", site, reason)
        self.replies.pop(site, None)
        self.excluded.append({"site": site, "reason": reason})


@dataclass
class SecureSum:
    """What a secure-aggregation round gives the server: the element-wise sum of the `keys` of every
    contributing site's reply, which sites contributed, the sites lost (with the reason), bytes per site."""

    sums: dict[str, np.ndarray]
    sites: list[str]
    excluded: list[dict[str, Any]] = field(default_factory=list)
    traffic: dict[str, dict[str, int]] = field(default_factory=dict)


class Transport(Protocol):
    """Sends one payload to every site (all running `handle(step, ...)`) and collects the replies."""

    def round(self, phase: str, step: str, payload: Payload) -> RoundResult: ...

    def secure_sum(self, phase: str, step: str, payload: Payload, keys: Sequence[str]) -> SecureSum:
        """Every site runs `step`; the server gets only the sum over sites of the reply fields `keys`."""
        ...


def summable(reply: Payload, keys: Sequence[str]) -> list[np.ndarray]:
    """The reply fields `keys` as float64 vectors, in that order (a scalar value becomes a 1-vector): what a
    site contributes to a secure sum. Everything else in the reply stays at the site."""
    out = []
    for key in keys:
        if key in reply.arrays:
            arr = np.asarray(reply.arrays[key])
        elif key in reply.values and isinstance(reply.values[key], int | float):
            arr = np.asarray([reply.values[key]])
        else:
            raise ValueError(f"secure sum: the reply has no numeric field {key!r}")
        if arr.dtype.kind not in "iuf" or not np.all(np.isfinite(arr)):
            raise ValueError(f"secure sum: field {key!r} is not finite numbers (dtype {arr.dtype})")
        out.append(np.asarray(arr, dtype=np.float64).ravel())
    return out


def integer_sums(vectors: Sequence[Sequence[np.ndarray]], keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Element-wise sums of the sites' `summable` vectors, as exact int64 (every field is a count)."""
    shapes = {tuple(v.shape for v in vec) for vec in vectors}
    if len(shapes) > 1:
        raise ValueError(f"secure sum: sites sent vectors of different shapes {sorted(shapes)}")
    return {k: np.rint(np.sum([np.asarray(vec[i], dtype=np.float64) for vec in vectors], axis=0)).astype(np.int64)
            for i, k in enumerate(keys)}


# Callables receiving (direction, site, step, payload, wire bytes) for every message sent or received --
# the wire bytes being every record exactly as serialised for the network -- e.g. the privacy test's scan
# for sample text. Empty in normal runs.
PayloadTap = Callable[[str, str, str, Payload, bytes], None]
PAYLOAD_TAPS: list[PayloadTap] = []


def tap(direction: str, site: str, step: str, payload: Payload, wire: bytes | None = None) -> None:
    if not PAYLOAD_TAPS:
        return
    if wire is None:
        wire = payload.values_json().encode() + b"".join(np.ascontiguousarray(a).tobytes()
                                                         for a in payload.arrays.values())
    for fn in PAYLOAD_TAPS:
        fn(direction, site, step, payload, wire)
