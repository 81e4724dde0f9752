"""Phase `threshold`, server side: one global threshold from aggregates only.

    summary = phase_threshold(run)   # {"threshold": t, "expected_kept": ..., "histogram": ..., ...}

A range round (each site's composite score range and count; under secure aggregation or DP only the count,
and the grid comes from `privacy.score-range`), then histogram rounds on the server's grid narrowing onto
the `target`-th best score (`refine`). Or the CLUES anchor rule, a fixed threshold, or per-site local rules
(`selection.scope = "local"`: no global threshold). With `privacy.dp-epsilon` every count a site releases
is noisy (`dp_plan`). Protocol: `common/protocol/threshold.py`; site side: `client/steps/threshold.py`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedcurate.common import io
from fedcurate.common.config import Config, primary_scorer
from fedcurate.common.protocol import histogram, layout
from fedcurate.common.protocol import threshold as protocol
from fedcurate.common.protocol.payload import Payload
from fedcurate.common.protocol.rounds import finite_or, num
from fedcurate.common.selection import budget
from fedcurate.server.phases.dynamics import anchor_state
from fedcurate.server.run import PhaseError, Run


def composite_spec(cfg: Config, dynamics: dict[str, Any]) -> dict[str, Any]:
    """What every site computes as its composite score (see client/steps/threshold.composite_scores)."""
    if not cfg.scoring.weights:
        return {"primary": primary_scorer(cfg)}
    if not any(cfg.scoring.weights):
        raise PhaseError("scoring.weights are all zero")
    stats = dynamics["scorers"]
    return {"scorers": list(cfg.scoring.scorers), "weights": [float(w) for w in cfg.scoring.weights],
            "means": [finite_or(stats[n]["mean"], 0.0) for n in cfg.scoring.scorers],
            "stds": [finite_or(stats[n]["std"], 1.0) for n in cfg.scoring.scorers]}


def dp_plan(cfg: Config) -> dict[str, Any] | None:
    """With privacy.dp-epsilon > 0: the noise every site adds to each release of the threshold phase (the
    sample count, then one histogram, each of L2 sensitivity 1 under add/remove-one-sample). Noisy counts stay
    signed (clipping at 0 would bias every tail sum upwards), so the server's estimates are unbiased."""
    from fedcurate.common.privacy import sigma_for

    eps, delta = cfg.privacy.dp_epsilon, cfg.privacy.dp_delta
    if eps <= 0 or cfg.selection.scope == "local":
        return None
    releases = 2  # no refinement rounds under DP: each would pay for noise on ever smaller counts
    return {"epsilon": eps, "delta": delta, "releases": releases, "sigma": sigma_for(eps, delta, releases, 1.0)}


def phase_threshold(run: Run) -> dict[str, Any]:
    from fedcurate.common.privacy import Accountant

    cfg, sel = run.cfg, run.cfg.selection
    spec = composite_spec(cfg, run.summaries["dynamics"])
    dp = dp_plan(cfg)
    accountant = Accountant(dp["delta"]) if dp else None
    secure = cfg.privacy.secure_aggregation
    request = Payload({"composite": spec, "dp-sigma": dp and dp["sigma"]})
    if secure:  # SecAgg+: only the federation's sample count; the grid comes from privacy.score-range
        summed = run.secure_round("threshold", "threshold/range", request, ["num-finite", "num-nan"],
                                  lambda r: [] if dp or min(int(v[0]) for v in r.sums.values()) >= 0
                                  else [f"negative sample count {r.sums}"])
        num_samples, sites, excluded = (int(summed.sums["num-finite"][0] + summed.sums["num-nan"][0]), summed.sites,
                                        summed.excluded)
    else:
        ranges = run.round("threshold", "threshold/range", request,
                           protocol.check_range)
        num_samples = sum(int(r.values["num-finite"]) + int(r.values["num-nan"]) for r in ranges.replies.values())
        sites, excluded = sorted(ranges.replies), list(ranges.excluded)
    if accountant and dp:
        accountant.spend("threshold/range: sample counts", dp["sigma"], 1.0)
    summary: dict[str, Any] = {"composite": spec, "scope": sel.scope, "mode": sel.mode, "num_samples": num_samples,
                               "sites": sites, "excluded": excluded, "secure_aggregation": secure}
    if dp or secure:
        lo, hi = (float(x) for x in cfg.privacy.score_range)
    else:
        lo_hi = [(num(r.values.get("min")), num(r.values.get("max"))) for r in ranges.replies.values()]
        if not any(math.isfinite(a) for a, _ in lo_hi):
            raise PhaseError("no site has a finite composite score: every sample failed scoring")
        lo, hi = histogram.merge_ranges(lo_hi)
    edges = histogram.bin_edges(lo, hi, sel.bins)
    totals: dict[str, int] | None = None
    if secure:
        # what every summed histogram holds: the total, over the sites that contributed it (value 0)
        totals = None if dp else {"*": num_samples, **{f"site:{s}": 0 for s in sites}}
    elif not dp:
        totals = {s: int(r.values["num-finite"]) + int(r.values["num-nan"]) for s, r in ranges.replies.items()}
    hist = histogram_round(run, "threshold/hist/0", edges, closed=True, totals=totals, dp=dp, accountant=accountant)
    summary["histogram"] = {"edges": edges.tolist(), "counts": hist["counts"].tolist(), "num_nan": hist["num-nan"]}
    if sel.scope == "local":
        summary["threshold"] = None
        return summary
    if sel.mode == "threshold":
        t = float(sel.threshold)
    elif sel.mode == "anchor":
        t = anchor_rule(run)
        summary["anchor_threshold"] = t
    else:
        target = budget(num_samples, sel)
        t, kept, used, ties = refine(run, edges, hist, target, totals, dp, accountant)
        summary.update(target=target, expected_kept=kept, histogram_rounds=used, tie_fraction=ties)
    summary["threshold"] = t
    summary["expected_kept"] = summary.get("expected_kept", _kept_at(hist, edges, t))
    if accountant and dp:
        summary["privacy"] = {**dp, "spent_epsilon": accountant.epsilon, "accountant": accountant.to_json()}
        run.record_privacy("threshold", {"unit": "sample", **summary["privacy"]})
    io.write_json(layout.stats_path(run.run_dir, "threshold"), summary)
    return summary


def histogram_round(run: Run, step: str, edges: np.ndarray, closed: bool, totals: dict[str, int] | None,
                    dp: dict[str, Any] | None = None, accountant: Any = None) -> dict[str, Any]:
    """Every site's `interval_histogram` on `edges`, summed. A reply on another grid, with counts that do not add
    up to the number of scores the site declared in the range round (`totals`), or from a site that did not
    declare any, is rejected. With DP (`totals` None) the counts are noisy and only shape and sign are checked."""
    request = Payload({"closed": closed, "dp-sigma": dp and dp["sigma"]}, {"edges": edges})
    if run.cfg.privacy.secure_aggregation:
        return secure_histogram_round(run, step, request, totals, dp, accountant)
    result = run.round("threshold", step, request, protocol.check_hist(edges, totals))
    if accountant is not None and dp:
        accountant.spend(f"{step}: histogram", dp["sigma"], 1.0)
    out: dict[str, Any] = {"counts": np.sum([np.asarray(r.arrays["counts"], dtype=np.int64)
                                             for r in result.replies.values()], axis=0)}
    for key in ("num-above", "num-below", "num-nan"):
        out[key] = sum(int(r.values[key]) for r in result.replies.values())
    lows = [num(r.values.get("inside-min")) for r in result.replies.values()]
    highs = [num(r.values.get("inside-max")) for r in result.replies.values()]
    out["inside-min"] = min((v for v in lows if math.isfinite(v)), default=math.nan)
    out["inside-max"] = max((v for v in highs if math.isfinite(v)), default=math.nan)
    return out


def secure_histogram_round(run: Run, step: str, request: Payload, totals: dict[str, int] | None,
                           dp: dict[str, Any] | None, accountant: Any) -> dict[str, Any]:
    """`histogram_round` under secure aggregation: the server gets the summed histogram and outside counts only,
    and checks them against the federation's total (`totals["*"]`, counted over the sites `totals["site:<name>"]`;
    a site lost since then voids the check) unless DP made them noisy. No site reveals
    the extreme scores inside the interval, so ties at the cut are not detected (the cut is a bin edge)."""
    keys = ["counts", *protocol.HIST_KEYS]
    bins = len(request.arrays["edges"]) - 1

    summed = run.secure_round("threshold", step, request, keys, protocol.check_summed_hist(bins, totals))
    if accountant is not None and dp:
        accountant.spend(f"{step}: histogram", dp["sigma"], 1.0)
    out: dict[str, Any] = {"counts": summed.sums["counts"], "inside-min": math.nan, "inside-max": math.nan}
    out.update({k: int(summed.sums[k][0]) for k in keys[1:]})
    return out


def refine(run: Run, edges: np.ndarray, hist: dict[str, Any], target: int, totals: dict[str, int] | None,
           dp: dict[str, Any] | None = None, accountant: Any = None) -> tuple[float, int, int, float | None]:
    """Narrow the histogram grid onto the `target`-th best score.

    Returns (threshold, samples kept, rounds used, tie fraction). When every score left in the interval is
    the same value and the cut falls among them, the threshold is that value and the tie fraction says
    which share of the samples holding it each site keeps (`threshold.tie_quota`)."""
    sel, closed = run.cfg.selection, True
    for i in range(sel.refine_rounds + 1):
        inside = int(np.sum(hist["counts"]))
        lo, hi, above = hist["inside-min"], hist["inside-max"], int(hist["num-above"])
        if inside and lo == hi and above < target < above + inside:
            return float(lo), target, i + 1, (target - above) / inside
        cut = histogram.find_cut(hist["counts"], hist["num-above"], edges, closed, target,
                                 can_refine=i < sel.refine_rounds and dp is None)
        if cut.threshold is not None:
            return cut.threshold, cut.kept, i + 1, None
        assert cut.next is not None
        edges, closed = histogram.bin_edges(cut.next.lo, cut.next.hi, sel.bins), cut.next.closed
        hist = histogram_round(run, f"threshold/hist/{i + 1}", edges, closed, totals, dp, accountant)
    raise AssertionError("unreachable: the last round always returns a threshold")


def _kept_at(hist: dict[str, Any], edges: np.ndarray, t: float) -> int:
    return histogram.kept_by_threshold(hist["counts"], edges, t) + int(hist["num-above"])


def anchor_rule(run: Run) -> float:
    """CLUES: tau = mean leave-one-out score of the anchor set on the shared checkpoints."""
    from fedcurate.common.dynamics.clues import anchor_threshold, score_anchor
    from fedcurate.common.dynamics.prepare import load_anchor, score_options

    dm, ckpts, grads = anchor_state(run)
    scores = score_anchor(dm, load_anchor(run.cfg), ckpts, grads, score_options(run.cfg))
    return anchor_threshold(scores)
