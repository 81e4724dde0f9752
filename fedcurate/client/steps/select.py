"""Step `select` at a site: keep what clears the global threshold (or apply the selection rule to its own
scores under local rules); write every score with its drop reason, and the kept samples to train on.

    reply = step_select(cfg, where, Payload({"threshold": t, "tie-fraction": None}), out)

Protocol: `common/protocol/select.py`; server side: `server/phases/select.py`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fedcurate.client.site import SiteLocation, labels_of, site_samples
from fedcurate.client.steps.dynamics import site_columns
from fedcurate.client.steps.threshold import site_composite
from fedcurate.common import io
from fedcurate.common.config import Config
from fedcurate.common.protocol.histogram import keep_mask, tie_quota
from fedcurate.common.protocol.payload import Payload
from fedcurate.common.selection import select


def step_select(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    samples = site_samples(where.site_dir)
    score, reasons = site_composite(where.site_dir)
    threshold = payload.values.get("threshold")
    if threshold is None:  # local scope: this site applies the selection rule to its own scores
        selection = select(score, cfg.selection, reasons)
        keep, drop = selection.keep, list(selection.reasons)
        threshold = selection.threshold
    else:
        ties = payload.values.get("tie-fraction")
        keep = keep_mask(score, float(threshold)) if ties is None else tie_quota(score, float(threshold), ties)
        drop = ["" if k else (f"failed: {r}" if r else "below the global threshold")
                for k, r in zip(keep, reasons, strict=True)]
    columns = site_columns(where.site_dir)
    table: dict[str, Any] = {"id": [s.id for s in samples], "score": score.tolist(),
                             **{n: c["values"] for n, c in columns.items()},
                             "selected": keep.tolist(), "drop_reason": drop}
    labels = labels_of(samples)
    if labels is not None:
        table["clean"] = labels.tolist()
    io.write_with(out / "scores.parquet", lambda tmp: pq.write_table(pa.table(table), tmp))
    io.write_jsonl(out / "selected.jsonl", ({**s.to_dict(), "score": float(score[i])}
                                            for i, s in enumerate(samples) if keep[i]))
    by_reason = dict(sorted(Counter(r for r in drop if r).items(), key=lambda kv: (-kv[1], kv[0])))
    stats: dict[str, Any] = {"site": where.site, "num-samples": len(samples), "kept": int(keep.sum()),
                             "dropped": int((~keep).sum()), "dropped-by-reason": by_reason,
                             "threshold": None if threshold is None else float(threshold)}
    if labels is not None:
        stats["num-clean-kept"] = int(labels[keep].sum())
        stats["num-clean"] = int(labels.sum())
    io.write_json(out / "stats.json", stats)
    return Payload(stats)
