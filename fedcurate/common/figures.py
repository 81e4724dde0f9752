"""Figure building blocks shared by every layer: PNG rendering and the annotated transition-matrix heatmap.

    fig = Figure(figsize=(4.2, 3.6), layout="constrained")
    draw_transition(fig, fig.subplots(), T)     # T: rows true score, columns observed score
    png = render(fig)                           # bytes starting with b"\\x89PNG"

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot: no global
backend is switched, no window opens. The run report's plots (`fedcurate.app.report`) are built on these.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100


def render(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def draw_transition(fig: Figure, ax: Any, T: np.ndarray) -> None:
    """T as an annotated heatmap on `ax` (row: true score, column: observed score), with its colour bar."""
    im = ax.imshow(T, cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), v in np.ndenumerate(T):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize="x-small", color="white" if v > 0.5 else "black")
    ax.set(title="score transition matrix T", xlabel="observed (raw) score", ylabel="true score",
           xticks=range(T.shape[1]), yticks=range(T.shape[0]))
    fig.colorbar(im, ax=ax, shrink=0.8)
