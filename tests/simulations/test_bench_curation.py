"""The curation benchmark: worker results and the final JSON line."""

import json

import pytest

from fedcurate.simulations.bench_curation import main, run, work_naive


def test_curate_worker_prints_its_figures_as_the_last_json_line(capsys):
    # Prepare
    spec = {"kind": "curate", "n": 3000, "dim": 384, "seed": 0, "knn_index": "exact", "compat": False}
    # Execute
    code = main(["--worker", json.dumps(spec)])
    # Assert
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert result["wall_s"] > 0 and result["peak_rss_mib"] > 0
    assert result["curated_accuracy"] > result["raw_accuracy"] + 0.08
    assert len(result["T"]) == 6


def test_naive_worker_extrapolates_one_round():
    # Execute
    result = work_naive(2000, 32, 0, rounds=1)
    # Assert
    assert result["m"] == 1800
    assert result["estimated_total_s"] >= 100 * result["round_s"] > 0


@pytest.mark.slow
def test_full_run_reports_every_figure():
    # Execute
    report = run([6000, 9000], 384, 0, "ivf", 1)
    # Assert
    assert report["quality_5k"]["default_better"]
    assert set(report["runs"]) == {"6000", "9000", "6000_ivf"}
    assert report["speedup_vs_naive_6k"] > 1
