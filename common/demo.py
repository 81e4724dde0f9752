"""The CPU quickstart behind `fedcurate demo`: synthetic mixed-quality data, a tiny model, a selection.

Steps (each resumable: a finished step is not redone when the command is run again):
1. generate training data with 40% corrupted samples (cut, deletion, exchange), a clean public anchor
   set and a clean test set, with ground truth in each sample's metadata;
2. build the tiny Llama-architecture model and train it on the clean anchor set, which makes it a
   reference model whose perplexities mean something (as reference-model filtering does at scale);
3. score the training data with every scorer, keep half by the primary scorer, and report the
   precision (share of clean samples) that each scorer's selection would have, next to `random`.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from fedcurate.common import io
from fedcurate.common.config import Config, load_config
from fedcurate.common.data.sample import Sample
from fedcurate.common.pipeline import run_select

log = logging.getLogger(__name__)

DEMO_SETTINGS: dict[str, object] = {
    "scoring.scorers": ["ifd", "perplexity", "length", "random"],
    "scoring.primary": "perplexity",
    "selection.mode": "fraction",
    "selection.fraction": 0.5,
    "model.max-length": 256,
    "model.batch-size": 32,
    "synthetic.num-samples": 2000,
    "synthetic.noise-rate": 0.4,
    "synthetic.anchor-size": 1500,
    "synthetic.test-size": 200,
    "training.learning-rate": 5e-3,
    "training.epochs": 8.0,
    "training.batch-size": 16,
}


def demo_config(out_dir: Path, num_samples: int | None = None,
                extra: dict[str, object] | None = None) -> Config:
    overrides = {**DEMO_SETTINGS, **(extra or {})}
    if num_samples:
        overrides["synthetic.num-samples"] = num_samples
    overrides["run.dir"] = str(out_dir)
    return load_config(None, overrides)


def run_demo(out_dir: Path, num_samples: int | None = None, extra: dict[str, object] | None = None) -> str:
    """Run the demo under `out_dir` (`extra` overrides settings, e.g. to shrink it in tests);
    returns a short human-readable report."""
    from fedcurate.simulations.synthetic import make_splits, write_splits

    out_dir = Path(out_dir)
    cfg = demo_config(out_dir, num_samples, extra)
    syn = cfg.synthetic
    splits = make_splits(syn.num_samples, syn.noise_rate, syn.anchor_size, syn.test_size, syn.seed)
    paths = write_splits(splits, out_dir / "data")
    model_dir = train_reference_model(cfg, splits.anchor, out_dir / "reference-model")
    cfg = replace(cfg, model=replace(cfg.model, name_or_path=str(model_dir)))
    stats = run_select(cfg, out_dir / "select", paths["train"])
    return _report(stats, out_dir)


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


def _report(stats: dict, out_dir: Path) -> str:
    lines = [f"fedcurate demo: kept {stats['kept']} of {stats['num_samples']} samples "
             f"(primary scorer: {stats['primary_scorer']})", "",
             "precision of the kept set (share of clean samples) at the same budget:"]
    for name, value in stats.get("precision", {}).items():
        shown = "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
        lines.append(f"  {name:12s} {shown}")
    sel = out_dir / "select"
    lines += ["", f"outputs: {sel}/stats.json, {sel}/scores.parquet, {sel}/selected.jsonl"]
    return "\n".join(lines)
