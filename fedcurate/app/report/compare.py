"""One comparison across runs: a table (Markdown, HTML, JSON) and one bar plot.

    write_comparison([Path("runs/a"), Path("runs/b")], Path("runs/cmp"), labels=["a", "b"])
    write_comparison([Path("runs/bench-quality")], Path("runs/cmp"))   # a folder of runs: each one

Writes, into the folder `out`: `comparison.md` (the table), `comparison.json` (its rows), `comparison.png`
(bars across runs: kept, precision of the kept set when ground truth is known, held-out loss, token
accuracy, exact match) and `comparison.html` (the table and the plot embedded), whose path it returns.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedcurate.app.report import plots
from fedcurate.app.report.html import fmt, img, page, table
from fedcurate.app.report.run import ReportError, RunView, is_run_dir, load_run, mode_of, progress
from fedcurate.common import io

log = logging.getLogger(__name__)


def expand_runs(paths: Sequence[Path], labels: Sequence[str] | None = None) -> list[tuple[str, Path]]:
    """(label, run dir) for every path: a run directory itself, or each run directory in a folder of runs
    (up to two levels, e.g. a quality benchmark's `<out>/<method>` or `<out>/seed-<s>/<method>`)."""
    if labels is not None and len(labels) != len(paths):
        raise ReportError(f"{len(labels)} label(s) for {len(paths)} run path(s); give one label per path")
    found: list[tuple[str, Path]] = []
    for i, path in enumerate(map(Path, paths)):
        label = labels[i] if labels else path.resolve().name
        if is_run_dir(path):
            found.append((label, path))
            continue
        inner = sorted(p for p in path.glob("*") if p.is_dir() and is_run_dir(p)) or \
            sorted(p for p in path.glob("*/*") if p.is_dir() and is_run_dir(p))
        if not path.is_dir() or not inner:
            load_run(path)  # raises the ReportError naming the path
        prefix = f"{label}/" if labels or len(paths) > 1 else ""
        found += [(prefix + p.relative_to(path).as_posix(), p) for p in inner]
    return found


def run_figures(run: RunView) -> dict[str, Any]:
    """The figures of one run that a comparison shows."""
    sel, ev, prep = run.done("select") or {}, run.done("evaluate") or {}, run.done("prepare") or {}
    s = run.settings
    rule = {"fraction": f"fraction {s.get('selection.fraction')}", "count": f"count {s.get('selection.count')}",
            "threshold": f"threshold {s.get('selection.threshold')}"}.get(s.get("selection.mode", ""),
                                                                          s.get("selection.mode", "n/a"))
    traffic = run.stats("communication") or []
    return {"path": str(run.root), "mode": mode_of(run), "scorers": s.get("scoring.scorers", "n/a"),
            "selection": f"{rule}, {s.get('selection.scope', 'global')}",
            "samples": sel["kept"] + sel["dropped"] if sel else prep.get("num_samples"),
            "kept": sel.get("kept"), "precision": sel.get("precision"), "precision_full": sel.get("precision_full"),
            "threshold": sel.get("threshold"), "loss": ev.get("loss"), "token_accuracy": ev.get("token_accuracy"),
            "exact_match": ev.get("exact_match"), "base_loss": ev.get("base", {}).get("loss"),
            "bytes": sum(t["sent"] + t["received"] for t in traffic),
            "phases": f"{sum(v in ('done', 'skipped') for v in run.status.values())}/{len(run.status)}"}


COLUMNS = (("run", "label"), ("mode", "mode"), ("scorers", "scorers"), ("selection", "selection"),
           ("samples", "samples"), ("kept", "kept"), ("precision", "precision"),
           ("precision (full data)", "precision_full"), ("threshold", "threshold"), ("held-out loss", "loss"),
           ("token accuracy", "token_accuracy"), ("exact match", "exact_match"), ("base model loss", "base_loss"),
           ("bytes", "bytes"), ("phases finished", "phases"))
PLOTTED = (("kept", "kept"), ("precision", "precision of the kept set"), ("loss", "held-out loss"),
           ("token_accuracy", "token accuracy"), ("exact_match", "exact match"))


def write_comparison(run_dirs: Sequence[Path], out: Path, labels: Sequence[str] | None = None) -> Path:
    """Compare runs (see the module docstring for what is written into the folder `out`); returns the path
    of comparison.html."""
    runs = expand_runs(run_dirs, labels)
    rows = [{"label": label, **run_figures(load_run(path))} for label, path in progress(runs, "compare: read")]
    out = Path(out)
    headers = [h for h, _ in COLUMNS]
    md = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    md += ["| " + " | ".join(fmt(r[k]).replace("|", "/") for _, k in COLUMNS) + " |" for r in rows]
    io.write_text(out / "comparison.md", "# fedcurate run comparison\n\n" + "\n".join(md) + "\n")
    io.write_json(out / "comparison.json", rows)
    metrics = {title: [r[k] for r in rows] for k, title in PLOTTED if any(r[k] is not None for r in rows)}
    png = plots.metric_bars([r["label"] for r in rows], metrics, "runs compared")
    io.write_with(out / "comparison.png", lambda tmp: tmp.write_bytes(png))
    body = (table(headers, [[r[k] for _, k in COLUMNS] for r in rows]) +
            img(png, "Bar charts across runs: " + ", ".join(metrics)))
    io.write_text(out / "comparison.html", page("fedcurate run comparison", body))
    log.info("comparison of %d run(s) written to %s", len(rows), out)
    return out / "comparison.html"
