"""How the orchestrator talks to sites, free of Flower: payloads, round results, the in-process transport.

    transport = LocalTransport([SiteLocation("site-0", "data.jsonl", Path("runs/x/sites/site-0"))], cfg)
    result = transport.round("prepare", "prepare", Payload())      # every site runs `handle("prepare", ...)`
    result.replies["site-0"].values["num-samples"]

The orchestrator (`server/orchestrator.py`) only sees this interface. `LocalTransport` calls the site
handlers (`client/handlers.py`) in this process: centralized mode, and unit tests. `FlowerTransport`
(`server/server_app.py`) sends the same payloads as Flower messages and unpacks the replies, so a
federated run and a centralized run go through the same functions.

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

    def round(self, phase: str, step: str, payload: Payload,
              per_site: dict[str, Payload] | None = None) -> RoundResult: ...

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


class LocalTransport:
    """Runs the site handlers in this process, one site after the other (centralized mode, tests)."""

    def __init__(self, sites: Sequence[Any], cfg: Any) -> None:
        from fedcurate.client.handlers import handle  # client code runs here: centralized mode

        self.sites, self.cfg, self._handle = list(sites), cfg, handle

    def round(self, phase: str, step: str, payload: Payload,
              per_site: dict[str, Payload] | None = None) -> RoundResult:
        result = RoundResult(replies={})
        for where in self.sites:
            sent = (per_site or {}).get(where.site, payload)
            tap("sent", where.site, step, sent)
            try:
                reply = self._handle(step, self.cfg, where, sent)
            except Exception as err:  # noqa: BLE001 - one site's failure excludes that site, like a Flower error reply
                if len(self.sites) == 1:
                    raise
                result.excluded.append({"site": where.site, "reason": f"{type(err).__name__}: {err}"})
                logger.exception("[%s] site %s failed", step, where.site)
                continue
            tap("received", where.site, step, reply)
            result.replies[where.site] = reply
            result.traffic[where.site] = {"sent": sent.num_bytes(), "received": reply.num_bytes()}
        return result

    def secure_sum(self, phase: str, step: str, payload: Payload, keys: Sequence[str]) -> SecureSum:
        """In process, the sum is taken here and only the sum is returned; the orchestrator never sees a
        site's own vector (a Flower deployment uses SecAgg+, `server_app.FlowerTransport.secure_sum`)."""
        result = self.round(phase, step, payload)
        vectors, sites = [], []
        for site, reply in sorted(result.replies.items()):
            try:
                vectors.append(summable(reply, keys))
                sites.append(site)
            except ValueError as err:
                result.excluded.append({"site": site, "reason": str(err)})
        return SecureSum(integer_sums(vectors, keys) if vectors else {}, sites, result.excluded,
                         {s: result.traffic[s] for s in sites})
