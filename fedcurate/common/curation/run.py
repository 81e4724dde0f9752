"""`fedcurate curate`: raw LLM ratings + embeddings in, curated scores and long-tail scores out.

    fedcurate curate --config configs/curation.toml --input data.jsonl [--ratings ratings.parquet] --out DIR

Raw ratings come, in this order, from `--ratings` (a `fedcurate rate` output; column
`curation.ratings-column`), from the metadata key `curation.score-field`, or from rating now with the
`[rating]` judges. Continuous ratings (e.g. a mean of judges) are rounded to the nearest class.

Outputs (atomic): `curation.parquet` (id, raw, curated, longtail, eta, flagged, suggested, confidence),
`stats.json`, `rejects.jsonl`, `config.toml`, and `report/` with `T.png` (the estimated transition matrix),
`curation.json` (T, p, changed scores per class, examples of corrected samples) and `curation.md`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fedcurate.common import io
from fedcurate.common.config import Config, to_toml
from fedcurate.common.curation.ds2 import CurationResult, curate_centralized
from fedcurate.common.curation.embeddings import embed_samples
from fedcurate.common.curation.hoc import HocResult
from fedcurate.common.data.loaders import load_from_config, write_rejects
from fedcurate.common.data.sample import Sample

logger = logging.getLogger(__name__)


def raw_ratings(samples: Sequence[Sample], cfg: Config, ratings_path: Path | None,
                cache_dir: Path) -> np.ndarray:
    """Raw ratings as float classes (NaN = unrated), from a ratings file, metadata or the [rating] judges."""
    if ratings_path is not None:
        table = pq.read_table(ratings_path).to_pydict()
        column = cfg.curation.ratings_column
        if column not in table:
            raise ValueError(f"{ratings_path}: no column {column!r} (curation.ratings-column); "
                             f"columns: {', '.join(table)}")
        by_id = dict(zip(table["id"], table[column], strict=True))
        values = [by_id.get(s.id) for s in samples]
        missing = sum(v is None for v in values)
        if missing:
            logger.warning("%s: %d sample(s) have no rating and stay unrated", ratings_path, missing)
    elif cfg.curation.score_field:
        values = [_number(s.metadata.get(cfg.curation.score_field)) for s in samples]
    else:
        from fedcurate.common.rating.raters import rate_dataset

        if not cfg.rating.raters:
            raise ValueError("no raw ratings: give --ratings, set curation.score-field, or add [[rating.raters]]")
        values = list(rate_dataset(samples, cfg.rating, cache_dir / "ratings").columns["rating"])
    arr = np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.round(arr)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def run_curate(cfg: Config, input_path: Path | None, out_dir: Path,
               ratings_path: Path | None = None) -> dict[str, Any]:
    """Curate the ratings of one dataset (centralized DS2); returns the stats written to stats.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    io.write_text(out / "config.toml", to_toml(cfg))
    loaded = load_from_config(cfg.data, input_path)
    write_rejects(out / "rejects.jsonl", loaded.rejects)
    samples = loaded.samples
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    raw = raw_ratings(samples, cfg, ratings_path, out / "cache")
    timings["ratings"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = embed_samples(samples, cfg.curation, out / "cache" / "embeddings")
    timings["embed"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    hoc, result = curate_centralized(emb, raw, cfg.curation)
    timings["curate"] = time.perf_counter() - t0
    _write_table(out / "curation.parquet", samples, result)
    report = write_report(out / "report", samples, hoc, result)
    stats = {"num_samples": len(samples), "num_rejected_rows": len(loaded.rejects),
             "unrated": int(np.isnan(raw).sum()), "flagged": int(result.detection.flagged.sum()),
             "changed": int(result.changed.sum()), "changed_by_class": report["changed_by_class"],
             "hoc_loss": float(hoc.loss), "timings_s": {k: round(v, 3) for k, v in timings.items()}}
    io.write_json(out / "stats.json", stats)
    logger.info("curated %d samples: %d flagged, %d changed; report in %s", len(samples), stats["flagged"],
                stats["changed"], out / "report")
    return stats


def _write_table(path: Path, samples: Sequence[Sample], r: CurationResult) -> None:
    d = r.detection
    table = pa.table({"id": [s.id for s in samples], "raw": r.raw, "curated": r.curated, "longtail": r.longtail,
                      "eta": d.eta, "flagged": d.flagged, "suggested": d.suggested, "confidence": d.confidence})
    io.write_with(path, lambda tmp: pq.write_table(table, tmp))


def changed_by_class(result: CurationResult, num_classes: int) -> dict[str, dict[str, int]]:
    """For each raw class: how many samples curation moved, and to which class."""
    out: dict[str, dict[str, int]] = {}
    for i in np.flatnonzero(result.changed):
        row = out.setdefault(str(int(result.raw[i])), {})
        key = str(int(result.curated[i]))
        row[key] = row.get(key, 0) + 1
    return {str(c): out.get(str(c), {}) for c in range(num_classes)}


def write_report(folder: Path, samples: Sequence[Sample], hoc: HocResult, result: CurationResult,
                 examples: int = 10) -> dict[str, Any]:
    """T heatmap, changed scores per class, and the most confident corrections."""
    folder.mkdir(parents=True, exist_ok=True)
    num_classes = hoc.T.shape[0]
    io.write_with(folder / "T.png", lambda tmp: plot_transition_matrix(hoc.T, tmp))
    order = np.flatnonzero(result.changed)
    order = order[np.argsort(-result.detection.confidence[order], kind="stable")][:examples]
    report = {
        "T": hoc.T.round(4).tolist(), "p": hoc.p.round(4).tolist(), "hoc_loss": float(hoc.loss),
        "changed_by_class": changed_by_class(result, num_classes),
        "examples": [{"id": samples[i].id, "raw": int(result.raw[i]), "curated": int(result.curated[i]),
                      "confidence": round(float(result.detection.confidence[i]), 4),
                      "instruction": samples[i].prompt_text[:200], "response": samples[i].response[:200]}
                     for i in order],
    }
    io.write_json(folder / "curation.json", report)
    io.write_text(folder / "curation.md", _markdown(report))
    return report


def plot_transition_matrix(T: np.ndarray, path: Path) -> None:
    """Save T (rows: true score, columns: rated score) as an annotated heatmap PNG."""
    from matplotlib.figure import Figure

    from fedcurate.common.figures import draw_transition, render

    fig = Figure(figsize=(4.2, 3.6), layout="constrained")
    draw_transition(fig, fig.subplots(), T)
    path.write_bytes(render(fig))


def _markdown(report: dict[str, Any]) -> str:
    lines = ["# Score curation", "", "![T](T.png)", "", "## Changed scores (raw -> curated: count)", ""]
    for raw, row in report["changed_by_class"].items():
        moved = ", ".join(f"{k}: {v}" for k, v in sorted(row.items())) or "none"
        lines.append(f"- raw {raw} -> {moved}")
    lines += ["", "## Most confident corrections", "", "| id | raw | curated | confidence | instruction |",
              "|---|---|---|---|---|"]
    for e in report["examples"]:
        text = e["instruction"].replace("|", "\\|").replace("\n", " ")[:80]
        lines.append(f"| {e['id']} | {e['raw']} | {e['curated']} | {e['confidence']} | {text} |")
    return "\n".join(lines) + "\n"
