"""`proxy_train`: samples joined to ratings by id (NaN and missing ratings skipped and counted), the real
default encoder, a seeded validation split, and a head that `proxy_score` can load."""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedcurate.common.config import load_config
from fedcurate.common.data.loaders import write_samples
from fedcurate.common.proxy.head import load_head
from fedcurate.common.proxy.train import proxy_train, read_ratings, split_indices
from fedcurate.simulations.synthetic import corrupt, generate_clean


@pytest.fixture
def rated(tmp_path):
    """150 samples; ratings 4 for clean and 1 for corrupted ones, two NaN, one id unrated, one unknown id."""
    samples = corrupt(generate_clean(150, 3), 0.4, 3)
    write_samples(tmp_path / "data.jsonl", samples)
    ids = [s.id for s in samples[1:]] + ["not-in-data"]
    ratings = [4.0 if s.metadata["clean"] else 1.0 for s in samples[1:]] + [2.0]
    ratings[3] = ratings[7] = math.nan
    pq.write_table(pa.table({"id": ids, "rating": ratings, "other": [1.0] * len(ids)}), tmp_path / "ratings.parquet")
    return tmp_path


def test_proxy_train_reports_counts_metrics_and_saves_a_head(rated):
    # Execute
    stats = proxy_train(load_config(), rated / "data.jsonl", rated, rated / "out", val_fraction=0.2, epochs=5)
    # Assert
    assert stats["counts"] == {"samples": 150, "used": 147, "nan_rating": 2, "no_rating_row": 1,
                               "ratings_without_sample": 1, "rejected_rows": 0}
    assert stats["split"]["validation"] == round(147 * 0.2) and sum(stats["split"].values()) == 147
    val = stats["metrics"]["validation"]
    assert val["n"] == stats["split"]["validation"] and np.asarray(val["confusion"]).sum() == val["n"]
    assert np.asarray(val["confusion"])[[0, 2, 3, 5]].sum() == 0  # ratings are only 1 or 4
    assert 0 <= stats["training"]["best_epoch"] <= 5
    head, meta = load_head(rated / "out" / "head")
    assert head.in_features == meta.dim == 384 and meta.threshold == 3.0 and meta.rating_column == "rating"
    assert json.loads((rated / "out" / "proxy_train.json").read_text())["counts"]["used"] == 147


def test_proxy_train_is_reproducible(rated):
    # Execute
    a = proxy_train(load_config(), rated / "data.jsonl", rated / "ratings.parquet", rated / "a", epochs=3)
    b = proxy_train(load_config(), rated / "data.jsonl", rated / "ratings.parquet", rated / "b", epochs=3)
    # Assert
    assert a["metrics"] == b["metrics"]
    assert (rated / "a" / "head" / "weights.npz").read_bytes() == (rated / "b" / "head" / "weights.npz").read_bytes()


def test_ratings_tables_are_checked(rated):
    # Prepare
    (rated / "r.jsonl").write_text('{"id": "a", "score": 1}\n{"id": "a", "score": 2}\n')
    # Execute / Assert
    with pytest.raises(ValueError, match="missing column"):
        read_ratings(rated / "ratings.parquet", column="ds2")
    with pytest.raises(ValueError, match="duplicate id"):
        read_ratings(rated / "r.jsonl", column="score")
    assert read_ratings(rated, column="other")["s1"] == 1.0


def test_split_is_seeded_and_disjoint():
    # Execute
    train, val = split_indices(100, 0.1, seed=4)
    again, _ = split_indices(100, 0.1, seed=4)
    # Assert
    assert len(val) == 10 and set(train).isdisjoint(val) and sorted([*train, *val]) == list(range(100))
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(val, split_indices(100, 0.1, seed=5)[1])
