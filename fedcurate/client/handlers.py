"""The site's side of every step of a run, free of Flower: a payload in, a payload out, files in between.

    reply = handle("prepare", cfg, SiteLocation("site-0", "data.jsonl", Path("runs/x/sites/site-0")), Payload())

The ClientApp (`client/client_app.py`) and the in-process `LocalTransport` both call `handle`, so a
federated run and a centralized run execute the same code. The steps themselves are in `client/steps/`
(one module per phase); this module runs them:

Everything a step computes is written under `<site_dir>/<phase>/`; its reply is stored there too
(`reply.json`, written last, with a key of the request), so a repeated request is answered from disk:
a restarted run resumes, and a SuperNode that starts a fresh process per message keeps nothing in memory.
The key covers the step, the settings, the payload and the sha256 of the site files the step reads (the
data file; the held-out set for evaluate), so a changed file is never answered from a stored reply. A step
after prepare refuses to run on prepare outputs made from other data (`StaleDataError`).
Only the replies leave the site: counts, moments, histograms and adapter tensors, never rows or text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from fedcurate.client.site import (
    SiteLocation,
    prepare_inputs,
    prepare_stale,
    site_data_path,
    site_test_path,
)
from fedcurate.client.steps import STEPS
from fedcurate.common import io
from fedcurate.common.config import Config, to_flat
from fedcurate.common.data.loaders import DataFileError, data_digest
from fedcurate.common.protocol import layout
from fedcurate.common.protocol.payload import Payload

logger = logging.getLogger(__name__)

REPLY_FILE = "reply.json"
ARRAYS_FILE = "reply.npz"


class StaleDataError(DataFileError):
    """The site's data changed since its prepare step: a later step would use the old samples. A fault of the
    site's data, not a bug (the ClientApp replies with the message, without a traceback)."""


def handle(step: str, cfg: Config, where: SiteLocation, payload: Payload) -> Payload:
    """Run `step` at this site (or return its stored reply for the same request)."""
    cfg = site_config(cfg, where.site_dir)
    name, out = layout.step_name(step), layout.step_dir(where.site_dir, step)
    digests = input_digests(name, cfg, where)
    if "data" in digests and name != "prepare":
        check_prepared(step, cfg, where, digests["data"])
    key = request_key(step, cfg, where, payload, digests)
    stored = load_reply(out, key)
    if stored is not None:
        logger.info("[%s] %s: answered from %s", where.site, step, out / REPLY_FILE)
        return stored
    if name not in STEPS:
        raise ValueError(f"unknown step {step!r}; steps are {', '.join(STEPS)}")
    start = time.perf_counter()
    reply = STEPS[name](cfg, where, payload, out)
    reply.values.update(site=where.site, seconds=round(time.perf_counter() - start, 3))
    save_reply(out, key, reply)
    return reply


def site_config(cfg: Config, site_dir: Path) -> Config:
    """The config as this site runs it: caches and checkpoints under the site's own directory."""
    return replace(cfg, run=replace(cfg.run, dir=str(site_dir)))


def input_digests(name: str, cfg: Config, where: SiteLocation) -> dict[str, str]:
    """sha256 of the content of the site files step `name` depends on (`data_digest`): {"data": ...} (the
    data file, through prepare's outputs), or for evaluate {"test": ...} ("" when there is no test set)."""
    if name == "evaluate":
        path = site_test_path(cfg, where)
        return {"test": data_digest(path) if path and Path(path).exists() else ""}
    return {"data": data_digest(site_data_path(where.data_path, cfg))}


def check_prepared(step: str, cfg: Config, where: SiteLocation, digest: str) -> None:
    """Raise StaleDataError when this site's prepare outputs were made from other data than it has now."""
    if not layout.step_dir(where.site_dir, "prepare").exists():
        return  # prepare never ran here: a step that needs its samples says so itself
    stale = prepare_stale(where.site_dir, prepare_inputs(where.data_path, cfg, digest))
    if stale:
        raise StaleDataError(f"{stale}, so its samples are not this site's data now; {step} needs the prepare "
                             "step to run again first (start a new run, in another run directory)")


def request_key(step: str, cfg: Config, where: SiteLocation, payload: Payload, digests: dict[str, str]) -> str:
    """sha256 of everything a step's reply depends on: the step, the site's files (paths and the sha256 of
    their content, `input_digests`), the settings but run.*, and the payload."""
    h = hashlib.sha256()
    settings = {k: v for k, v in to_flat(cfg).items() if not k.startswith("run.")}
    h.update(json.dumps([step, where.data_path, where.test_path, digests, settings, payload.values],
                        sort_keys=True, default=str).encode())
    for k in sorted(payload.arrays):
        arr = np.ascontiguousarray(payload.arrays[k])
        h.update(k.encode() + str(arr.dtype).encode() + str(arr.shape).encode() + arr.tobytes())
    return h.hexdigest()


def load_reply(out: Path, key: str) -> Payload | None:
    path = out / REPLY_FILE
    if not path.exists():
        return None
    stored = json.loads(path.read_text(encoding="utf-8"))
    if stored.get("key") != key:
        return None
    arrays: dict[str, np.ndarray] = {}
    if stored.get("has_arrays"):
        with np.load(out / ARRAYS_FILE) as npz:
            arrays = {k: npz[k] for k in npz.files}
    return Payload(values={**stored["values"], "resumed": True}, arrays=arrays)


def save_reply(out: Path, key: str, reply: Payload) -> None:
    if reply.arrays:
        io.write_npz(out / ARRAYS_FILE, reply.arrays)
    io.write_json(out / REPLY_FILE, {"key": key, "has_arrays": bool(reply.arrays), "values": reply.values})
