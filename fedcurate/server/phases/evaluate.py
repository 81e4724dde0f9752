"""Phase `evaluate`, server side: the merged adapter on the server's test set (and the base model beside it),
and with `evaluation.at-sites` every site's figures on its own held-out set and their weighted mean.

    summary = phase_evaluate(run)    # loss, token accuracy, exact match; "sites": per site and mean

Protocol: `common/protocol/evaluate.py`; site side: `client/steps/evaluate.py`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from fedcurate.common import io
from fedcurate.common.protocol import evaluate as protocol
from fedcurate.common.protocol import layout
from fedcurate.common.protocol.payload import Payload
from fedcurate.common.protocol.rounds import num
from fedcurate.server.run import Run, skipped


def phase_evaluate(run: Run) -> dict[str, Any]:
    from fedcurate.common.data.loaders import load_samples
    from fedcurate.common.evaluation import evaluate_path

    cfg = run.cfg
    if not cfg.evaluation.test_path and not cfg.evaluation.at_sites:
        return skipped("evaluation.test-path is empty and evaluation.at-sites is off")
    train = run.summaries.get("train", {})
    if "adapter" not in train:
        return skipped("no trained adapter (the train phase was skipped)")
    summary: dict[str, Any] = {}
    if cfg.evaluation.test_path:
        samples = load_samples(cfg.evaluation.test_path).samples
        if cfg.evaluation.max_samples:
            samples = samples[: cfg.evaluation.max_samples]
        result = evaluate_path(train["adapter"], samples, cfg, exact_match=cfg.evaluation.exact_match)
        summary.update(test_path=cfg.evaluation.test_path, **result.to_json())
        if cfg.evaluation.compare_base:
            summary["base"] = evaluate_path(cfg.model.name_or_path, samples, cfg,
                                            exact_match=cfg.evaluation.exact_match).to_json()
    if cfg.evaluation.at_sites:
        summary["sites"] = evaluate_at_sites(run, run.server_dir("train") / "adapter-state.npz")
    io.write_json(layout.stats_path(run.run_dir, "evaluate"), summary)
    return summary


def evaluate_at_sites(run: Run, state_path: Path) -> dict[str, Any]:
    """Every site evaluates the adapter on its own held-out set; per-site figures and their sample-weighted mean."""
    with np.load(state_path) as z:
        state = {k: z[k] for k in z.files}

    result = run.round("evaluate", "evaluate", Payload(arrays=state), protocol.check_reply)
    per_site = {s: {k: r.values.get(k) for k in ("num-samples", *protocol.SITE_METRICS, "skipped") if k in r.values}
                for s, r in sorted(result.replies.items())}
    scored = {s: r for s, r in result.replies.items() if int(r.values["num-samples"]) > 0}
    n = sum(int(r.values["num-samples"]) for r in scored.values())
    mean = {k: (sum(int(r.values["num-samples"]) * num(r.values[k]) for r in scored.values()) / n if n
                else math.nan) for k in protocol.SITE_METRICS}
    return {"per_site": per_site, "num_samples": n, "mean": mean, "excluded": result.excluded}
