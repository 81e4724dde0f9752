"""The whole federated run over Flower's simulation runtime: centralized equivalence, privacy, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedcurate.app.pipeline import run_select
from fedcurate.app.simulate import simulate
from fedcurate.common.config import load_config
from fedcurate.common.data.loaders import load_samples, write_samples
from fedcurate.common.protocol import payload as transport
from fedcurate.simulations.synthetic import make_splits

SMALL = {"model.max-length": 128, "model.batch-size": 16, "dynamics.batch-size": 16,
         "training.batch-size": 8, "training.learning-rate": 5e-3,
         "federation.warmup-rounds": 2, "federation.local-steps": 3, "federation.train-rounds": 1,
         "federation.round-timeout-s": 600.0, "synthetic.test-size": 20, "evaluation.max-samples": 20,
         "evaluation.exact-match": False}


def _data(tmp_path: Path, n: int = 90) -> tuple[Path, Path]:
    splits = make_splits(num_samples=n, noise_rate=0.4, anchor_size=16, test_size=0, seed=5)
    write_samples(tmp_path / "train.jsonl", splits.train)
    write_samples(tmp_path / "anchor.jsonl", splits.anchor)
    return tmp_path / "train.jsonl", tmp_path / "anchor.jsonl"


@pytest.mark.integration
def test_one_site_federation_selects_what_centralized_mode_selects(tmp_path):
    # Prepare: a composite of CLUES (federated warm-up checkpoints) and length
    data, anchor = _data(tmp_path)
    cfg = load_config(None, SMALL | {"scoring.scorers": ["clues", "length"], "scoring.weights": [1.0, 0.5],
                                     "dynamics.anchor-path": str(anchor), "federation.sites": 1,
                                     "federation.train-rounds": 0, "selection.fraction": 0.4})

    # Execute
    central = run_select(cfg, tmp_path / "central", data)
    fed_dir = simulate(cfg, tmp_path / "fed", sites=1, data_paths=[data])

    # Assert
    fed = pq.read_table(fed_dir / "sites" / "site-0" / "select" / "scores.parquet").to_pydict()
    cen = pq.read_table(tmp_path / "central" / "scores.parquet").to_pydict()
    assert fed["id"] == cen["id"]
    np.testing.assert_allclose(fed["clues"], cen["clues"], rtol=1e-5, atol=1e-9)
    assert fed["selected"] == cen["selected"]
    assert sum(fed["selected"]) == central["kept"] == 36  # floor(0.4 * 90), exact through the histogram rounds
    summary = json.loads((fed_dir / "server" / "threshold" / "summary.json").read_text())
    assert summary["threshold"] == central["threshold"]


@pytest.mark.integration
def test_no_message_of_a_simulated_run_carries_sample_text(tmp_path):
    # Prepare: every phase, with CLUES, DS2-free, federated training and evaluation, 2 sites
    cfg = load_config(None, SMALL | {"scoring.scorers": ["clues", "length"], "synthetic.num-samples": 120,
                                     "synthetic.anchor-size": 16, "federation.sites": 2,
                                     "dynamics.anchor-path": str(tmp_path / "run" / "data" / "anchor.jsonl")})
    seen: list[tuple[str, str, str, bytes]] = []
    transport.PAYLOAD_TAPS.append(lambda d, site, step, payload, wire: seen.append((d, site, step, wire)))

    # Execute
    try:
        run_dir = simulate(cfg, tmp_path / "run", sites=2)
    finally:
        transport.PAYLOAD_TAPS.clear()

    # Assert
    texts = set()
    for site in ("site-0", "site-1"):
        for s in load_samples(run_dir / "data" / f"{site}.jsonl").samples:
            texts.update(t for t in (s.instruction, s.input, s.response) if len(t) >= 8)
    steps = {step for _, _, step, _ in seen}
    assert {"prepare", "warmup/1", "dynamics", "threshold/range", "threshold/hist/0", "select",
            "train/1"} <= steps
    wire = [w for *_, w in seen]
    assert sum(len(w) for w in wire) > 100_000  # adapters and checkpoints did travel
    leaked = sorted(t for t in texts if any(t.encode() in w for w in wire))
    assert leaked == [], f"{len(leaked)} sample texts found in messages, e.g. {leaked[:2]}"
    comm = json.loads((run_dir / "stats" / "communication.json").read_text())
    assert {(r["step"], r["site"]) for r in comm} >= {("warmup/1", "site-0"), ("warmup/1", "site-1")}
    assert all(r["sent"] > 0 and r["received"] > 0 for r in comm)
    evaluation = json.loads((run_dir / "server" / "evaluate" / "summary.json").read_text())
    assert np.isfinite(evaluation["loss"]) and 0 <= evaluation["token_accuracy"] <= 1


@pytest.mark.integration
def test_killed_after_threshold_a_rerun_resumes_at_select(tmp_path):
    # Prepare
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "fedcurate.app.cli", "simulate", "--sites", "2", "--out", str(run_dir),
           "--set", "scoring.scorers=['length','random']", "--set", "synthetic.num-samples=100",
           "--set", "synthetic.anchor-size=10", "--set", "synthetic.test-size=10",
           "--set", "federation.train-rounds=1", "--set", "federation.local-steps=2",
           "--set", "model.max-length=128", "--set", "evaluation.exact-match=false"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    threshold_done = run_dir / "server" / "threshold" / "DONE"

    # Execute: kill the whole process group as soon as the threshold phase is marked done
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not threshold_done.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert threshold_done.exists(), "the first run never finished the threshold phase"
    stamps = {p: (run_dir / "server" / p / "DONE").stat().st_mtime_ns
              for p in ("prepare", "warmup", "dynamics", "threshold")}
    select_done_before = (run_dir / "server" / "select" / "DONE").exists()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)

    # Assert
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert not select_done_before or "select" in rerun.stderr  # killed before select finished (normally)
    for phase in ("prepare", "warmup", "dynamics", "threshold"):
        assert f"[PHASE {phase}] already done" in rerun.stderr
        assert (run_dir / "server" / phase / "DONE").stat().st_mtime_ns == stamps[phase]
    assert "[PHASE select] starting" in rerun.stderr or select_done_before
    assert (run_dir / "server" / "evaluate" / "DONE").exists()
    kept = json.loads((run_dir / "server" / "select" / "summary.json").read_text())["kept"]
    assert 49 <= kept <= 50  # integer lengths tie at the cut: each site keeps the floor of its tie quota
