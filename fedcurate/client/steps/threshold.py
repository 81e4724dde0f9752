"""Steps `threshold/range` and `threshold/hist/<i>` at a site: the composite score (stored here), its range
and count, then its histogram on each grid the server sends. Under DP every count is noisy (noise the
server cannot reproduce) and no score leaves.

    reply = step_threshold_range(cfg, where, Payload({"composite": spec}), out)
    reply = step_threshold_hist(cfg, where, Payload({"closed": True}, {"edges": edges}), out)

Protocol: `common/protocol/threshold.py`; server side: `server/phases/threshold.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedcurate.client.site import SiteLocation
from fedcurate.client.steps.dynamics import site_columns
from fedcurate.common import io
from fedcurate.common.config import Config
from fedcurate.common.protocol import layout
from fedcurate.common.protocol.dynamics import moments
from fedcurate.common.protocol.histogram import interval_histogram
from fedcurate.common.protocol.payload import Payload
from fedcurate.common.selection import orient


def composite_scores(columns: dict[str, dict[str, Any]], spec: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """The composite score (higher is better) and, where it is NaN, why.

    spec {"primary": name}: that scorer's oriented score. spec {"scorers", "weights", "means", "stds"}:
    sum of weight * (oriented score - global mean) / global std; a failure of any weighted scorer fails it.
    """
    if "primary" in spec:
        c = columns[spec["primary"]]
        return orient(c["values"], c["higher_is_better"]), list(c["reasons"])
    total: np.ndarray | None = None
    reasons: list[str] | None = None
    for name, w, mu, sd in zip(spec["scorers"], spec["weights"], spec["means"], spec["stds"], strict=True):
        if w == 0:
            continue
        c = columns[name]
        z = (orient(c["values"], c["higher_is_better"]) - mu) / (sd if sd > 0 else 1.0)
        total = w * z if total is None else total + w * z
        reasons = list(c["reasons"]) if reasons is None else [a or (f"{name}: {b}" if b else "")
                                                              for a, b in zip(reasons, c["reasons"], strict=True)]
    assert total is not None and reasons is not None, "the server never sends all-zero weights"
    return total, reasons




def step_threshold_range(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    score, reasons = composite_scores(site_columns(where.site_dir), payload.values["composite"])
    io.write_npy(out / "composite.npy", score)
    io.write_json(out / "composite-reasons.json", reasons)
    m = moments(score)
    sigma = payload.values.get("dp-sigma")
    if sigma:  # DP: a noisy sample count only; no extreme scores (the grid comes from privacy.score-range)
        noisy = noisy_counts(np.array([score.size]), float(sigma), _secret_rng())
        return Payload({"num-finite": int(noisy[0]), "num-nan": 0})
    return Payload({"min": m[3], "max": m[4], "num-finite": int(m[0]), "num-nan": int(np.isnan(score).sum())})


def _secret_rng() -> np.random.Generator:
    """Noise the server cannot reproduce: seeded from the OS, never from the shared config."""
    return np.random.default_rng()


def noisy_counts(counts: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    from fedcurate.common.privacy import noisy_counts as add_noise

    return np.asarray(add_noise(np.asarray(counts), sigma, rng, clip_negative=False), dtype=np.int64)


def site_composite(site_dir: Path) -> tuple[np.ndarray, list[str]]:
    folder = layout.composite_dir(site_dir)
    if not (folder / "composite.npy").exists():
        raise FileNotFoundError(f"{folder / 'composite.npy'} not found: the threshold/range step has not run here")
    reasons = json.loads((folder / "composite-reasons.json").read_text(encoding="utf-8"))
    return np.load(folder / "composite.npy"), reasons


def step_threshold_hist(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    score, _ = site_composite(where.site_dir)
    hist = interval_histogram(score, payload.arrays["edges"], bool(payload.values.get("closed", True)))
    counts = hist.pop("counts")
    sigma = payload.values.get("dp-sigma")
    if sigma:  # DP: every bin and the outside counts noisy; no inside min/max (they are exact scores)
        rng = _secret_rng()
        counts = noisy_counts(counts, float(sigma), rng)
        outside = noisy_counts(np.array([hist["num-above"], hist["num-below"], hist["num-nan"]]), float(sigma), rng)
        hist = {"num-above": int(outside[0]), "num-below": int(outside[1]), "num-nan": int(outside[2])}
    return Payload(hist, {"counts": counts})
