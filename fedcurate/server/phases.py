"""Server-side bookkeeping of the federated phases, free of Flower: summaries and completion markers.

    summary = summarize_prepare([{"site": "a", "num_samples": 90, "num_rejects": 10,
                                  "rejects_by_reason": {"invalid JSON": 10}}, ...])
    write_phase_done(run_dir, "prepare", summary)    # run_dir/server/prepare/{summary.json, DONE}
    phase_done(run_dir, "prepare")                   # True: a re-run skips this phase

The DONE marker is written after the summary, so its presence means the summary is complete.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedcurate.common.io import write_json, write_text

PHASES = ("prepare", "curate", "warmup", "dynamics", "threshold", "select", "train", "evaluate")  # run order


def phase_dir(run_dir: Path, phase: str) -> Path:
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; phases are {', '.join(PHASES)}")
    return Path(run_dir) / "server" / phase


def phase_done(run_dir: Path, phase: str) -> bool:
    return (phase_dir(run_dir, phase) / "DONE").is_file()


def read_summary(run_dir: Path, phase: str) -> dict[str, Any]:
    """The summary.json a finished phase wrote."""
    import json

    return json.loads((phase_dir(run_dir, phase) / "summary.json").read_text(encoding="utf-8"))


def write_phase_done(run_dir: Path, phase: str, summary: dict[str, Any]) -> Path:
    """Write `summary.json`, then the `DONE` marker (both atomically); returns the summary path."""
    out = phase_dir(run_dir, phase)
    write_json(out / "summary.json", summary)
    write_text(out / "DONE", datetime.now(UTC).isoformat(timespec="seconds") + "\n")
    return out / "summary.json"


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
