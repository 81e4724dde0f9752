"""FedAvg of the proxy-classifier head: weighted mean, validated replies."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedcurate.strategies.head_fedavg import HeadFedAvg, average_head


def test_average_head_is_the_example_weighted_mean():
    # Prepare
    heads = [{"weight": np.full((2, 3), 1.0, np.float32), "bias": np.zeros(2, np.float32)},
             {"weight": np.full((2, 3), 5.0, np.float32), "bias": np.ones(2, np.float32)}]

    # Execute
    mean = average_head(heads, [3, 1])

    # Assert
    np.testing.assert_allclose(mean["weight"], np.full((2, 3), 2.0))
    np.testing.assert_allclose(mean["bias"], np.full(2, 0.25))
    assert mean["weight"].dtype == np.float32


def test_head_strategy_drops_a_reply_with_the_wrong_head_shape():
    # Prepare: replies from nodes 1 (valid) and 2 (a head for 4 classes instead of 2)
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.task_id = 1, 1
    replies = []
    for node, rows in [(1, 2), (2, 4)]:
        TaskIdentity.node_id = 0
        instruction = Message(RecordDict(), dst_node_id=node, message_type="train")
        TaskIdentity.node_id = node
        arrays = ArrayRecord({"weight": Array(np.full((rows, 3), float(node), np.float32))})
        replies.append(Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 5})}),
                               reply_to=instruction))
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
    strategy = HeadFedAvg(template={"weight": np.zeros((2, 3), np.float32)})

    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)

    # Assert
    np.testing.assert_allclose(arrays["weight"].numpy(), np.ones((2, 3)))
    assert strategy.rounds[1].excluded[0]["node_id"] == 2
    assert "shape (4, 3), expected (2, 3)" in strategy.rounds[1].excluded[0]["reason"]
    with pytest.raises(ValueError, match="weights"):
        average_head([{"w": np.ones(1)}], [0])
