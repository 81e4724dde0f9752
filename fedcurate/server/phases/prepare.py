"""Phase `prepare`, server side: ask every site to load and validate its data; sum the counts.

    summary = phase_prepare(run)     # totals, per-site counts and shares, rejects by kind, rating histogram

Protocol: `common/protocol/prepare.py`; site side: `client/steps/prepare.py`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from fedcurate.common.protocol import prepare as protocol
from fedcurate.common.protocol.payload import Payload
from fedcurate.server.run import Run


def phase_prepare(run: Run) -> dict[str, Any]:
    result = run.round("prepare", "prepare", Payload(), protocol.check_reply)
    summary = summarize_prepare([
        {"site": s, "num_samples": int(r.values["num-samples"]), "num_rejects": int(r.values["num-rejects"]),
         "rejects_by_reason": dict(r.values.get("rejects-by-reason", {}))} for s, r in result.replies.items()])
    if all("num-clean" in r.values for r in result.replies.values()):
        summary["num_clean"] = sum(int(r.values["num-clean"]) for r in result.replies.values())
    hists = [r.values["rating-histogram"] for r in result.replies.values() if "rating-histogram" in r.values]
    if hists:
        width = max(len(h) for h in hists)
        summary["rating_histogram"] = np.sum([np.pad(np.asarray(h, dtype=np.int64), (0, width - len(h)))
                                              for h in hists], axis=0).tolist()
        summary["num_unrated"] = sum(int(r.values.get("num-unrated", 0)) for r in result.replies.values())
    summary["excluded"] = result.excluded
    run.write_site_stats("prepare", result)
    return summary


def summarize_prepare(site_replies: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals and per-site counts of the prepare phase.

    Each reply is {"site", "num_samples", "num_rejects", "rejects_by_reason": {kind: count}}.
    Per site, `share` is its fraction of all valid samples and `reject_rate` rejects / rows read.
    Two replies naming the same site are an error (two SuperNodes started with the same `site`).
    """
    names = [r["site"] for r in site_replies]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"several SuperNodes report the same site name: {', '.join(duplicates)}; "
                         "give each a distinct --node-config site=...")
    total_samples = sum(int(r["num_samples"]) for r in site_replies)
    by_reason: Counter[str] = Counter()
    sites = {}
    for r in sorted(site_replies, key=lambda r: r["site"]):
        n, bad = int(r["num_samples"]), int(r["num_rejects"])
        by_reason.update(r.get("rejects_by_reason", {}))
        sites[r["site"]] = {
            "num_samples": n,
            "num_rejects": bad,
            "rejects_by_reason": dict(r.get("rejects_by_reason", {})),
            "share": n / total_samples if total_samples else 0.0,
            "reject_rate": bad / (n + bad) if n + bad else 0.0,
        }
    return {
        "num_sites": len(site_replies),
        "num_samples": total_samples,
        "num_rejects": sum(s["num_rejects"] for s in sites.values()),
        "rejects_by_reason": dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        "sites": sites,
    }
