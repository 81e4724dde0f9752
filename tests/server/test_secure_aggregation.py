"""Secure aggregation (Flower SecAgg+): the server holds only sums of the sites' counts, and the sums are exact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedcurate.app.simulate import simulate
from fedcurate.common.config import ConfigError, load_config
from fedcurate.common.data.loaders import write_samples
from fedcurate.common.protocol import payload as transport
from fedcurate.common.protocol.layout import step_dir
from fedcurate.common.protocol.payload import Payload, integer_sums, summable
from fedcurate.simulations.synthetic import make_splits
from fedcurate.strategies.secure_sum import check_range, clipping_range

SITES = ("site-0", "site-1", "site-2")
SECURE_STEPS = ("curate/counts", "threshold/range", "threshold/hist/0")


def _rated_sites(tmp_path: Path, per_site: int = 60) -> list[Path]:
    """Three site files whose samples carry a 0-5 'judge' rating (clean ones rated higher, a fifth at random)."""
    rng, paths = np.random.default_rng(3), []
    for i in range(len(SITES)):
        samples = make_splits(num_samples=per_site, noise_rate=0.4, anchor_size=0, test_size=0, seed=10 + i).train
        rated = []
        for s in samples:
            r = int(rng.integers(3, 6)) if s.metadata["clean"] else int(rng.integers(0, 3))
            r = int(rng.integers(0, 6)) if rng.random() < 0.2 else r
            rated.append(s.__class__(**{**s.__dict__, "metadata": {**s.metadata, "judge": r}}))
        paths.append(tmp_path / f"site-{i}.jsonl")
        write_samples(paths[-1], rated)
    return paths


def _config(secure: bool):
    return load_config(None, {"scoring.scorers": ["ds2"], "curation.score-field": "judge", "curation.hoc-rounds": 20,
                              "selection.fraction": 0.5, "selection.bins": 64, "federation.sites": 3,
                              "federation.train-rounds": 0, "federation.round-timeout-s": 600.0,
                              "privacy.secure-aggregation": secure, "privacy.score-range": [-1.0, 6.0],
                              "run.stop-after": "select"})


def _stored(run_dir: Path, site: str, step: str) -> dict[str, np.ndarray]:
    with np.load(step_dir(run_dir / "sites" / site, step) / "reply.npz") as npz:
        return {k: npz[k] for k in npz.files}


def _run(tmp_path: Path, name: str, secure: bool, data: list[Path]) -> tuple[Path, list[tuple[str, str, bytes]]]:
    seen: list[tuple[str, str, bytes]] = []
    transport.PAYLOAD_TAPS.append(lambda d, site, step, payload, wire: seen.append((d, step, wire)))
    try:
        run_dir = simulate(_config(secure), tmp_path / name, sites=3, data_paths=data)
    finally:
        transport.PAYLOAD_TAPS.clear()
    return run_dir, seen


def _leaks(run_dir: Path, seen: list[tuple[str, str, bytes]]) -> list[str]:
    """Which sites' own histogram or consensus counts appear, in any encoding a reply could use, in what the
    server received."""
    wire = [w for d, _, w in seen if d == "received"]
    found = []
    for site in SITES:
        for step, key in (("threshold/hist/0", "counts"), ("curate/counts", "third")):
            arr = _stored(run_dir, site, step)[key]
            for enc in (arr.astype(np.int64), arr.astype(np.float64)):
                if any(enc.tobytes() in w for w in wire):
                    found.append(f"{site} {step} {enc.dtype}")
    return found


@pytest.mark.integration
def test_with_secure_aggregation_the_server_receives_only_sums_and_they_are_exact(tmp_path):
    # Prepare: the same three rated sites, once in the clear and once with SecAgg+
    data = _rated_sites(tmp_path)

    # Execute
    plain_dir, plain_seen = _run(tmp_path, "plain", False, data)
    secure_dir, secure_seen = _run(tmp_path, "secure", True, data)

    # Assert: in the clear every site's counts travel; under SecAgg+ none does, yet the rounds did happen
    assert len(_leaks(plain_dir, plain_seen)) == 2 * len(SITES)
    assert _leaks(secure_dir, secure_seen) == []
    assert {s for d, s, _ in secure_seen if d == "received"} >= set(SECURE_STEPS)

    # Assert: the server's aggregates equal the plain sums of what each site computed
    threshold = json.loads((secure_dir / "server" / "threshold" / "summary.json").read_text())
    hist = sum(_stored(secure_dir, s, "threshold/hist/0")["counts"].astype(np.int64) for s in SITES)
    assert threshold["histogram"]["counts"] == hist.tolist() and threshold["num_samples"] == 180
    plain_t = json.loads((plain_dir / "server" / "curate" / "summary.json").read_text())["T"]
    secure_t = json.loads((secure_dir / "server" / "curate" / "summary.json").read_text())["T"]
    np.testing.assert_allclose(secure_t, plain_t, atol=1e-12)  # one T from the same summed consensus counts
    select = json.loads((secure_dir / "server" / "select" / "summary.json").read_text())
    assert select["kept"] == threshold["expected_kept"]
    comm = json.loads((secure_dir / "stats" / "communication.json").read_text())
    assert {c["site"] for c in comm if c.get("secure")} == set(SITES)
    assert "rating_histogram" not in json.loads((secure_dir / "server" / "prepare" / "summary.json").read_text())


def test_sums_are_exact_integers_and_a_value_beyond_the_clipping_range_is_refused():
    replies = [Payload({"num-nan": 3}, {"counts": np.array([1, 0, 2**20])}),
               Payload({"num-nan": 0}, {"counts": np.array([0, 5, 7])})]
    sums = integer_sums([summable(r, ["counts", "num-nan"]) for r in replies], ["counts", "num-nan"])
    assert sums["counts"].tolist() == [1, 5, 2**20 + 7] and sums["num-nan"].tolist() == [3]
    assert clipping_range(3) == 2**28 and clipping_range(100) == 2**23
    assert 2 * clipping_range(127) * 127 < 2**31
    with pytest.raises(ValueError, match="exceeds the clipping range"):
        check_range(summable(Payload(arrays={"counts": np.array([2**28 + 1])}), ["counts"]), clipping_range(3))
    with pytest.raises(ValueError, match="no numeric field 'missing'"):
        summable(replies[0], ["missing"])
    with pytest.raises(ValueError, match="not finite"):
        summable(Payload(arrays={"c": np.array([np.nan])}), ["c"])


def test_secure_aggregation_needs_a_score_range():
    with pytest.raises(ConfigError, match="privacy.score-range"):
        load_config(None, {"privacy.secure-aggregation": True})

