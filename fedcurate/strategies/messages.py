"""Orchestrator payloads as Flower records and back (used by the ServerApp and the ClientApp).

    content = pack(Payload({"threshold": 0.4}, {"edges": edges}), {"step": "select", ...})
    payload = unpack(content)
    content_bytes(content)     # what the message carries, for the communication log

Layout: "values" (ConfigRecord with the payload's values as one JSON string: nested dicts and NaN
survive), "arrays" (ArrayRecord, one Array per named numpy array, omitted when there are none) and, in
instructions, "config" (ConfigRecord: the flat experiment config, run dir and step).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedcurate.common.protocol.payload import Payload


def pack(payload: Payload, config: dict[str, Any]) -> RecordDict:
    """A payload (and the instruction's config, if any) as Flower records."""
    records: dict[str, Any] = {"values": ConfigRecord({"json": payload.values_json()})}
    if config:
        records["config"] = ConfigRecord(dict(config))
    if payload.arrays:
        records["arrays"] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in payload.arrays.items()})
    return RecordDict(records)


def unpack(content: RecordDict) -> Payload:
    """The payload of a message built by `pack`."""
    values = json.loads(str(content["values"]["json"]))
    arrays = {k: a.numpy() for k, a in content["arrays"].items()} if "arrays" in content else {}
    return Payload(values, arrays)


def content_bytes(content: RecordDict) -> int:
    """Payload bytes of a message's records: serialised size of config/metric records, tensor bytes of
    array records. (Flower 1.41's ConfigRecord.count_bytes fails on "" and [], hence deflate.)"""
    return sum(record.count_bytes() if isinstance(record, ArrayRecord) else len(record.deflate())
               for record in content.values())


def wire_bytes(content: RecordDict) -> bytes:
    """Every record of a message as serialised for the network (what a payload scan must search): each record
    and, recursively, the objects it refers to (Flower 1.41 ships an array's data as separate child objects)."""
    return b"".join(_deflated(record) for record in content.values())


def _deflated(obj: Any) -> bytes:
    return obj.deflate() + b"".join(_deflated(child) for child in (obj.children or {}).values())


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """A small array as JSON (the instruction of a secure round travels as one JSON string)."""
    a = np.asarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.ravel().tolist()}


def decode_array(d: dict[str, Any]) -> np.ndarray:
    return np.asarray(d["data"], dtype=np.dtype(d["dtype"])).reshape(d["shape"])
