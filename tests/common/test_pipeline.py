"""Centralized pipeline on labelled synthetic data: outputs, precision per scorer, resume."""

import json

import pyarrow.parquet as pq

from fedcurate.common.config import load_config
from fedcurate.common.data.loaders import write_samples
from fedcurate.common.pipeline import run_select
from fedcurate.simulations.synthetic import make_splits


def test_select_writes_outputs_and_resumes(tmp_path, caplog):
    # Prepare
    splits = make_splits(num_samples=200, noise_rate=0.4, anchor_size=0, test_size=0, seed=1)
    data = tmp_path / "train.jsonl"
    write_samples(data, splits.train)
    cfg = load_config(None, {"scoring.scorers": ["length", "random"], "selection.fraction": 0.25})
    out = tmp_path / "run"
    # Execute
    stats = run_select(cfg, out, data)
    caplog.set_level("INFO")
    again = run_select(cfg, out, data)
    # Assert
    table = pq.read_table(out / "scores.parquet").to_pydict()
    assert set(table) >= {"id", "length", "random", "selected", "drop_reason", "clean"}
    assert sum(table["selected"]) == stats["kept"] == 50
    kept_clean = [c for c, s in zip(table["clean"], table["selected"], strict=True) if s]
    assert stats["precision"]["length"] == sum(kept_clean) / 50
    assert stats["precision"]["full"] == 0.6
    assert len((out / "selected.jsonl").read_text().splitlines()) == 50
    assert json.loads((out / "stats.json").read_text())["kept"] == 50
    assert "already done" in caplog.text and again["kept"] == stats["kept"]
    assert (out / "config.toml").exists()


def test_demo_runs_small(tmp_path):
    # Prepare
    from fedcurate.common.demo import run_demo

    small = {"synthetic.anchor-size": 300, "training.epochs": 2.0, "model.max-length": 256}
    # Execute
    report = run_demo(tmp_path, num_samples=200, extra=small)
    # Assert
    stats = json.loads((tmp_path / "select" / "stats.json").read_text())
    assert set(stats["precision"]) == {"full", "ifd", "perplexity", "length", "random"}
    assert "perplexity" in report and (tmp_path / "reference-model" / "DONE").exists()


def test_select_warms_up_shared_checkpoints_for_dynamics_scorers(tmp_path, caplog):
    # Prepare
    splits = make_splits(num_samples=80, noise_rate=0.4, anchor_size=20, test_size=0, seed=2)
    write_samples(tmp_path / "train.jsonl", splits.train)
    write_samples(tmp_path / "anchor.jsonl", splits.anchor)
    cfg = load_config(None, {"scoring.scorers": ["clues", "less", "datainf"], "model.max-length": 256,
                             "dynamics.anchor-path": str(tmp_path / "anchor.jsonl"),
                             "dynamics.projection-dim": 64, "federation.warmup-rounds": 2,
                             "federation.local-steps": 4, "training.batch-size": 8})
    # Execute
    stats = run_select(cfg, tmp_path / "run", tmp_path / "train.jsonl")
    caplog.set_level("INFO")
    run_select(cfg, tmp_path / "run", tmp_path / "train.jsonl")
    # Assert
    assert stats["failures_by_scorer"] == {"clues": 0, "less": 0, "datainf": 0}
    assert set(stats["precision"]) == {"full", "clues", "less", "datainf"}
    assert len(list((tmp_path / "run" / "server" / "warmup" / "checkpoints").glob("checkpoint-*"))) == 2
    assert len(list((tmp_path / "run" / "sites" / "local" / "dynamics" / "checkpoints").glob("checkpoint-*"))) == 2
    assert "[PHASE warmup] already done" in caplog.text
