"""`fedcurate bench quality` end to end on a very small setting (figures finite, JSON last line)."""

from __future__ import annotations

import json
import math

import pytest

from fedcurate.simulations import bench_quality


@pytest.mark.integration
def test_bench_quality_small_reports_every_figure(tmp_path, capsys, monkeypatch):
    # Prepare: 40 samples per site, two methods, one short training round
    argv = ["--out", str(tmp_path), "--per-site", "40", "--only", "full", "clues-global", "--train-rounds", "1",
            "--local-steps", "2", "--set", "evaluation.max-samples=10", "--set", "evaluation.exact-match=false",
            "--set", "federation.warmup-rounds=1", "--set", "model.max-length=128"]
    monkeypatch.setattr(bench_quality, "COMMON_REFERENCE_EPOCHS", 1.0)

    # Execute
    code = bench_quality.main(argv)

    # Assert
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert code == 0 and lines[0].startswith("method")
    assert set(report["methods"]) == {"full", "clues-global"}
    full, clues = report["methods"]["full"], report["methods"]["clues-global"]
    assert full["kept"] == 160 and clues["kept"] == 64  # floor(0.4 * 160), through the histogram rounds
    assert full["precision"] == pytest.approx(report["clean_share"])
    assert all(math.isfinite(m[k]) for m in (full, clues) for k in ("precision", "loss", "token_accuracy"))
    assert (tmp_path / "seed-0" / "clues-global" / "server" / "evaluate" / "DONE").exists()
