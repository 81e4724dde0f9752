"""Phase `select`, server side: send the threshold; every site keeps what clears it. Sums what was kept.

    summary = phase_select(run)      # kept, dropped, per site, and precision on synthetic data

Protocol: `common/protocol/select.py`; site side: `client/steps/select.py`.
"""

from __future__ import annotations

from typing import Any

from fedcurate.common.protocol import select as protocol
from fedcurate.common.protocol.payload import Payload
from fedcurate.server.run import Run


def phase_select(run: Run) -> dict[str, Any]:
    t = run.summaries["threshold"].get("threshold")
    ties = run.summaries["threshold"].get("tie_fraction")

    result = run.round("select", "select", Payload({"threshold": t, "tie-fraction": ties}),
                       protocol.check_reply)
    kept = sum(int(r.values["kept"]) for r in result.replies.values())
    summary: dict[str, Any] = {
        "threshold": t, "kept": kept, "dropped": sum(int(r.values["dropped"]) for r in result.replies.values()),
        "sites": {s: {k: r.values.get(k) for k in ("num-samples", "kept", "dropped", "dropped-by-reason",
                                                   "threshold", "num-clean-kept", "num-clean")}
                  for s, r in sorted(result.replies.items())},
        "excluded": result.excluded}
    if all("num-clean-kept" in r.values for r in result.replies.values()):
        clean_kept = sum(int(r.values["num-clean-kept"]) for r in result.replies.values())
        total = sum(int(r.values["num-samples"]) for r in result.replies.values())
        summary["precision"] = clean_kept / kept if kept else float("nan")
        summary["precision_full"] = (sum(int(r.values["num-clean"]) for r in result.replies.values()) / total
                                     if total else float("nan"))
    run.write_site_stats("select", result)
    return summary
