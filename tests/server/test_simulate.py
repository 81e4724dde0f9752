"""`simulate`: input checks and synthetic site data (no Ray), then the real ServerApp/ClientApp in Ray."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fedcurate.app.simulate import simulate, write_synthetic_sites
from fedcurate.common.config import ConfigError, load_config


def _cfg(**overrides):
    base = {"synthetic.num-samples": 200, "synthetic.anchor-size": 10, "synthetic.test-size": 10,
            "federation.round-timeout-s": 600.0}  # generous: a busy CI machine starts Ray slowly
    return load_config(overrides=base | overrides)


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_write_synthetic_sites_quality_skew_needs_one_rate_per_site(tmp_path):
    # Prepare
    cfg = _cfg(**{"federation.partition": "quality-skew", "federation.site-noise-rates": [0.1, 0.5],
                  "federation.sites": 3})

    # Execute / Assert
    with pytest.raises(ValueError, match="one federation.site-noise-rates entry per site: got 2 for 3 sites"):
        write_synthetic_sites(cfg, tmp_path)


def test_write_synthetic_sites_quality_skew_writes_one_file_per_site(tmp_path):
    # Prepare
    cfg = _cfg(**{"federation.partition": "quality-skew", "federation.site-noise-rates": [0.0, 1.0]})

    # Execute
    template = write_synthetic_sites(cfg, tmp_path)

    # Assert
    assert template == tmp_path / "site-{partition_id}.jsonl"
    sites = [[json.loads(x) for x in Path(str(template).format(partition_id=i)).read_text().splitlines()]
             for i in range(2)]
    assert [len(s) for s in sites] == [100, 100]
    assert all(r["metadata"]["clean"] for r in sites[0]) and not any(r["metadata"]["clean"] for r in sites[1])
    assert {p.name for p in tmp_path.iterdir()} >= {"anchor.jsonl", "test.jsonl", "train.jsonl"}


def test_simulate_checks_inputs_before_starting_flower(tmp_path):
    # Prepare
    data = tmp_path / "a.jsonl"
    data.write_text('{"instruction": "x", "output": "y"}\n', encoding="utf-8")

    # Execute / Assert
    with pytest.raises(ValueError, match="1 input path\\(s\\) for 2 sites"):
        simulate(_cfg(), tmp_path / "run", sites=2, data_paths=[data])
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        simulate(_cfg(), tmp_path / "run", sites=2, data_paths=[data, tmp_path / "missing.jsonl"])
    with pytest.raises(ConfigError, match="min-sites"):
        simulate(_cfg(**{"federation.min-sites": 3, "federation.sites": 3}), tmp_path / "run", sites=2)


@pytest.mark.integration
def test_simulate_runs_prepare_through_flower_and_resumes(tmp_path):
    # Prepare
    cfg = _cfg()

    # Execute
    start = time.perf_counter()
    run_dir = simulate(cfg, tmp_path / "run", sites=2)
    first_s = time.perf_counter() - start
    done = run_dir / "server" / "prepare" / "DONE"
    stamp = done.stat().st_mtime_ns
    simulate(cfg, run_dir, sites=2)  # everything done: the ServerApp skips the phase

    # Assert
    import ray

    summary = json.loads((run_dir / "server" / "prepare" / "summary.json").read_text(encoding="utf-8"))
    assert (summary["num_sites"], summary["num_samples"], summary["num_rejects"]) == (2, 200, 0)
    assert sorted(summary["sites"]) == ["site-0", "site-1"] and summary["excluded"] == []
    for site, row in summary["sites"].items():
        site_dir = run_dir / "sites" / site / "prepare"
        assert (site_dir / "DONE").is_file()
        assert row["num_samples"] == _lines(site_dir / "samples.jsonl") == _lines(run_dir / "data" / f"{site}.jsonl")
    assert summary["communication"]["bytes_sent"] > 0 and summary["communication"]["bytes_received"] > 0
    assert done.stat().st_mtime_ns == stamp
    assert not ray.is_initialized()
    print(f"first simulate: {first_s:.1f} s")


@pytest.mark.integration
def test_simulate_fails_when_a_site_has_bad_rows_in_raise_mode(tmp_path):
    # Prepare
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text('{"instruction": "a", "output": "b"}\n', encoding="utf-8")
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": 7}\n', encoding="utf-8")
    cfg = _cfg(**{"federation.min-sites": 2, "data.on-error": "raise"})

    # Execute
    with pytest.raises(RuntimeError) as info:
        simulate(cfg, tmp_path / "run", sites=2, data_paths=[good, bad])

    # Assert
    assert "[prepare] 1 site(s) gave a valid reply, federation.min-sites = 2" in str(info.value)
    assert f"{bad}:2: wrong type (output)" in str(info.value)
    assert not (tmp_path / "run" / "server" / "prepare" / "DONE").exists()
    assert (tmp_path / "run" / "sites" / "site-0" / "prepare" / "DONE").is_file()
