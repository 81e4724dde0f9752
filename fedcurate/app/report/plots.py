"""The figures of a run report (`fedcurate.app.report`), each returned as PNG bytes.

    png = threshold_plot(edges, counts, {"global": 0.24})     # bytes starting with b"\\x89PNG"
    uri = data_uri(png)                                       # "data:image/png;base64,..." for an <img src>

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot: no global
backend is switched, no window opens, and nothing is left in memory once a figure is rendered.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedcurate.common.figures import draw_transition, render

LEGEND_MAX = 12  # more series than this: no legend (it would hide the plot)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _legend(ax: Any, n: int) -> None:
    if 0 < n <= LEGEND_MAX:
        ax.legend(fontsize="small")


def display_range(values: Sequence[np.ndarray]) -> tuple[float, float]:
    """0.5th to 99.5th percentile of the finite values pooled (heavy tails would squash the plot)."""
    pooled = np.concatenate([v[np.isfinite(v)] for v in values] or [np.zeros(0)])
    if pooled.size == 0:
        return 0.0, 1.0
    lo, hi = (float(x) for x in np.quantile(pooled, [0.005, 0.995]))
    return (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)


def score_plot(columns: Mapping[str, Mapping[str, np.ndarray]], titles: Mapping[str, str]) -> bytes:
    """One panel per scorer, one step histogram per site (values clipped to the display range)."""
    names = list(columns)
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig = _figure(4.2 * ncols, 3.2 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax, name in zip(axes, names, strict=False):
        lo, hi = display_range(list(columns[name].values()))
        edges = np.linspace(lo, hi, 41)
        for site, v in columns[name].items():
            finite = np.clip(v[np.isfinite(v)], lo, hi)
            ax.stairs(np.histogram(finite, edges)[0], edges, label=site)
        ax.set_title(titles.get(name, name), fontsize="medium")
        ax.set_xlabel("score")
        ax.set_ylabel("samples")
        _legend(ax, len(columns[name]))
    for ax in axes[len(names):]:
        ax.set_visible(False)
    return render(fig)


def transition_plot(T: np.ndarray, p: np.ndarray, raw: np.ndarray | None, curated: np.ndarray | None) -> bytes:
    """Heatmap of T (row: true score, column: observed score), the prior p, and raw vs curated counts."""
    k = T.shape[0]
    fig = _figure(12, 4)
    ax_t, ax_p, ax_c = fig.subplots(1, 3, width_ratios=[1.2, 1, 1])
    draw_transition(fig, ax_t, T)
    ax_p.bar(range(k), p, color="tab:green")
    ax_p.set(title="prior p of the true score", xlabel="score", ylabel="probability", xticks=range(k))
    if raw is not None and curated is not None:
        width = 0.4
        ax_c.bar(np.arange(k) - width / 2, raw, width, label="raw")
        ax_c.bar(np.arange(k) + width / 2, curated, width, label="curated")
        ax_c.legend(fontsize="small")
    ax_c.set(title="scores before / after curation (all sites)", xlabel="score", ylabel="samples",
             xticks=range(k))
    return render(fig)


def coarsen(edges: np.ndarray, counts: np.ndarray, keep: Sequence[float] = (), max_bins: int = 120,
            mass: float = 0.995) -> tuple[np.ndarray, np.ndarray]:
    """The bins holding the central `mass` of the samples (and the values `keep`), merged into at most
    `max_bins` bins: a 1024-bin grid over a heavy-tailed score is unreadable otherwise."""
    c = np.clip(np.asarray(counts, dtype=float), 0, None)
    lo, hi = 0, len(c)
    if c.sum() > 0:
        cum = np.cumsum(c) / c.sum()
        lo = int(np.searchsorted(cum, (1 - mass) / 2))
        hi = int(np.searchsorted(cum, 1 - (1 - mass) / 2)) + 1
    for t in keep:
        i = int(np.clip(np.searchsorted(edges, t) - 1, 0, len(c) - 1))
        lo, hi = min(lo, i), max(hi, i + 1)
    hi = min(max(hi, lo + 1), len(c))
    factor = -(-(hi - lo) // max_bins)
    merged = np.add.reduceat(c[lo:hi], np.arange(0, hi - lo, factor))
    return np.append(edges[lo:hi][::factor], edges[hi]), merged


def threshold_plot(edges: np.ndarray, counts: np.ndarray, thresholds: Mapping[str, float]) -> bytes:
    """The aggregated composite-score histogram (central 99.5% of the samples, merged bins) with the
    threshold(s) drawn over it."""
    shown_edges, shown = coarsen(np.asarray(edges, dtype=float), counts, list(thresholds.values()))
    fig = _figure(10, 3.6)
    ax = fig.subplots()
    ax.stairs(shown, shown_edges, fill=True, alpha=0.6, label="all sites")
    colors = ["tab:red", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive"]
    for i, (label, t) in enumerate(thresholds.items()):
        ax.axvline(t, color=colors[i % len(colors)], linestyle="--", label=f"{label} = {t:.4g}")
    ax.set(xlabel="composite score", ylabel="samples per bin",
           title="aggregated histogram (central 99.5% of the samples) and threshold")
    _legend(ax, len(thresholds) + 1)
    return render(fig)


def selection_plot(sites: Sequence[str], kept: Sequence[int], dropped: Mapping[str, Sequence[int]]) -> bytes:
    """Horizontal stacked bars per site: kept, then dropped by each reason."""
    fig = _figure(10, max(2.4, 1.2 + 0.35 * len(sites)))
    ax = fig.subplots()
    y = np.arange(len(sites))
    ax.barh(y, kept, color="tab:green", label="kept")
    left = np.asarray(kept, dtype=float)
    for reason, n in dropped.items():
        ax.barh(y, n, left=left, label=f"dropped: {reason}")
        left = left + np.asarray(n, dtype=float)
    ax.set(yticks=y, yticklabels=sites, xlabel="samples", title="kept and dropped per site")
    ax.invert_yaxis()
    fig.legend(loc="outside right upper", fontsize="small")
    return render(fig)


def training_plot(phases: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
                  lines: Mapping[str, float]) -> bytes:
    """Per phase (warm-up, train) a panel of each site's last local loss per round; `lines` are held-out
    losses (merged model, base model) drawn as horizontal lines on the last panel."""
    fig = _figure(5 * len(phases), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(phases)))
    for ax, (phase, per_site) in zip(axes, phases.items(), strict=True):
        for site, points in per_site.items():
            rounds, losses = zip(*points, strict=True) if points else ((), ())
            ax.plot(rounds, losses, marker="o", label=site)
        if ax is axes[-1]:
            for j, (label, value) in enumerate(lines.items()):
                ax.axhline(value, linestyle="--" if j == 0 else ":", color="black", label=label)
        ax.set(title=f"{phase}: local training loss", xlabel="round", ylabel="loss (last local step)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = {h.get_label(): h for ax in axes for h in ax.get_legend_handles_labels()[0]}
    if len(handles) <= LEGEND_MAX + len(lines):
        fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize="small")
    return render(fig)


def communication_plot(steps: Sequence[str], by_step: Mapping[str, Sequence[int]], sites: Sequence[str],
                       by_site: Mapping[str, Sequence[int]]) -> bytes:
    """Bytes per round (all sites) and bytes per site (all rounds), in both directions, log scale."""
    fig = _figure(12, 4.2)
    ax_r, ax_s = fig.subplots(1, 2, width_ratios=[2, 1])
    for ax, labels, values in ((ax_r, steps, by_step), (ax_s, sites, by_site)):
        x = np.arange(len(labels))
        width = 0.4
        for i, (direction, v) in enumerate(values.items()):
            ax.bar(x + (i - 0.5) * width, np.maximum(np.asarray(v, dtype=float), 1.0), width, label=direction)
        ax.set_yscale("log")
        positive = [b for v in values.values() for b in v if b > 0]
        if positive:  # bars start a decade below the smallest; headroom above the largest for the legend
            ax.set_ylim(10 ** np.floor(np.log10(min(positive))) / 10, max(positive) * 8)
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize="x-small")
        ax.set_ylabel("bytes")
        ax.legend(fontsize="small")
    ax_r.set_title("bytes per round (all sites)")
    ax_s.set_title("bytes per site (all rounds)")
    return render(fig)


def metric_bars(labels: Sequence[str], metrics: Mapping[str, Sequence[float | None]], title: str) -> bytes:
    """One panel per metric, one bar per label; a missing value is marked n/a."""
    names = list(metrics)
    fig = _figure(max(6.0, 3.2 * len(names)), 3.8)
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    x = np.arange(len(labels))
    for ax, name in zip(axes, names, strict=True):
        values = [np.nan if v is None else float(v) for v in metrics[name]]
        ax.bar(x, np.nan_to_num(values, nan=0.0), color=[f"C{i % 10}" for i in range(len(labels))])
        for i, v in enumerate(values):
            ax.text(i, 0.0 if np.isnan(v) else v, "n/a" if np.isnan(v) else f"{v:.4g}", ha="center",
                    va="bottom", fontsize="x-small")
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize="small")
        ax.set_title(name, fontsize="medium")
    fig.suptitle(title)
    return render(fig)
