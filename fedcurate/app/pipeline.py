"""Centralized mode: the phases of a federated run with one in-process site.

    fedcurate select --config configs/centralized.toml --input data.jsonl --out runs/c1

`run_select` runs the same phases (`server/phases/`) and site steps (`client/steps/`)
as a federation, through an in-process transport, so one site gives the same selection as a one-site
federation. Besides the run directory of a federated run (`server/`, `sites/local/`, `stats/`) it writes,
atomically, at the top of the run directory:
    scores.parquet   one row per sample: id, one column per scorer (+ `<scorer>_reason` for failures),
                     `selected`, `drop_reason`, and `clean` when the data carries ground truth
    selected.jsonl   the kept samples (Sample fields plus `score`)
    rejects.jsonl    input rows rejected by the loader, with file, line, field and reason
    stats.json       kept / dropped / dropped by reason, timings per phase, and precision per scorer on
                     labelled data (each scorer's own top budget, next to full data)
    config.toml      the resolved configuration
Per-scorer caches live under `sites/local/dynamics/scores/`: a re-run with the same data and settings
skips finished scorers, and finished phases are not redone.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fedcurate.app.local import LocalTransport
from fedcurate.client.site import SiteLocation
from fedcurate.client.steps.dynamics import site_columns
from fedcurate.common import io
from fedcurate.common.config import Config, primary_scorer
from fedcurate.common.protocol import layout
from fedcurate.common.score_columns import ScoreColumn
from fedcurate.common.selection import orient, select
from fedcurate.server.orchestrator import run_phases

CENTRAL_SITE = "local"


def run_select(cfg: Config, out_dir: Path, input_path: Path | None = None) -> dict[str, Any]:
    """Run the phases of a federated run with one in-process site (up to `select`, or `run.stop-after`);
    returns the stats written to `stats.json`."""
    out_dir = Path(out_dir)
    path = input_path or cfg.data.path
    if not path:
        raise ValueError("no input data: give --input or set data.path")
    cfg = replace(cfg, run=replace(cfg.run, dir=str(out_dir)))
    where = SiteLocation(CENTRAL_SITE, str(path), layout.site_dir(out_dir, CENTRAL_SITE))
    t0 = time.perf_counter()
    summaries = run_phases(cfg, out_dir, LocalTransport([where], cfg), stop_after=cfg.run.stop_after or "select")
    stats = write_central_outputs(cfg, out_dir, where.site_dir, summaries)
    stats["timings_s"]["total"] = round(time.perf_counter() - t0, 3)
    io.write_json(out_dir / "stats.json", stats)
    return stats


def write_central_outputs(cfg: Config, out_dir: Path, site_dir: Path,
                          summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """scores.parquet, selected.jsonl, rejects.jsonl at the top of a centralized run; returns its stats."""
    io.write_with(out_dir / "rejects.jsonl", lambda tmp: shutil.copyfile(layout.step_dir(site_dir, "prepare") / "rejects.jsonl", tmp))
    picked = pq.read_table(layout.step_dir(site_dir, "select") / "scores.parquet").to_pydict()
    io.write_with(out_dir / "selected.jsonl",
                  lambda tmp: shutil.copyfile(layout.selected_path(site_dir), tmp))
    columns = [ScoreColumn(name, c["higher_is_better"], [float(v) for v in c["values"]], list(c["reasons"]), 0.0)
               for name, c in site_columns(site_dir).items()]
    table: dict[str, Any] = {"id": picked["id"]}
    for c in columns:
        table[c.name], table[f"{c.name}_reason"] = c.values, c.reasons
    table.update(score=picked["score"], selected=picked["selected"], drop_reason=picked["drop_reason"])
    if "clean" in picked:
        table["clean"] = picked["clean"]
    io.write_with(out_dir / "scores.parquet", lambda tmp: pq.write_table(pa.table(table), tmp))
    site_stats = json.loads((layout.step_dir(site_dir, "select") / "stats.json").read_text(encoding="utf-8"))
    prep = summaries["prepare"]
    stats: dict[str, Any] = {
        "num_samples": site_stats["num-samples"],
        "num_rejected_rows": prep["num_rejects"],
        "primary_scorer": primary_scorer(cfg),
        "composite": summaries["threshold"].get("composite"),
        "kept": site_stats["kept"],
        "dropped": site_stats["dropped"],
        "dropped_by_reason": site_stats["dropped-by-reason"],
        "threshold": site_stats["threshold"],
        "failures_by_scorer": {c.name: sum(1 for r in c.reasons if r) for c in columns},
        "timings_s": {p: s.get("seconds", 0.0) for p, s in summaries.items()},
        "phases": {p: str(layout.summary_path(out_dir, p)) for p in summaries},
    }
    labels = None if "clean" not in picked else np.asarray(picked["clean"], dtype=bool)
    if labels is not None:
        stats["precision"] = precision_by_scorer(labels, columns, cfg)
    return stats


def precision_by_scorer(labels: np.ndarray, columns: Sequence[ScoreColumn], cfg: Config) -> dict[str, Any]:
    """Share of clean samples among those each scorer keeps at the configured budget, next to full data."""
    out: dict[str, Any] = {"full": float(labels.mean())}
    for c in columns:
        sel = select(orient(c.values, c.higher_is_better), cfg.selection, c.reasons)
        out[c.name] = float(labels[sel.keep].mean()) if sel.num_kept else float("nan")
    return out
