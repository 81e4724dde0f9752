"""Phase `curate` (DS2), server side: sum the sites' consensus counts (or only their secure sum), solve T
and p (HOC), send them back; the sites detect and correct their own ratings.

    summary = phase_curate(run)      # T, p, HOC loss, rows, ratings changed per site

Protocol: `common/protocol/curate.py`; site side: `client/steps/curate.py`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedcurate.common import io
from fedcurate.common.protocol import curate as protocol
from fedcurate.common.protocol.payload import Payload, RoundResult
from fedcurate.server.run import Run, skipped


def phase_curate(run: Run) -> dict[str, Any]:
    from fedcurate.common.curation.hoc import counts_from_third, solve_hoc, sum_counts

    cfg = run.cfg
    if not protocol.DS2_SCORERS & set(cfg.scoring.scorers):
        return skipped("no DS2 scorer (ds2, ds2-raw) in scoring.scorers")
    k = cfg.curation.num_classes
    if cfg.privacy.secure_aggregation:  # SecAgg+: the server sees only the summed consensus counts
        summed = run.secure_round("curate", "curate/counts", Payload(), ["third", "rows"],
                                  protocol.check_summed_counts(k))
        total = counts_from_third(summed.sums["third"], int(summed.sums["rows"][0]))
        counts = RoundResult(replies={}, excluded=summed.excluded)
    else:
        counts = run.round("curate", "curate/counts", Payload(), protocol.check_counts(k))
        total = sum_counts([counts_from_third(np.asarray(r.arrays["third"], dtype=np.int64), int(r.values["rows"]))
                            for r in counts.replies.values()])
    hoc = solve_hoc(total, cfg.curation)
    out = run.server_dir("curate")
    io.write_json(out / "transition.json", {"T": hoc.T.tolist(), "p": hoc.p.tolist(), "loss": hoc.loss,
                                            "rows": total.rows})
    applied = run.round("curate", "curate/apply", Payload(arrays={"T": np.asarray(hoc.T, dtype=np.float64),
                                                                  "p": np.asarray(hoc.p, dtype=np.float64)}),
                        protocol.check_apply)
    run.write_site_stats("curate", applied, {"counts": {s: r.values for s, r in counts.replies.items()}})
    return {"T": hoc.T.tolist(), "p": hoc.p.tolist(), "hoc_loss": hoc.loss, "rows": total.rows,
            "sites": sorted(applied.replies), "excluded": counts.excluded + applied.excluded,
            "changed": {s: r.values["changed"] for s, r in applied.replies.items()}}
