"""Tests for the site partitioners: coverage, disjointness, determinism, label and quality skew."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from fedcurate.common.data.sample import Sample
from fedcurate.simulations.partition import (
    partition,
    partition_dirichlet,
    partition_iid,
    partition_quality_skew,
    write_partitions,
)
from fedcurate.simulations.synthetic import TASK_FAMILIES, corrupt, generate_clean, precision


def _assert_valid_split(parts, samples, num_sites):
    ids = [s.id for part in parts for s in part]
    assert len(parts) == num_sites
    assert all(parts), [len(p) for p in parts]
    assert len(ids) == len(set(ids))  # disjoint
    assert sorted(ids) == sorted(s.id for s in samples)  # covering


def _task_skew(parts):
    """Mean total-variation distance between each site's task mix and the overall mix."""
    total = Counter(s.metadata["task"] for p in parts for s in p)
    n = sum(total.values())
    dists = []
    for part in parts:
        local = Counter(s.metadata["task"] for s in part)
        dists.append(0.5 * sum(abs(local[t] / len(part) - total[t] / n) for t in TASK_FAMILIES))
    return sum(dists) / len(dists)


@pytest.mark.parametrize("num_sites", [1, 3, 7])
def test_iid_sites_are_nonempty_disjoint_covering_and_even(num_sites):
    # Prepare
    samples = generate_clean(50, seed=0)

    # Execute
    parts = partition_iid(samples, num_sites, seed=1)

    # Assert
    _assert_valid_split(parts, samples, num_sites)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_iid_is_deterministic_per_seed_and_shuffles():
    # Prepare
    samples = generate_clean(60, seed=0)

    # Execute
    a, b, c = (partition_iid(samples, 3, seed=s) for s in (2, 2, 3))

    # Assert
    assert a == b
    assert a != c
    assert [s.id for s in a[0]] != [s.id for s in samples[:20]]


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_more_sites_than_samples_is_a_clear_error(scheme):
    # Execute / Assert
    with pytest.raises(ValueError, match="every site needs at least one"):
        partition(generate_clean(4, seed=0), 5, scheme, seed=0)


def test_dirichlet_split_is_valid_and_deterministic():
    # Prepare
    samples = generate_clean(400, seed=1)

    # Execute
    a = partition_dirichlet(samples, 5, alpha=0.5, seed=3)
    b = partition_dirichlet(samples, 5, alpha=0.5, seed=3)
    c = partition_dirichlet(samples, 5, alpha=0.5, seed=4)

    # Assert
    _assert_valid_split(a, samples, 5)
    assert a == b
    assert a != c


def test_dirichlet_small_alpha_skews_tasks_more_than_iid():
    # Prepare
    samples = generate_clean(1000, seed=2)

    # Execute
    skewed = partition_dirichlet(samples, 4, alpha=0.1, seed=0)
    iid = partition_iid(samples, 4, seed=0)

    # Assert
    _assert_valid_split(skewed, samples, 4)
    assert _task_skew(skewed) > 0.3
    assert _task_skew(iid) < 0.1


def test_dirichlet_by_another_key_and_missing_key():
    # Prepare
    samples = corrupt(generate_clean(300, seed=0), 0.4, seed=0)

    # Execute
    parts = partition(samples, 3, "dirichlet", seed=0, alpha=1.0, key="noise")

    # Assert
    _assert_valid_split(parts, samples, 3)
    with pytest.raises(ValueError, match="missing"):
        partition_dirichlet(samples, 3, alpha=1.0, seed=0, key="domain")


def test_dirichlet_impossible_split_is_a_clear_error():
    # Prepare: one label value and a tiny alpha put (nearly) everything on one site
    samples = generate_clean(30, seed=0, families=("add",))

    # Execute / Assert
    with pytest.raises(ValueError, match="raise alpha"):
        partition_dirichlet(samples, 3, alpha=1e-3, seed=0, min_partition_size=5)


def test_partition_rejects_unknown_scheme():
    # Execute / Assert
    with pytest.raises(ValueError, match="available: iid, dirichlet"):
        partition(generate_clean(10, seed=0), 2, "pathological", seed=0)


def test_quality_skew_gives_each_site_its_noise_rate():
    # Prepare
    rates = [0.0, 0.2, 0.5, 0.8]

    # Execute
    parts = partition_quality_skew(4, samples_per_site=200, noise_rates=rates, seed=0)

    # Assert
    assert [precision(p) for p in parts] == pytest.approx([1 - r for r in rates], abs=0.005)
    assert all(s.id.startswith(f"site{i}-") for i, p in enumerate(parts) for s in p)
    assert len({s.id for p in parts for s in p}) == 800
    assert [s.instruction for s in parts[0]] != [s.instruction for s in parts[1]]
    assert parts == partition_quality_skew(4, samples_per_site=200, noise_rates=rates, seed=0)


def test_quality_skew_needs_one_rate_per_site():
    # Execute / Assert
    with pytest.raises(ValueError, match="one per site"):
        partition_quality_skew(3, samples_per_site=10, noise_rates=[0.1, 0.2], seed=0)


def test_write_partitions_round_trips(tmp_path):
    # Prepare
    samples = corrupt(generate_clean(30, seed=0), 0.3, seed=0)
    parts = partition_iid(samples, 3, seed=0)

    # Execute
    paths = write_partitions(parts, tmp_path / "sites")

    # Assert
    assert [p.name for p in paths] == ["site-0.jsonl", "site-1.jsonl", "site-2.jsonl"]
    for path, part in zip(paths, parts, strict=True):
        rows = [Sample.from_dict(json.loads(line)) for line in path.read_text().splitlines()]
        assert rows == part
