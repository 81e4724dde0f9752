"""The protocol's declarations are complete: every field a site replies in a whole run is declared for its
round (with what it reveals), and every round the server runs is declared."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedcurate.app.local import LocalTransport
from fedcurate.client.site import SiteLocation
from fedcurate.common.config import load_config
from fedcurate.common.data.loaders import load_samples, write_samples
from fedcurate.common.protocol import PHASES, ROUNDS, round_of
from fedcurate.common.protocol import payload as wire
from fedcurate.server.orchestrator import run_phases
from fedcurate.simulations.partition import partition_quality_skew


def _undeclared(step: str, reply: wire.Payload) -> list[str]:
    declared = round_of(step)
    values = sorted(set(reply.values) - declared.reply_keys())
    array_fields = [f.name for f in declared.reply if f.array]
    placeholder = any("<" in name for name in array_fields)
    arrays = [] if placeholder else sorted(set(reply.arrays) - set(array_fields))
    return [f"{step}: value {k!r}" for k in values] + [f"{step}: array {k!r}" for k in arrays]


def test_every_reply_field_of_a_run_is_declared_in_the_protocol(tmp_path):
    # Prepare: two sites with judge ratings (DS2), a composite of two scorers, training, evaluation at sites
    rng = np.random.default_rng(0)
    sites = []
    for i, part in enumerate(partition_quality_skew(2, 40, [0.1, 0.7], seed=3)):
        rated = [s.__class__(**{**s.__dict__, "metadata": {**s.metadata, "judge": int(rng.integers(0, 6))}})
                 for s in part]
        write_samples(tmp_path / f"site-{i}.jsonl", rated)
        sites.append(SiteLocation(f"site-{i}", str(tmp_path / f"site-{i}.jsonl"), tmp_path / "run" / "sites" / f"site-{i}"))
    write_samples(tmp_path / "test-site-0.jsonl", load_samples(tmp_path / "site-1.jsonl").samples[:6])
    cfg = load_config(None, {"scoring.scorers": ["ds2", "length"], "scoring.weights": [1.0, 0.5],
                             "curation.score-field": "judge", "curation.hoc-rounds": 5, "federation.sites": 2,
                             "federation.train-rounds": 1, "federation.local-steps": 1, "model.max-length": 64,
                             "training.batch-size": 4, "evaluation.at-sites": True, "evaluation.exact-match": False,
                             "evaluation.site-test-path": str(tmp_path / "test-{site}.jsonl")})
    seen: list[tuple[str, wire.Payload]] = []
    wire.PAYLOAD_TAPS.append(lambda d, site, step, payload, raw: seen.append((step, payload)) if d == "received"
                             else None)

    # Execute
    try:
        run_phases(cfg, tmp_path / "run", LocalTransport(sites, cfg))
    finally:
        wire.PAYLOAD_TAPS.clear()

    # Assert
    steps = {step for step, _ in seen}
    assert {"prepare", "curate/counts", "curate/apply", "dynamics", "threshold/range", "threshold/hist/0",
            "select", "train/1", "evaluate"} <= steps
    assert [p for step, reply in seen for p in _undeclared(step, reply)] == []


def test_every_phase_declares_its_rounds_and_every_reply_field_says_what_it_reveals():
    # Assert
    assert tuple(ROUNDS) == PHASES
    for phase, rounds in ROUNDS.items():
        assert rounds, phase
        for r in rounds:
            assert r.step.split("/")[0] == phase
            assert all(f.reveals for f in r.reply), r.step
            assert set(r.secure) <= {f.name for f in r.reply}, r.step
    assert round_of("warmup/12").step == "warmup/<i>" and round_of("threshold/hist/0").step == "threshold/hist/<i>"


def test_an_undeclared_field_is_reported():
    # Execute / Assert: the check above can fail
    assert _undeclared("select", wire.Payload({"kept": 1, "raw-text": "x"}, {"rows": np.zeros(2)})) == [
        "select: value 'raw-text'", "select: array 'rows'"]


def test_reply_declarations_match_the_site_steps_module_names():
    # Assert: the three files of one phase
    root = Path(__file__).parents[3] / "fedcurate"
    for phase in PHASES:
        assert (root / "common" / "protocol" / f"{phase}.py").is_file(), phase
        assert (root / "server" / "phases" / f"{phase}.py").is_file(), phase
        assert (root / "client" / "steps" / f"{phase}.py").is_file(), phase
