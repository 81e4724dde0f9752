"""Split samples into federated sites: IID, label-skewed (Dirichlet over a metadata key), quality-skewed.

IID and Dirichlet use Flower Datasets' partitioners on a `datasets.Dataset` of row indices (plus the key
column), so the splits match what Flower users know. Every site is non-empty, sites are disjoint and
together cover the input, and the same seed gives the same split.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner

from fedcurate.common.data.sample import Sample
from fedcurate.common.io import write_jsonl
from fedcurate.simulations.synthetic import corrupt, derive_seed, generate_clean

logger = logging.getLogger(__name__)

SCHEMES = ("iid", "dirichlet")
_DIRICHLET_RESTARTS = 3  # fresh seeds tried after Flower's own 10 resamples fail min_partition_size


def _check_sites(samples: Sequence[Sample], num_sites: int) -> None:
    if num_sites < 1:
        raise ValueError(f"num_sites must be >= 1, got {num_sites}")
    if num_sites > len(samples):
        raise ValueError(f"num_sites={num_sites} > {len(samples)} samples: every site needs at least one")


def _load_all(partitioner: Partitioner, samples: Sequence[Sample], num_sites: int) -> list[list[Sample]]:
    """Materialise every partition as lists of samples (the dataset's `idx` column indexes `samples`)."""
    parts = []
    for site in range(num_sites):
        rows = partitioner.load_partition(site)[:]["idx"].to_pylist()  # one Arrow batch, not row by row
        parts.append([samples[i] for i in rows])
    return parts


def _arrow_dataset(columns: dict[str, Any]) -> Dataset:
    """Arrow-formatted, so column reads (ours and Flower's) are one batch, not a per-row Python loop."""
    return Dataset.from_dict(columns).with_format("arrow")


def partition_iid(samples: Sequence[Sample], num_sites: int, seed: int) -> list[list[Sample]]:
    """Shuffle, then cut into `num_sites` contiguous shards whose sizes differ by at most one."""
    _check_sites(samples, num_sites)
    order = np.random.default_rng(seed).permutation(len(samples))
    partitioner = IidPartitioner(num_partitions=num_sites)
    partitioner.dataset = _arrow_dataset({"idx": order})
    return _load_all(partitioner, samples, num_sites)


def _labels(samples: Sequence[Sample], key: str) -> list[str]:
    missing = [s.id for s in samples if key not in s.metadata]
    if missing:
        raise ValueError(f"partition key metadata[{key!r}] missing in {len(missing)} sample(s), e.g. {missing[:3]}")
    return [str(s.metadata[key]) for s in samples]


def partition_dirichlet(samples: Sequence[Sample], num_sites: int, alpha: float, seed: int,
                        key: str = "task", min_partition_size: int | None = None) -> list[list[Sample]]:
    """Label skew: each value of metadata[key] is spread over sites by proportions ~ Dirichlet(alpha).

    Small alpha (0.1) gives sites dominated by one or two values; large alpha (100) approaches IID.
    `min_partition_size` defaults to 5% of an even share (at least 1): Flower resamples the
    proportions until every site has that many, and we restart with fresh seeds a few times.
    """
    _check_sites(samples, num_sites)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    min_size = min_partition_size if min_partition_size is not None else max(1, len(samples) // (20 * num_sites))
    if not 1 <= min_size * num_sites <= len(samples):
        raise ValueError(f"min_partition_size={min_size} x {num_sites} sites does not fit {len(samples)} samples")
    table = {"idx": np.arange(len(samples)), key: _labels(samples, key)}
    for attempt in range(_DIRICHLET_RESTARTS):
        partitioner = DirichletPartitioner(
            num_partitions=num_sites, partition_by=key, alpha=float(alpha), min_partition_size=min_size,
            self_balancing=False, shuffle=True, seed=seed if attempt == 0 else derive_seed(seed, "dirichlet", attempt))
        partitioner.dataset = _arrow_dataset(table)
        with warnings.catch_warnings(record=True) as caught:  # one warning per resample: count, don't spam
            warnings.simplefilter("always")
            try:
                parts = _load_all(partitioner, samples, num_sites)
            except ValueError:
                logger.debug("dirichlet attempt %d: min_partition_size %d not met", attempt, min_size)
                continue
        logger.debug("dirichlet split after %d restart(s) and %d resample(s)", attempt, len(caught))
        return parts
    n_values = len(set(table[key]))
    raise ValueError(f"could not split {len(samples)} samples into {num_sites} sites of >= {min_size} by "
                     f"Dirichlet(alpha={alpha}) over {n_values} value(s) of metadata[{key!r}]; "
                     "raise alpha, lower num_sites or lower min_partition_size")


def partition_quality_skew(num_sites: int, samples_per_site: int, noise_rates: Sequence[float],
                           seed: int) -> list[list[Sample]]:
    """Fresh synthetic data per site, site i corrupted at noise_rates[i]; ids f"site{i}-k"."""
    if len(noise_rates) != num_sites:
        raise ValueError(f"noise_rates has {len(noise_rates)} value(s), need one per site ({num_sites})")
    if samples_per_site < 1:
        raise ValueError(f"samples_per_site must be >= 1, got {samples_per_site}")
    parts = []
    for site, rate in enumerate(noise_rates):
        clean = generate_clean(samples_per_site, derive_seed(seed, "site", site), id_prefix=f"site{site}-")
        parts.append(corrupt(clean, rate, derive_seed(seed, "site-noise", site)))
    return parts


def partition(samples: Sequence[Sample], num_sites: int, scheme: str, *, seed: int, alpha: float = 0.5,
              key: str = "task") -> list[list[Sample]]:
    """Split by `scheme`: "iid" or "dirichlet" (label skew over metadata[key] with `alpha`)."""
    if scheme == "iid":
        parts = partition_iid(samples, num_sites, seed)
    elif scheme == "dirichlet":
        parts = partition_dirichlet(samples, num_sites, alpha, seed, key=key)
    else:
        raise ValueError(f"unknown partition scheme {scheme!r}; available: {', '.join(SCHEMES)}")
    logger.info("partitioned %d samples into %d sites (%s): sizes %s", len(samples), num_sites, scheme,
                [len(p) for p in parts])
    return parts


def write_partitions(parts: Sequence[Sequence[Sample]], out_dir: Path) -> list[Path]:
    """Write site-0.jsonl, site-1.jsonl, ... atomically; returns their paths in site order."""
    paths = []
    for site, part in enumerate(parts):
        path = Path(out_dir) / f"site-{site}.jsonl"
        write_jsonl(path, (s.to_dict() for s in part))
        paths.append(path)
    return paths
