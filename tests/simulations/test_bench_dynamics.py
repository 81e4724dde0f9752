"""The dynamics benchmark: its figures, its last JSON line, and its memory worker."""

import json

from fedcurate.simulations.bench_dynamics import main, work_memory


def test_bench_prints_every_figure_as_the_last_json_line(capsys):
    # Execute
    code = main(["--samples", "4", "--naive-samples", "2", "--batch-size", "2", "--skip-memory"])
    # Assert
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    for key in ("fast", "fast_sgd_inner", "fast_adam_cosine", "naive", "training"):
        assert result[f"{key}_samples_per_s"] > 0
    assert result["fast_over_training"] == round(result["fast_samples_per_s"] / result["training_samples_per_s"], 3)


def test_memory_worker_reports_peak_rss():
    # Execute
    result = work_memory(2, 2, "cpu")
    # Assert
    assert result["n"] == 2 and result["samples_per_s"] > 0
    assert result["peak_rss_mib"] >= result["rss_after_build_mib"] > 0
