"""LoRA FedAvg: the pure aggregation, and the real strategy on real Flower reply Messages."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from fedcurate.strategies.lora_fedavg import LoraFedAvg, aggregate_lora

A, B, HEAD = "l0.q_proj.lora_A.weight", "l0.q_proj.lora_B.weight", "score.weight"


def _adapter(rng: np.random.Generator, r: int = 2, effective_rank: int | None = None) -> dict[str, np.ndarray]:
    b = rng.normal(size=(6, r)).astype(np.float32)
    b[:, effective_rank or r:] = 0.0  # only the first columns used: rank(B A) = effective_rank
    return {A: rng.normal(size=(r, 5)).astype(np.float32), B: b, HEAD: rng.normal(size=(3,)).astype(np.float32)}


def _mean_delta(states, weights) -> np.ndarray:
    p = np.asarray(weights, np.float64) / np.sum(weights)
    return sum(pk * s[B].astype(np.float64) @ s[A] for pk, s in zip(p, states, strict=True))


@pytest.fixture
def flower_identity():
    """Messages can only be built with a task identity set (flower.md §1.3); restore it afterwards."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.task_id = 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def _reply(node: int, arrays: dict[str, np.ndarray] | None = None, metrics: dict | None = None,
           error: str | None = None) -> Message:
    TaskIdentity.node_id = 0  # the server sends the instruction ...
    instruction = Message(RecordDict(), dst_node_id=node, message_type="train")
    TaskIdentity.node_id = node  # ... and node `node` answers it
    if error is not None:
        return Message(Error(code=1, reason=error), reply_to=instruction)
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                          "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=instruction)


def test_svd_reproduces_the_mean_delta_when_the_ranks_allow():
    # Prepare: three sites whose updates have rank 1 each; the global rank is 4 >= 3
    rng = np.random.default_rng(0)
    states = [_adapter(rng, r=4, effective_rank=1) for _ in range(3)]
    weights = [10.0, 20.0, 70.0]

    # Execute
    exact = aggregate_lora(states, weights, "svd")
    fedit = aggregate_lora(states, weights, None)

    # Assert: svd is exact, FedIT is not; the plain key is a weighted mean either way
    np.testing.assert_allclose(exact[B] @ exact[A], _mean_delta(states, weights), atol=1e-5)
    assert np.abs(fedit[B] @ fedit[A] - _mean_delta(states, weights)).max() > 0.05
    np.testing.assert_allclose(exact[HEAD], sum(w / 100 * s[HEAD] for w, s in zip(weights, states, strict=True)), atol=1e-6)
    with pytest.raises(ValueError, match="exact must be one of"):
        aggregate_lora(states, weights, "cat")


def test_strategy_excludes_bad_replies_with_reasons_and_averages_the_rest(flower_identity):
    # Prepare
    rng = np.random.default_rng(1)
    good = {1: _adapter(rng), 2: _adapter(rng)}
    nan = {**_adapter(rng)}
    nan[B][0, 0] = np.nan
    replies = [_reply(1, good[1], {"num-examples": 30, "train-loss": 1.0}),
               _reply(2, good[2], {"num-examples": 10, "train-loss": 3.0}),
               _reply(3, nan, {"num-examples": 50, "train-loss": 2.0}),
               _reply(4, {**_adapter(rng), A: np.ones((3, 5), np.float32)}, {"num-examples": 5, "train-loss": 0.0}),
               _reply(5, error="CUDA out of memory"),
               _reply(6, _adapter(rng), {"num-examples": 0, "train-loss": 1.0}),
               _reply(7, _adapter(rng), {"num-examples": 10**9, "train-loss": 1.0})]
    strategy = LoraFedAvg(template=_adapter(rng), exact="svd", max_weight=1000)

    # Execute
    arrays, metrics = strategy.aggregate_train(1, replies)

    # Assert
    stats = strategy.rounds[1]
    reasons = {e["node_id"]: e["reason"] for e in stats.excluded}
    assert sorted(stats.accepted) == [1, 2] and sorted(reasons) == [3, 4, 5, 6, 7]
    assert f"'{B}': 1 non-finite value(s)" in reasons[3]
    assert f"'{A}': shape (3, 5), expected (2, 5)" in reasons[4]
    assert "CUDA out of memory" in reasons[5]
    assert "'num-examples' = 0" in reasons[6]
    assert "above the bound 1000" in reasons[7]
    assert set(stats.bytes_received) == {1, 2, 3, 4, 6, 7} and stats.bytes_received[1] > 6 * 2 * 4
    merged = arrays.to_numpy_ndarrays()
    assert list(arrays.keys()) == [A, B, HEAD] and merged[0].dtype == np.float32
    expected = aggregate_lora([good[1], good[2]], [30, 10], "svd")
    np.testing.assert_allclose(merged[1] @ merged[0], expected[B] @ expected[A], atol=1e-5)
    assert metrics["train-loss"] == pytest.approx(0.75 * 1.0 + 0.25 * 3.0)


def test_fedit_mode_matches_flowers_fedavg_on_valid_replies(flower_identity):
    # Prepare
    rng = np.random.default_rng(2)
    states = [_adapter(rng) for _ in range(3)]
    make = lambda: [_reply(n + 1, s, {"num-examples": 10 * (n + 1)}) for n, s in enumerate(states)]  # noqa: E731

    # Execute
    ours, _ = LoraFedAvg(template=states[0]).aggregate_train(1, make())
    flower, _ = FedAvg().aggregate_train(1, make())

    # Assert
    for x, y in zip(ours.to_numpy_ndarrays(), flower.to_numpy_ndarrays(), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6)


def test_stack_mode_accumulates_exact_increments_over_rounds(flower_identity):
    # Prepare
    rng = np.random.default_rng(3)
    rounds = [[_adapter(rng) for _ in range(2)] for _ in range(2)]
    strategy = LoraFedAvg(template=rounds[0][0], exact="stack")

    # Execute
    for r, states in enumerate(rounds, start=1):
        arrays, _ = strategy.aggregate_train(r, [_reply(1, states[0], {"num-examples": 1}),
                                                 _reply(2, states[1], {"num-examples": 3})])

    # Assert: rank 2 + 2 per round; the global update is the sum of each round's weighted mean
    a, b = arrays[A].numpy(), arrays[B].numpy()
    assert a.shape == (8, 5) and b.shape == (6, 8)
    target = _mean_delta(rounds[0], [1, 3]) + _mean_delta(rounds[1], [1, 3])
    np.testing.assert_allclose(b @ a, target, atol=1e-5)
    np.testing.assert_allclose(arrays[HEAD].numpy(), 0.25 * rounds[1][0][HEAD] + 0.75 * rounds[1][1][HEAD],
                               atol=1e-6)


def test_round_without_valid_replies_returns_nothing(flower_identity):
    # Prepare
    rng = np.random.default_rng(4)
    strategy = LoraFedAvg(template=_adapter(rng))
    missing_weight = _reply(1, _adapter(rng), {"loss": 1.0})

    # Execute
    result = strategy.aggregate_train(2, [missing_weight, _reply(2, error="timeout")])

    # Assert
    assert result == (None, None)
    assert "'num-examples' missing" in strategy.rounds[2].excluded[0]["reason"]
    assert strategy.rounds[2].to_json()["bytes_received"].keys() == {"1"}
