"""The CPU quickstart behind `fedcurate demo`: a 4-site federated run on Flower's simulation runtime.

    fedcurate demo --out demo-out              # prints demo-out/report.md, writes demo-out/report.html
    report = run_demo(Path("demo-out"))        # the same from Python; returns the path of report.md

Steps (each resumable: a finished step or phase is not redone when the command is run again):
1. generate synthetic mixed-quality data for 4 sites whose noise rates differ (0.1, 0.3, 0.6, 0.9), a
   clean public anchor set and a clean test set, with ground truth in each sample's metadata;
2. build the tiny Llama-architecture model and train it on the clean anchor set: it stands in for the
   pretrained base model every site starts from;
3. run every phase over Flower (simulation): prepare, warm-up LoRA rounds giving shared checkpoints,
   CLUES and perplexity scores, one global threshold from histograms, select, federated LoRA on the kept
   data, evaluation of the merged adapter on the test set;
4. write `report.md` (precision of the kept set, kept per site, held-out figures, bytes per phase) and
   return its path.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedcurate.common import io
from fedcurate.common.config import Config, from_flat, load_config, to_flat
from fedcurate.common.data.sample import Sample
from fedcurate.common.protocol import layout

log = logging.getLogger(__name__)

DEMO_SITES = 4
DEMO_SETTINGS: dict[str, object] = {
    "scoring.scorers": ["clues", "perplexity"],
    "scoring.weights": [1.0, 1.0],
    "selection.mode": "fraction",
    "selection.fraction": 0.5,
    "model.max-length": 256,
    "model.batch-size": 32,
    "dynamics.batch-size": 32,
    "synthetic.num-samples": 2000,
    "synthetic.anchor-size": 400,
    "synthetic.test-size": 100,
    "federation.sites": DEMO_SITES,
    "federation.min-sites": DEMO_SITES,
    "federation.partition": "quality-skew",
    "federation.site-noise-rates": [0.1, 0.3, 0.6, 0.9],
    "federation.warmup-rounds": 3,
    "federation.train-rounds": 5,
    "federation.local-steps": 20,
    "federation.exact": "svd",
    "training.learning-rate": 5e-3,
    "training.batch-size": 16,
    "evaluation.max-samples": 100,
}
REFERENCE_TRAINING = {"training.epochs": 16.0}  # the stand-in base model: 16 epochs on the anchor set


def demo_config(out_dir: Path, num_samples: int | None = None,
                extra: dict[str, object] | None = None) -> Config:
    overrides = {**DEMO_SETTINGS, **(extra or {})}
    if num_samples:
        overrides["synthetic.num-samples"] = num_samples
    overrides["run.dir"] = str(out_dir)
    overrides.setdefault("dynamics.anchor-path", str(Path(out_dir) / "data" / "anchor.jsonl"))
    overrides.setdefault("evaluation.test-path", str(Path(out_dir) / "data" / "test.jsonl"))
    return load_config(None, overrides)


def run_demo(out_dir: Path, num_samples: int | None = None, extra: dict[str, object] | None = None) -> Path:
    """Run the demo under `out_dir` (`extra` overrides settings, e.g. to shrink it in tests); returns the
    path of its report."""
    from fedcurate.app.simulate import simulate, with_synthetic_defaults, write_synthetic_sites

    out_dir = Path(out_dir).resolve()
    cfg = demo_config(out_dir, num_samples, extra)
    write_synthetic_sites(cfg, out_dir / "data")
    cfg = with_synthetic_defaults(cfg, out_dir / "data")
    from fedcurate.common.data.loaders import load_samples

    anchor = load_samples(cfg.dynamics.anchor_path).samples
    ref_cfg = from_flat({**to_flat(cfg), **REFERENCE_TRAINING, **{k: v for k, v in (extra or {}).items()
                                                                   if k == "training.epochs"}})
    model_dir = train_reference_model(ref_cfg, anchor, out_dir / "reference-model")
    cfg = from_flat({**to_flat(cfg), "model.name-or-path": str(model_dir)})
    simulate(cfg, out_dir, sites=cfg.federation.sites, data_dir=out_dir / "data")
    report = out_dir / "report.md"
    io.write_text(report, demo_report(out_dir))
    from fedcurate.app.report import write_report

    write_report(out_dir)  # report.html beside it: plots of every phase
    return report


def train_reference_model(cfg: Config, anchor: Sequence[Sample], model_dir: Path) -> Path:
    """Build the tiny model and train it on the clean anchor set; reuse it if already trained."""
    from fedcurate.common.models.loading import load_model_and_tokenizer
    from fedcurate.common.models.tiny import build_tiny_model
    from fedcurate.common.training import train_causal_lm

    if (model_dir / "DONE").exists():
        log.info("reusing the reference model in %s", model_dir)
        return model_dir
    tmp = model_dir.with_name(model_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_model(tmp, seed=cfg.training.seed)
    model, tokenizer = load_model_and_tokenizer(str(tmp), device="cpu")
    t = cfg.training
    losses = train_causal_lm(model, tokenizer, anchor, template=cfg.model.template,
                             max_length=cfg.model.max_length, epochs=t.epochs, batch_size=t.batch_size,
                             learning_rate=t.learning_rate, seed=t.seed)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    io.write_json(tmp / "training.json", {"steps": len(losses), "first_loss": losses[0], "last_loss": losses[-1]})
    shutil.rmtree(model_dir, ignore_errors=True)
    tmp.rename(model_dir)
    io.write_text(model_dir / "DONE", "")
    log.info("reference model trained: loss %.3f -> %.3f in %d steps", losses[0], losses[-1], len(losses))
    return model_dir


def demo_report(run_dir: Path) -> str:
    """A short Markdown report of a finished federated run."""
    import json

    from fedcurate.app.report import describe_composite

    def summary(phase: str) -> dict[str, Any]:
        path = layout.summary_path(run_dir, phase)
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    sel, thr, ev = summary("select"), summary("threshold"), summary("evaluate")
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"  # noqa: E731
    lines = ["# fedcurate demo", "",
             f"Global threshold {fmt(thr.get('threshold'))} on the composite score "
             f"({describe_composite(thr.get('composite', {}))}); "
             f"kept {sel.get('kept')} of {sel.get('kept', 0) + sel.get('dropped', 0)} samples.", "",
             f"Precision of the kept set (share of clean samples): {fmt(sel.get('precision'))} "
             f"(full data: {fmt(sel.get('precision_full'))}).", "",
             "| site | samples | kept | clean kept / kept |", "|---|---|---|---|"]
    for site, s in sel.get("sites", {}).items():
        share = s["num-clean-kept"] / s["kept"] if s.get("kept") and s.get("num-clean-kept") is not None else None
        lines.append(f"| {site} | {s['num-samples']} | {s['kept']} | {fmt(share)} |")
    if ev and "skipped" not in ev:
        lines += ["", f"Held-out evaluation of the merged adapter ({ev['num_samples']} test samples): loss "
                      f"{fmt(ev['loss'])}, token accuracy {fmt(ev['token_accuracy'])}, exact match "
                      f"{fmt(ev['exact_match'])}."]
        if "base" in ev:
            b = ev["base"]
            lines[-1] += (f" The base model without it: loss {fmt(b['loss'])}, token accuracy "
                          f"{fmt(b['token_accuracy'])}, exact match {fmt(b['exact_match'])}.")
    lines += ["", "| phase | rounds | bytes sent | bytes received | seconds |", "|---|---|---|---|---|"]
    for phase in ("prepare", "curate", "warmup", "dynamics", "threshold", "select", "train", "evaluate"):
        s = summary(phase)
        c = s.get("communication", {})
        lines.append(f"| {phase} | {c.get('rounds', 0)} | {c.get('bytes_sent', 0)} | {c.get('bytes_received', 0)} "
                     f"| {s.get('seconds', 0)} |")
    lines += ["", f"Per-site statistics: {run_dir / 'stats'}; selections: {run_dir / 'sites'}/<site>/select/."]
    return "\n".join(lines) + "\n"
