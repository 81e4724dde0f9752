"""Site-level DP for LoRA rounds through Flower's server-side fixed-clipping wrapper."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedcurate.app.local import LocalTransport
from fedcurate.client.site import SiteLocation
from fedcurate.common.config import load_config
from fedcurate.common.data.loaders import write_samples
from fedcurate.common.privacy import epsilon_of
from fedcurate.server.orchestrator import run_phases
from fedcurate.simulations.partition import partition_quality_skew
from fedcurate.strategies.dp_training import dp_average


def test_updates_are_clipped_averaged_uniformly_and_noised_with_the_stated_deviation():
    # Prepare: one site moves far (norm 20), one a little (norm 2.83); 20 000 entries to measure the noise
    cur = {"a": np.zeros(4, np.float32), "b": np.ones(2, np.float32)}
    far = {"a": np.full(4, 10.0, np.float32), "b": np.ones(2, np.float32)}
    near = {"a": np.zeros(4, np.float32), "b": np.full(2, 3.0, np.float32)}
    big, moved = {"w": np.zeros(20_000, np.float32)}, {"w": np.full(20_000, 1e-3, np.float32)}

    # Execute
    clean, release = dp_average([far, near], cur, server_round=1, noise_multiplier=1e-9, clipping_norm=1.0)
    noisy, big_release = dp_average([moved] * 4, big, server_round=1, noise_multiplier=2.0, clipping_norm=0.5)

    # Assert: far clipped to norm 1 (0.5 per entry), near to 1 (0.707 per entry of b); uniform mean
    np.testing.assert_allclose(clean["a"], 0.25, atol=1e-6)
    np.testing.assert_allclose(clean["b"], 1 + 0.5 / np.sqrt(2), atol=1e-6)
    assert release.sensitivity == 0.5 and release.sites == 2
    assert big_release.sigma == 2.0 * 0.5 / 4
    assert abs(float(np.std(noisy["w"])) - 0.25) < 0.01 and abs(float(np.mean(noisy["w"])) - 1e-3) < 0.01
    with pytest.raises(ValueError, match="equals the broadcast state"):
        dp_average([big], big, server_round=1, noise_multiplier=1.0, clipping_norm=1.0)


def test_dp_training_run_reports_the_site_level_budget_it_spent(tmp_path):
    # Prepare: two sites, length scorer, 2 training rounds with z = 1
    parts = partition_quality_skew(2, 40, [0.1, 0.5], seed=1)
    sites = []
    for i, part in enumerate(parts):
        write_samples(tmp_path / f"site-{i}.jsonl", part)
        sites.append(SiteLocation(f"site-{i}", str(tmp_path / f"site-{i}.jsonl"), tmp_path / "run" / "sites" / f"s{i}"))
    flat = {"scoring.scorers": ["length"], "federation.sites": 2, "federation.train-rounds": 2,
            "federation.local-steps": 2, "model.max-length": 96, "training.batch-size": 8,
            "privacy.train-noise-multiplier": 1.0, "privacy.train-clipping-norm": 0.05, "privacy.dp-delta": 1e-5}
    cfg = load_config(None, flat)

    # Execute
    summaries = run_phases(cfg, tmp_path / "run", LocalTransport(sites, cfg), stop_after="train")

    # Assert: rho = rounds / (2 z^2) = 1, reported as (epsilon, 1e-5); every round recorded its release
    priv = json.loads((tmp_path / "run" / "stats" / "privacy.json").read_text())["training"]
    assert priv["rounds"] == 2 and priv["unit"] == "site"
    assert abs(priv["spent_epsilon"] - epsilon_of(1.0, 1e-5)) < 1e-9
    rounds = summaries["train"]["rounds"]
    assert [r["dp"]["sigma"] for r in rounds] == [0.025, 0.025] and all(r["dp"]["sites"] == 2 for r in rounds)
    assert Path(summaries["train"]["adapter"]).exists()
    reply = json.loads((tmp_path / "run" / "sites" / "s0" / "train" / "round-2" / "reply.json").read_text())
    assert reply["values"]["loss-first"] is None  # NaN (stored as null): no loss leaves a site under DP
    with np.load(tmp_path / "run" / "sites" / "s0" / "train" / "round-2" / "reply.npz") as z:
        assert z.files and all(k.startswith("weight/") for k in z.files)  # Adam moments stay at the site
