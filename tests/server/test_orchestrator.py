"""The phases over the in-process transport: global threshold, federated DS2, bad replies excluded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedcurate.app.local import LocalTransport
from fedcurate.client.site import SiteLocation
from fedcurate.common.config import load_config
from fedcurate.common.data.loaders import write_samples
from fedcurate.common.protocol import histogram as threshold
from fedcurate.common.protocol.payload import Payload, RoundResult
from fedcurate.server.orchestrator import PhaseError, run_phases
from fedcurate.simulations.partition import partition_quality_skew


def _sites(tmp_path: Path, rates=(0.1, 0.8), per_site: int = 60) -> list[SiteLocation]:
    parts = partition_quality_skew(len(rates), per_site, list(rates), seed=3)
    sites = []
    for i, part in enumerate(parts):
        path = tmp_path / "data" / f"site-{i}.jsonl"
        write_samples(path, part)
        sites.append(SiteLocation(f"site-{i}", str(path), tmp_path / "run" / "sites" / f"site-{i}"))
    return sites


def _interval_cut(site_scores: list[np.ndarray], target: int, bins: int, rounds: int) -> tuple[float, int]:
    """The server's refinement loop over `interval_histogram` replies, without transport."""
    lo = min(float(s[np.isfinite(s)].min()) for s in site_scores)  # sites report finite min/max
    hi = max(float(s[np.isfinite(s)].max()) for s in site_scores)
    edges, closed = threshold.bin_edges(lo, hi, bins), True
    for i in range(rounds + 1):
        hists = [threshold.interval_histogram(s, edges, closed) for s in site_scores]
        counts = np.sum([h["counts"] for h in hists], axis=0)
        cut = threshold.find_cut(counts, sum(h["num-above"] for h in hists), edges, closed, target, i < rounds)
        if cut.threshold is not None:
            return cut.threshold, cut.kept
        edges, closed = threshold.bin_edges(cut.next.lo, cut.next.hi, bins), cut.next.closed
    raise AssertionError("no threshold")


@pytest.mark.parametrize("seed", range(5))
def test_histogram_refinement_keeps_exactly_the_global_top_k(seed):
    # Prepare: three sites, continuous scores of different scales, a few NaN and +inf
    rng = np.random.default_rng(seed)
    sites = [rng.normal(0, 1, 300), rng.normal(2, 0.01, 50), rng.exponential(1, 500)]
    sites[0][:5] = np.nan
    sites[2][0] = np.inf
    pooled = np.concatenate(sites)
    for target in (0, 1, 17, 425, int(np.isfinite(pooled).sum() + np.isinf(pooled).sum())):
        # Execute
        t, kept = _interval_cut(sites, target, bins=16, rounds=12)
        # Assert: the threshold keeps exactly the `target` best scores of the pooled data
        mask = threshold.keep_mask(pooled, t)
        assert kept == int(mask.sum()) == target, (target, t)
        if target:
            best = np.sort(pooled[~np.isnan(pooled)])[::-1][:target]
            assert set(pooled[mask]) == set(best)


def test_tie_quota_keeps_the_share_of_ties_in_sample_order():
    scores = np.array([3.0, 1.0, 2.0, 2.0, np.nan, 2.0, 2.0])
    keep = threshold.tie_quota(scores, 2.0, 0.5)
    assert keep.tolist() == [True, False, True, True, False, False, False]


def test_two_site_ds2_solves_one_global_transition_matrix_from_summed_counts(tmp_path):
    # Prepare: ratings in metadata (0-5 from the ground truth, a fifth flipped), DS2 over two sites
    from fedcurate.common.curation.ds2 import site_counts
    from fedcurate.common.curation.embeddings import embed_samples
    from fedcurate.common.curation.hoc import solve_hoc, sum_counts
    from fedcurate.common.data.loaders import load_samples

    sites = _sites(tmp_path, per_site=120)
    rng = np.random.default_rng(0)
    for where in sites:
        samples = load_samples(where.data_path).samples
        rated = []
        for s in samples:
            r = int(rng.integers(3, 6)) if s.metadata["clean"] else int(rng.integers(0, 3))
            r = int(rng.integers(0, 6)) if rng.random() < 0.2 else r
            rated.append(s.__class__(**{**s.__dict__, "metadata": {**s.metadata, "judge": r}}))
        write_samples(Path(where.data_path), rated)
    cfg = load_config(None, {"scoring.scorers": ["ds2"], "curation.score-field": "judge", "curation.hoc-rounds": 20,
                             "selection.fraction": 0.5, "federation.sites": 2})

    # Execute
    summaries = run_phases(cfg, tmp_path / "run", LocalTransport(sites, cfg), stop_after="select")

    # Assert: the server's T is what solving the sum of each site's own counts gives
    expected = []
    for where in sites:
        samples = load_samples(Path(where.site_dir) / "prepare" / "samples.jsonl").samples
        raw = np.asarray([s.metadata["judge"] for s in samples], dtype=np.float64)
        emb = embed_samples(samples, cfg.curation, Path(where.site_dir) / "cache" / "embeddings")
        expected.append(site_counts(emb, raw, cfg.curation, progress=False))
    hoc = solve_hoc(sum_counts(expected), cfg.curation)
    np.testing.assert_allclose(summaries["curate"]["T"], hoc.T, atol=1e-12)
    assert summaries["select"]["kept"] == 120
    assert sum(summaries["prepare"]["rating_histogram"]) == 240 and summaries["prepare"]["num_unrated"] == 0
    assert summaries["select"]["precision"] > summaries["select"]["precision_full"] + 0.2
    assert "no training-dynamics scorer" in summaries["warmup"]["skipped"]
    assert summaries["warmup"]["communication"]["rounds"] == 0


class CorruptingTransport(LocalTransport):
    """Replies of `site` at steps starting with `step` are tampered with by `tamper(payload)`."""

    def __init__(self, sites, cfg, site, step, tamper):
        super().__init__(sites, cfg)
        self.site, self.step, self.tamper = site, step, tamper

    def round(self, phase, step, payload) -> RoundResult:
        result = super().round(phase, step, payload)
        if step.startswith(self.step) and self.site in result.replies:
            self.tamper(result.replies[self.site])
        return result


def _nan_adapter(p: Payload) -> None:
    key = next(k for k in p.arrays if k.startswith("weight/"))
    p.arrays[key] = np.full_like(p.arrays[key], np.nan)


def _wrong_grid(p: Payload) -> None:
    p.arrays["counts"] = np.append(p.arrays["counts"], 7)


def _absurd_counts(p: Payload) -> None:
    p.arrays["counts"] = p.arrays["counts"] * 1000  # far more scores than the site declared


def _negative_counts(p: Payload) -> None:
    p.arrays["counts"] = p.arrays["counts"] - 1


@pytest.mark.parametrize(("step", "tamper", "reason"), [
    ("threshold/hist", _wrong_grid, "shape"),
    ("threshold/hist", _negative_counts, "negative"),
    ("threshold/hist", _absurd_counts, "sum"),
    ("train", _nan_adapter, "non-finite"),
])
def test_a_bad_reply_is_excluded_with_its_reason_and_never_aggregated(tmp_path, step, tamper, reason):
    # Prepare
    sites = _sites(tmp_path)
    cfg = load_config(None, {"scoring.scorers": ["length"], "federation.sites": 2, "federation.min-sites": 1,
                             "federation.train-rounds": 1, "federation.local-steps": 2, "model.max-length": 128,
                             "training.batch-size": 8})

    # Execute
    summaries = run_phases(cfg, tmp_path / "run", CorruptingTransport(sites, cfg, "site-1", step, tamper),
                           stop_after="train")

    # Assert
    text = json.dumps(summaries)
    assert "site-1" in text and reason in text
    if step == "train":
        excluded = summaries["train"]["rounds"][0]["excluded"]
        assert [e["site"] for e in excluded] == ["site-1"]
        from safetensors.numpy import load_file

        weights = load_file(str(Path(summaries["train"]["adapter"]) / "adapter_model.safetensors"))
        assert all(np.isfinite(w).all() for w in weights.values())
    else:
        assert summaries["threshold"]["expected_kept"] <= 60  # only site-0's histogram counted


def test_too_few_valid_replies_stop_the_run_with_every_reason(tmp_path):
    sites = _sites(tmp_path)
    cfg = load_config(None, {"scoring.scorers": ["length"], "federation.sites": 2, "federation.min-sites": 2})
    transport = CorruptingTransport(sites, cfg, "site-1", "threshold/hist", _wrong_grid)
    with pytest.raises(PhaseError, match=r"1 site\(s\) gave a valid reply, federation.min-sites = 2: site-1: \[threshold/hist/0\] invalid"):
        run_phases(cfg, tmp_path / "run", transport, stop_after="select")
    assert not (tmp_path / "run" / "server" / "threshold" / "DONE").exists()
    assert (tmp_path / "run" / "server" / "dynamics" / "DONE").exists()


def test_resuming_a_run_with_other_settings_is_refused(tmp_path):
    from fedcurate.server.orchestrator import ConfigChangedError

    sites = _sites(tmp_path)
    cfg = load_config(None, {"scoring.scorers": ["length"], "federation.sites": 2})
    run_phases(cfg, tmp_path / "run", LocalTransport(sites, cfg), stop_after="threshold")
    other = load_config(None, {"scoring.scorers": ["length"], "federation.sites": 2, "selection.fraction": 0.3})
    with pytest.raises(ConfigChangedError, match=r"selection.fraction: 0.5 -> 0.3"):
        run_phases(other, tmp_path / "run", LocalTransport(sites, other))
    same_but_longer = load_config(None, {"scoring.scorers": ["length"], "federation.sites": 2,
                                         "federation.round-timeout-s": 60.0})
    summaries = run_phases(same_but_longer, tmp_path / "run", LocalTransport(sites, cfg), stop_after="select")
    assert 59 <= summaries["select"]["kept"] <= 60  # length ties at the cut: a floor per site


def test_dp_threshold_adds_noise_at_the_sites_and_reports_the_spent_budget(tmp_path):
    # Prepare: random scores in [0, 1], keep half, epsilon 4 over the threshold phase
    sites = _sites(tmp_path, per_site=200)
    cfg = load_config(None, {"scoring.scorers": ["random"], "federation.sites": 2, "selection.fraction": 0.5,
                             "selection.bins": 32, "privacy.dp-epsilon": 4.0, "privacy.score-range": [0.0, 1.0]})
    seen: list[tuple[str, Payload]] = []
    from fedcurate.common.protocol import payload as tr

    tr.PAYLOAD_TAPS.append(lambda d, site, step, payload, wire: seen.append((step, payload)) if d == "received"
                           else None)

    # Execute
    try:
        summaries = run_phases(cfg, tmp_path / "run", LocalTransport(sites, cfg), stop_after="select")
    finally:
        tr.PAYLOAD_TAPS.clear()

    # Assert: the budget is spent as planned, no reply carries an exact extreme score, counts are noisy
    priv = summaries["threshold"]["privacy"]
    assert 4.0 - 1e-6 <= priv["spent_epsilon"] <= 4.0 + 1e-9 and priv["sigma"] > 1
    assert json.loads((tmp_path / "run" / "stats" / "privacy.json").read_text())["threshold"]["spent_epsilon"] == \
        priv["spent_epsilon"]
    threshold_replies = [p for step, p in seen if step.startswith("threshold/")]
    assert threshold_replies and not any({"min", "max", "inside-min", "inside-max"} & set(p.values)
                                         for p in threshold_replies)
    edges = np.asarray(summaries["threshold"]["histogram"]["edges"])
    exact = sum(threshold.interval_histogram(np.load(Path(w.site_dir) / "threshold" / "range" / "composite.npy"),
                                             edges, True)["counts"] for w in sites)
    noisy = np.asarray(summaries["threshold"]["histogram"]["counts"])
    assert exact.sum() == 400 and (noisy != exact).sum() >= 8  # sigma ~2 per bin and site: most bins move
    assert abs(summaries["select"]["kept"] - 200) <= 80  # noisy (tail-sum std ~16), but near the budget


def test_sites_evaluate_the_trained_adapter_on_their_own_test_sets(tmp_path):
    # Prepare: site-0 has a held-out file, site-1 has none; no server test set
    from fedcurate.common.data.loaders import load_samples
    from fedcurate.common.evaluation import evaluate_path

    sites = _sites(tmp_path, per_site=30)
    test = partition_quality_skew(1, 12, [0.0], seed=9)[0]
    write_samples(tmp_path / "test-site-0.jsonl", test)
    cfg = load_config(None, {"scoring.scorers": ["length"], "federation.sites": 2, "federation.train-rounds": 1,
                             "federation.local-steps": 2, "model.max-length": 96, "training.batch-size": 8,
                             "evaluation.at-sites": True, "evaluation.exact-match": False,
                             "evaluation.site-test-path": str(tmp_path / "test-{site}.jsonl")})

    # Execute
    summaries = run_phases(cfg, tmp_path / "run", LocalTransport(sites, cfg))

    # Assert: site-0's figures are those of the server's adapter on its file; site-1 says why it has none
    ev = summaries["evaluate"]["sites"]
    direct = evaluate_path(summaries["train"]["adapter"], load_samples(tmp_path / "test-site-0.jsonl").samples, cfg,
                           exact_match=False)
    assert ev["per_site"]["site-0"]["num-samples"] == 12 == ev["num_samples"]
    assert abs(ev["per_site"]["site-0"]["loss"] - direct.loss) < 1e-5
    assert abs(ev["mean"]["token-accuracy"] - direct.token_accuracy) < 1e-6
    assert ev["per_site"]["site-1"]["num-samples"] == 0 and "no test set" in ev["per_site"]["site-1"]["skipped"]
    assert "test_path" not in summaries["evaluate"]  # no server test set given
    from fedcurate.app.report import write_report

    page = write_report(tmp_path / "run").read_text()
    assert "each site&#x27;s own held-out set" in page or "each site's own held-out set" in page


def test_replies_reach_the_phases_in_site_order_whatever_order_they_arrived_in():
    # Prepare: a transport whose replies arrive in reverse site order (as Flower's may, under load)
    from fedcurate.server.run import Run

    class Reversed:
        def round(self, phase, step, payload):
            return RoundResult(replies={s: Payload({"x": 0.1 * i}) for i, s in enumerate(["c", "b", "a"])})

    cfg = load_config(None, {"federation.min-sites": 1})
    # Execute
    result = Run(cfg, Path("unused"), Reversed()).round("prepare", "prepare", Payload())
    # Assert: float sums over sites then follow one order on every run
    assert list(result.replies) == ["a", "b", "c"]
