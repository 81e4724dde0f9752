"""Phase `threshold`: one global threshold from aggregates only. A range round (each site's composite
score range and count, or under secure aggregation / DP only the count), then histogram rounds on the
server's grid, narrowing onto the cut (`histogram.find_cut`).

    server/phases/threshold.py  ->  client/steps/threshold.py  ->  replies checked by `check_range`,
                                                                    `check_hist`
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedcurate.common.protocol.payload import Payload, SecureSum
from fedcurate.common.protocol.rounds import Field, Round, require
from fedcurate.common.protocol.validation import validate_counts

HIST_KEYS = ("num-above", "num-below", "num-nan")  # what a histogram reply counts outside the interval

ROUNDS = (
    Round("threshold/range", request=(
        Field("composite", "{primary} or {scorers, weights, means, stds}"),
        Field("dp-sigma", "float | None"),
    ), reply=(
        Field("min", "float", "the site's lowest composite score (not under DP or secure aggregation)",
              optional=True),
        Field("max", "float", "the site's highest composite score (not under DP or secure aggregation)",
              optional=True),
        Field("num-finite", "int", "how many samples have a score (noisy under DP)"),
        Field("num-nan", "int", "how many samples failed scoring (0 under DP)"),
    ), secure=("num-finite", "num-nan")),
    Round("threshold/hist/<i>", request=(
        Field("edges", "float64[bins + 1]", array=True), Field("closed", "bool"), Field("dp-sigma", "float | None"),
    ), reply=(
        Field("counts", "int64[bins]", "how many of the site's scores fall in each bin (noisy under DP)",
              array=True),
        Field("num-above", "int", "scores above the interval (noisy under DP)"),
        Field("num-below", "int", "scores below the interval (noisy under DP)"),
        Field("num-nan", "int", "failed scores (noisy under DP)"),
        Field("inside-min", "float", "the site's lowest score inside the interval (not under DP)", optional=True),
        Field("inside-max", "float", "the site's highest score inside the interval (not under DP)",
              optional=True),
    ), secure=("counts", *HIST_KEYS)),
)


def check_range(site: str, r: Payload) -> list[str]:
    return require(r.values, "num-finite", "num-nan")


def check_hist(edges: np.ndarray, totals: dict[str, int] | None) -> Callable[[str, Payload], list[str]]:
    """A histogram reply on the grid `edges`: counts that add up to the number of scores the site declared in
    the range round (`totals`; a site that declared none is rejected). With DP (`totals` None) the counts
    are noisy and only shape and sign are checked."""
    def check(site: str, r: Payload) -> list[str]:
        bad = require(r.values, *HIST_KEYS)
        if "counts" not in r.arrays:
            return bad + ["missing array 'counts'"]
        if totals is None:  # DP: signed noisy integers
            c = np.asarray(r.arrays["counts"])
            if c.shape != (len(edges) - 1,) or c.dtype.kind not in "iu":
                return bad + [f"counts: shape {c.shape} dtype {c.dtype}, expected ({len(edges) - 1},) integers"]
            return bad
        if site not in totals:
            return [f"{site} sent no score range in threshold/range"]
        if bad:
            return bad
        extra = [r.values[k] for k in HIST_KEYS]
        if any(not isinstance(v, int) or v < 0 or v > totals[site] for v in extra):
            return [f"num-above/num-below/num-nan {extra} not integers in [0, {totals[site]}]"]
        return validate_counts(r.arrays["counts"], expected_shape=(len(edges) - 1,),
                               total=totals[site] - sum(extra), max_value=totals[site])
    return check


def check_summed_hist(bins: int, totals: dict[str, int] | None) -> Callable[[SecureSum], list[str]]:
    """A securely summed histogram: its shape and, unless DP made the counts noisy, that it adds up to the
    federation's total (`totals["*"]`, counted over the sites `totals["site:<name>"]`; a site lost since
    then voids the check)."""
    keys = ("counts", *HIST_KEYS)

    def check(summed: SecureSum) -> list[str]:
        sums = summed.sums
        if sums["counts"].shape != (bins,):
            return [f"counts: shape {sums['counts'].shape}, expected ({bins},)"]
        if totals is None or {f"site:{s}" for s in summed.sites} != set(totals) - {"*"}:
            return []
        outside = [int(sums[k][0]) for k in keys[1:]]
        return validate_counts(sums["counts"], expected_shape=(bins,), total=totals["*"] - sum(outside),
                               max_value=totals["*"]) + ([f"outside counts {outside} negative"]
                                                         if min(outside) < 0 else [])
    return check
