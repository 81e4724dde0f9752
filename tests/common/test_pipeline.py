"""Centralized pipeline on labelled synthetic data: outputs, precision per scorer, resume."""

import json

import pyarrow.parquet as pq
import pytest

from fedcurate.app.pipeline import run_select
from fedcurate.common.config import load_config
from fedcurate.common.data.loaders import write_samples
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


@pytest.mark.integration
def test_demo_runs_every_phase_over_flower_small(tmp_path):
    # Prepare
    from fedcurate.app.demo import run_demo
    from fedcurate.common.protocol.layout import PHASES

    small = {"synthetic.anchor-size": 60, "synthetic.test-size": 20, "training.epochs": 1.0,
             "model.max-length": 128, "federation.warmup-rounds": 2, "federation.train-rounds": 1,
             "federation.local-steps": 2, "evaluation.exact-match": False}
    # Execute
    report = run_demo(tmp_path, num_samples=200, extra=small)
    # Assert
    assert report == tmp_path.resolve() / "report.md"
    text = report.read_text()
    assert "Precision of the kept set" in text and "Held-out evaluation" in text
    assert all((tmp_path / "server" / phase / "DONE").exists() for phase in PHASES)
    selected = json.loads((tmp_path / "server" / "select" / "summary.json").read_text())
    assert selected["kept"] == 100 and set(selected["sites"]) == {"site-0", "site-1", "site-2", "site-3"}


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
