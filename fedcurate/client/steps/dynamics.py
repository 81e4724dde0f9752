"""Step `dynamics` at a site: every configured scorer on every sample (CLUES with the server's broadcast
checkpoints and anchor gradients); the columns stay here, only five numbers per scorer leave.

    reply = step_dynamics(cfg, where, payload, out)      # {"moments": {scorer: [n, sum, sumsq, min, max]}}
    columns = site_columns(site_dir)                     # what the later steps read

Protocol: `common/protocol/dynamics.py`; server side: `server/phases/dynamics.py`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fedcurate.client.site import SiteLocation, site_samples
from fedcurate.common import io
from fedcurate.common.config import Config
from fedcurate.common.data.loaders import write_samples
from fedcurate.common.failures import failed, failure_reason
from fedcurate.common.protocol import layout
from fedcurate.common.protocol.curate import DS2_SCORERS
from fedcurate.common.protocol.dynamics import moments
from fedcurate.common.protocol.payload import Payload
from fedcurate.common.selection import orient


def write_broadcast_checkpoints(cfg: Config, payload: Payload, root: Path) -> None:
    """Store the server's checkpoints (`ckpt<i>/<state key>`) and anchor gradients (`grad<i>/<name>`)."""
    import torch

    from fedcurate.common.dynamics.checkpoints import save_anchor_gradients
    from fedcurate.common.federated_lora import write_checkpoint

    steps, grads = [], []
    for i, info in enumerate(payload.values["checkpoints"]):
        state = {k.split("/", 1)[1]: v for k, v in payload.arrays.items() if k.startswith(f"ckpt{i}/")}
        write_checkpoint(root, int(info["step"]), state, cfg, lr_mean=float(info["lr_mean"]))
        steps.append(int(info["step"]))
        grads.append({k.split("/", 1)[1]: torch.from_numpy(np.array(v))
                      for k, v in payload.arrays.items() if k.startswith(f"grad{i}/")})
    save_anchor_gradients(root, steps, grads)


def step_dynamics(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    from fedcurate.common.score_columns import score_dataset

    samples = site_samples(where.site_dir)
    if payload.values.get("checkpoints"):
        root = out / "checkpoints"
        write_broadcast_checkpoints(cfg, payload, root)
        write_samples(root / "train.jsonl", samples)  # DataInf's Hessian uses the site's own samples
        cfg = replace(cfg, dynamics=replace(cfg.dynamics, checkpoints_dir=str(root)))
    columns: dict[str, dict[str, Any]] = {}
    for name in cfg.scoring.scorers:
        if name in DS2_SCORERS:
            values = _ds2_column(name, cfg, where.site_dir)
            higher = True
        else:
            col = score_dataset(name, samples, cfg, out / "scores")
            values, higher = col.values, col.higher_is_better
        columns[name] = {"values": [float(v) for v in values], "reasons": [failure_reason(v) for v in values],
                         "higher_is_better": bool(higher)}
    write_columns(out, columns)
    return Payload({"moments": {n: moments(orient(c["values"], c["higher_is_better"])) for n, c in columns.items()},
                    "failures": {n: sum(1 for r in c["reasons"] if r) for n, c in columns.items()}})


def _ds2_column(name: str, cfg: Config, site_dir: Path) -> list[float]:
    from fedcurate.common.scorers import SCORERS

    path = layout.curation_path(site_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: scorer {name!r} needs the curate phase")
    with np.load(path) as z:
        combined = SCORERS.get(name)(cfg).combine(z["raw"], z["curated"], z["longtail"])
    return [failed("no raw rating") if np.isnan(v) else float(v) for v in combined]


def write_columns(out: Path, columns: dict[str, dict[str, Any]]) -> None:
    """columns.parquet (values may be +-inf or NaN) and columns.json (orientation)."""
    table = {}
    for name, c in columns.items():
        table[name], table[f"{name}_reason"] = c["values"], c["reasons"]
    io.write_with(out / "columns.parquet", lambda tmp: pq.write_table(pa.table(table), tmp))
    io.write_json(out / "columns.json", {n: {"higher_is_better": c["higher_is_better"]} for n, c in columns.items()})


def site_columns(site_dir: Path) -> dict[str, dict[str, Any]]:
    """{scorer: {"values", "reasons", "higher_is_better"}} of the dynamics step."""
    folder = layout.columns_dir(site_dir)
    if not (folder / "columns.json").exists():
        raise FileNotFoundError(f"{folder / 'columns.json'} not found: the dynamics step has not run at this site")
    meta = json.loads((folder / "columns.json").read_text(encoding="utf-8"))
    table = pq.read_table(folder / "columns.parquet").to_pydict()
    return {n: {"values": [np.nan if v is None else v for v in table[n]], "reasons": table[f"{n}_reason"],
                "higher_is_better": m["higher_is_better"]} for n, m in meta.items()}
