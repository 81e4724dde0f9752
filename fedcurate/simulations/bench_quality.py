"""Quality benchmark: which selection gives the cleanest kept set and the best merged model?

Command: python -m fedcurate.simulations.bench_quality [--out runs/bench-quality] [--per-site 400]
         [--fraction 0.4] [--seeds 0 1 2] [--flower] [--set SECTION.KEY=VALUE]   (`fedcurate bench quality`)

Setting: 4 sites of synthetic instruction data (5 task families) whose noise rates are 0.1, 0.3, 0.6 and
0.9 (noise = cut, deleted or exchanged responses; ground truth kept in metadata), a clean public anchor
set and a clean test set. A tiny Llama-architecture model trained on the anchor set stands in for the
pretrained base model (16 epochs on the anchor set). Every method is one complete federated run (prepare ... select, then federated
LoRA on the kept data -- 8 rounds of 20 local steps, FedAvg of the products BA re-factored by SVD
(`federation.exact = "svd"`) -- then evaluation of the merged adapter on the test set) with the same
budget, the same training and the same seeds; only the selection differs:

    full          every sample
    random        a random global `fraction` of the samples
    local         CLUES scores, each site keeps its own top `fraction` (no global standard)
    clues-global  CLUES scores, one global threshold keeping `fraction` of all samples
    clues-anchor  CLUES scores, the CLUES rule: keep what scores at least the anchor set's mean
    ds2           DS2-curated ratings of simulated raters (true 0-5 score of each sample corrupted by a
                  known transition matrix), federated HOC + SimiFeat, global threshold at `fraction`
    selectit      SelectIT ratings (token-level, the base model as the judge), global threshold

Figures per method: precision of the kept set (share of clean samples), kept, and the merged model's
held-out loss, token accuracy and exact match. Prints a table; the last line is one JSON object. Runs
go through the in-process transport by default (same orchestrator and site code as Flower); `--flower`
runs each method on Flower's simulation runtime instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
import tomllib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fedcurate.common.config import Config, RaterConfig, from_flat, load_config, to_flat
from fedcurate.common.data.loaders import write_samples
from fedcurate.common.data.sample import Sample
from fedcurate.common.io import write_json
from fedcurate.common.protocol import layout

logger = logging.getLogger(__name__)

NOISE_RATES = (0.1, 0.3, 0.6, 0.9)
RATING_FIELD = "sim_rating"
COMMON_REFERENCE_EPOCHS = 16.0  # the stand-in base model: epochs on the anchor set
COMMON: dict[str, Any] = {
    "model.max-length": 256, "model.batch-size": 32, "dynamics.batch-size": 32,
    "training.learning-rate": 5e-3, "training.batch-size": 16,
    "federation.sites": len(NOISE_RATES), "federation.min-sites": len(NOISE_RATES),
    "federation.warmup-rounds": 3, "federation.local-steps": 20, "federation.train-rounds": 8,
    "federation.exact": "svd",
    "evaluation.max-samples": 200, "curation.score-field": RATING_FIELD,
}


def methods(fraction: float, ref_model: str) -> dict[str, dict[str, Any]]:
    """Settings of every method (on top of COMMON)."""
    selectit = [{"name": "selectit", "kind": "selectit", "backend": "transformers", "model": ref_model}]
    return {
        "full": {"scoring.scorers": ["random"], "selection.fraction": 1.0},
        "random": {"scoring.scorers": ["random"], "selection.fraction": fraction},
        "local": {"scoring.scorers": ["clues"], "selection.fraction": fraction, "selection.scope": "local"},
        "clues-global": {"scoring.scorers": ["clues"], "selection.fraction": fraction},
        "clues-anchor": {"scoring.scorers": ["clues"], "selection.mode": "anchor"},
        "ds2": {"scoring.scorers": ["ds2"], "selection.fraction": fraction},
        "selectit": {"scoring.scorers": ["rating"], "rating.raters": selectit, "selection.fraction": fraction},
    }


def simulated_ratings(samples: Sequence[Sample], seed: int, diagonal: float = 0.6) -> list[int]:
    """A noisy judge: true score 3-5 for a clean sample, 0-2 for a corrupted one (uniform), then replaced
    by a draw from row `true` of a transition matrix with `diagonal` on its diagonal."""
    from fedcurate.simulations.raters import corrupt_scores, transition_matrix_from_diagonal

    rng = np.random.default_rng(seed)
    true = np.asarray([rng.integers(3, 6) if s.metadata.get("clean") else rng.integers(0, 3) for s in samples])
    T = transition_matrix_from_diagonal([diagonal] * 6)
    return corrupt_scores(true, T, seed + 1).tolist()


def write_data(out: Path, per_site: int, anchor: int, test: int, seed: int) -> tuple[list[Path], Path, Path]:
    """Site files (with simulated ratings in metadata), anchor and test sets."""
    from fedcurate.simulations.partition import partition_quality_skew
    from fedcurate.simulations.synthetic import make_splits

    splits = make_splits(0, 0.0, anchor, test, seed)
    parts = partition_quality_skew(len(NOISE_RATES), per_site, NOISE_RATES, seed)
    paths = []
    for i, part in enumerate(parts):
        ratings = simulated_ratings(part, seed * 100 + i)
        rated = [replace(s, metadata={**s.metadata, RATING_FIELD: r}) for s, r in zip(part, ratings, strict=True)]
        paths.append(out / f"site-{i}.jsonl")
        write_samples(paths[-1], rated)
    write_samples(out / "anchor.jsonl", splits.anchor)
    write_samples(out / "test.jsonl", splits.test)
    return paths, out / "anchor.jsonl", out / "test.jsonl"


def run_method(cfg: Config, run_dir: Path, site_paths: list[Path], flower: bool) -> dict[str, Any]:
    """One complete run; returns the select and evaluate summaries' figures."""
    if flower:
        from fedcurate.app.simulate import simulate

        simulate(cfg, run_dir, sites=len(site_paths), data_paths=site_paths)
    else:
        from fedcurate.app.local import LocalTransport
        from fedcurate.client.site import SiteLocation
        from fedcurate.server.orchestrator import run_phases

        sites = [SiteLocation(f"site-{i}", str(p), layout.site_dir(run_dir, f"site-{i}")) for i, p in enumerate(site_paths)]
        run_phases(cfg, run_dir, LocalTransport(sites, cfg))
    sel = layout.read_summary(run_dir, "select")
    ev = layout.read_summary(run_dir, "evaluate")
    return {"precision": sel.get("precision"), "kept": sel["kept"],
            "kept_per_site": {s: v["kept"] for s, v in sel["sites"].items()},
            "threshold": sel.get("threshold"), "loss": ev.get("loss"),
            "token_accuracy": ev.get("token_accuracy"), "exact_match": ev.get("exact_match")}


def run_bench(out: Path, per_site: int = 400, fraction: float = 0.4, anchor: int = 400, test: int = 200,
              seed: int = 0, flower: bool = False, only: Sequence[str] = (), ref_epochs: float | None = None,
              settings: dict[str, Any] | None = None) -> dict[str, Any]:
    from fedcurate.app.demo import train_reference_model
    from fedcurate.common.data.loaders import load_samples

    start = time.perf_counter()
    out = Path(out).resolve()
    site_paths, anchor_path, test_path = write_data(out / "data", per_site, anchor, test, seed)
    ref_cfg = load_config(None, {"model.max-length": 256, "training.learning-rate": 5e-3,
                                 "training.batch-size": 16, "training.epochs": ref_epochs or COMMON_REFERENCE_EPOCHS,
                                 "training.seed": seed})
    ref = train_reference_model(ref_cfg, load_samples(anchor_path).samples, out / "reference-model")
    base = to_flat(load_config(None, {**COMMON, **(settings or {}), "model.name-or-path": str(ref),
                                      "dynamics.anchor-path": str(anchor_path),
                                      "evaluation.test-path": str(test_path), "training.seed": seed}))
    results: dict[str, Any] = {}
    for name, settings in methods(fraction, str(ref)).items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        flat = {k: v for k, v in settings.items() if k != "rating.raters"}
        cfg = from_flat({**base, **flat, "run.dir": str(out / name)}, source=f"<bench method {name}>")
        if "rating.raters" in settings:
            raters = [RaterConfig(**{k.replace("-", "_"): v for k, v in r.items()}) for r in settings["rating.raters"]]
            cfg = replace(cfg, rating=replace(cfg.rating, raters=raters))
        results[name] = run_method(cfg, out / name, site_paths, flower)
        results[name]["seconds"] = round(time.perf_counter() - t0, 1)
        logger.warning("%s: %s", name, results[name])
        write_json(out / "results.json", results)
    clean = sum(1 for p in site_paths for s in load_samples(p).samples if s.metadata.get("clean"))
    total = len(NOISE_RATES) * per_site
    return {"bench": "quality", "sites": len(NOISE_RATES), "noise_rates": list(NOISE_RATES),
            "samples": total, "clean_share": clean / total, "fraction": fraction, "transport":
            "flower-simulation" if flower else "in-process", "methods": results,
            "seconds": round(time.perf_counter() - start, 1)}


FIGURES = ("precision", "kept", "loss", "token_accuracy", "exact_match")


def run_seeds(out: Path, seeds: Sequence[int], **kwargs: Any) -> dict[str, Any]:
    """`run_bench` once per seed (data, partitions, ratings and training all reseeded) under out/seed-<s>;
    the report's figures are means over seeds, with every seed's figures under `per_seed`."""
    reports = [run_bench(Path(out) / f"seed-{seed}", seed=seed, **kwargs) for seed in seeds]
    methods: dict[str, Any] = {}
    for name in reports[0]["methods"]:
        runs = [r["methods"][name] for r in reports]
        methods[name] = {k: _mean([r[k] for r in runs]) for k in FIGURES}
        methods[name]["std"] = {k: _std([r[k] for r in runs]) for k in FIGURES if k != "kept"}
        methods[name]["per_seed"] = {str(seed): {k: r[k] for k in FIGURES} for seed, r in zip(seeds, runs,
                                                                                              strict=True)}
    return {**{k: v for k, v in reports[0].items() if k not in ("methods", "seconds", "clean_share")},
            "seeds": list(seeds), "clean_share": _mean([r["clean_share"] for r in reports]), "methods": methods,
            "seconds": round(sum(r["seconds"] for r in reports), 1)}


def _mean(values: Sequence[Any]) -> float:
    v = [float(x) for x in values if x is not None]
    return float(np.mean(v)) if v else float("nan")


def _std(values: Sequence[Any]) -> float:
    v = [float(x) for x in values if x is not None]
    return float(np.std(v)) if len(v) > 1 else 0.0


def table(report: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    rows = [f"{'method':14s} {'kept':>6s} {'precision':>9s} {'loss':>7s} {'tok acc':>7s} {'exact':>6s}"]
    for name, r in report["methods"].items():
        rows.append(f"{name:14s} {round(r['kept']):6d} {f(r['precision']):>9s} {f(r['loss']):>7s} "
                    f"{f(r['token_accuracy']):>7s} {f(r['exact_match']):>6s}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fedcurate bench quality", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/bench-quality"))
    p.add_argument("--per-site", type=int, default=400, help="samples per site")
    p.add_argument("--fraction", type=float, default=0.4, help="budget: share of all samples kept")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one complete benchmark per seed; means reported")
    p.add_argument("--flower", action="store_true", help="run each method on Flower's simulation runtime")
    p.add_argument("--only", nargs="*", default=(), help="run only these methods")
    p.add_argument("--train-rounds", type=int, default=COMMON["federation.train-rounds"])
    p.add_argument("--local-steps", type=int, default=COMMON["federation.local-steps"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any other setting of every method's config (repeatable)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = {"federation.train-rounds": args.train_rounds, "federation.local-steps": args.local_steps}
    for pair in args.overrides:
        key, _, value = pair.partition("=")
        try:
            settings[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            settings[key.strip()] = value
    report = run_seeds(args.out, args.seeds, per_site=args.per_site, fraction=args.fraction, flower=args.flower,
                       only=args.only, settings=settings)
    print(table(report))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
