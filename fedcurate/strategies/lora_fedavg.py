"""LoRA FedAvg: Flower's FedAvg, weighted by examples, with every reply validated before averaging and an
exact LoRA aggregation option. Only `aggregate_train` is overridden; the maths is in `aggregate_lora`.

    strategy = LoraFedAvg(template=get_peft_model_state_dict(model), exact="svd",
                          weighted_by_key="num-examples", min_available_nodes=4)
    result = strategy.start(grid, ArrayRecord(template), num_rounds=3)
    strategy.rounds[1].excluded        # [{"node_id": 7, "reason": "'...lora_B.weight': 3 non-finite ..."}]
    strategy.rounds[1].bytes_received  # {node id: ArrayRecord bytes}

Replies follow FedAvg's contract (one ArrayRecord, one MetricRecord holding the weight key). A reply is
excluded, with its reasons logged and kept in `rounds[r].excluded`, when it is an error reply, breaks the
contract, has a weight that is not a finite number > 0, a non-finite metric, or arrays whose keys, shapes
or dtypes differ from `template` or hold NaN/inf (`validation.validate_arrays`). Only the rest is averaged.

`exact` (dW_k = s * B_k @ A_k is site k's update of a module; p_k = n_k / sum n):

* None (FedIT, the default): A and B are averaged separately; mean(B) @ mean(A) != sum p_k B_k A_k.
* "svd": the products are averaged and re-factored to the template's rank r by truncated SVD,
  B' = U_r sqrt(S_r), A' = sqrt(S_r) V_r^T (`merging.factor_product`; A rows are kept at least as long
  as the sites' mean A row so that near-zero directions stay trainable). B' @ A' is the best rank-r
  approximation of the mean dW (Eckart-Young), exact when the ranks allow (sum of site ranks <= r, or
  rank(mean dW) <= r); with K sites of rank r it generally truncates. Shapes stay fixed.
* "stack" (exact; FLoRA-style, Wang et al. 2024): A rows and p_k-scaled B columns are concatenated, so
  B' @ A' = sum_k p_k B_k @ A_k with rank sum r_k. Training on a growing adapter would grow the rank
  geometrically, so the client contract changes (the train config must tell the client): in every round
  (the first one receives the template, B = 0, a no-op) the client adds s * B @ A of the global arrays
  (rank R) to its frozen base weights (s = its lora_alpha / r; do not load the factors into a
  LoraConfig of rank R, whose alpha / R scaling would differ), trains a fresh rank-r adapter (A random,
  B zero) and replies with it, i.e. with this round's increment. The strategy keeps the cumulative stack:
  global_t+1 = global_t (+) stack(p_k * increment_k), whose rank grows by sum r_k per round (payload too).
  The global model at any round is base + s * B @ A of the returned arrays. Non-LoRA keys are plain means.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedcurate.strategies.merging import lora_pairs, merge_adapters, stack_adapters, weighted_mean
from fedcurate.strategies.validation import expected_spec, validate_arrays

logger = logging.getLogger(__name__)

EXACT = (None, "svd", "stack")


@dataclass
class RoundStats:
    """What one training round received: accepted weights, exclusions with reasons, bytes per reply."""

    accepted: dict[int, float] = field(default_factory=dict)  # node id -> weight
    excluded: list[dict[str, Any]] = field(default_factory=list)  # {"node_id", "reason"}
    bytes_received: dict[int, int] = field(default_factory=dict)  # node id -> ArrayRecord bytes

    def to_json(self) -> dict[str, Any]:
        return {"accepted": {str(k): v for k, v in self.accepted.items()}, "excluded": list(self.excluded),
                "bytes_received": {str(k): v for k, v in self.bytes_received.items()}}


def aggregate_lora(states: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float],
                   exact: str | None = None, *, rank: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Weighted (weights rescaled to sum 1) aggregation of LoRA states; `exact` as in the module docstring.
    For "stack" this is one round's stack; `LoraFedAvg` appends it to the cumulative one."""
    if exact not in EXACT:
        raise ValueError(f"exact must be one of {EXACT}, got {exact!r}")
    method = {None: "linear", "svd": "svd", "stack": "stack"}[exact]
    return merge_adapters(states, weights, method, rank=rank, seed=seed)


def screen_reply(msg: Message, expected: Mapping[str, tuple[tuple[int, ...], Any]], weighted_by_key: str,
                 max_weight: float | None = None) -> tuple[dict[str, np.ndarray], float, list[str]]:
    """(arrays, weight, problems) of one train reply; `problems` empty means it may be averaged.
    A weight above `max_weight` (e.g. more examples than any site holds) is a problem too."""
    if msg.has_error():
        return {}, 0.0, [f"error reply (code {msg.error.code}): {msg.error.reason}"]
    content = msg.content
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        return {}, 0.0, [f"expected one ArrayRecord and one MetricRecord, got {len(content.array_records)} "
                         f"and {len(content.metric_records)}"]
    metrics = next(iter(content.metric_records.values()))
    weight, problems = _weight(metrics, weighted_by_key)
    if max_weight is not None and weight > max_weight:
        problems.append(f"weight {weighted_by_key!r} = {weight} is above the bound {max_weight}")
    problems += [f"metric {k!r} is not finite" for k, v in metrics.items()
                 if not np.all(np.isfinite(np.asarray(v, dtype=np.float64)))]
    try:
        arrays = {k: a.numpy() for k, a in next(iter(content.array_records.values())).items()}
    except Exception as exc:  # a corrupt payload is a reason to exclude, not to crash the round
        return {}, weight, problems + [f"arrays could not be decoded: {exc}"]
    return arrays, weight, problems + validate_arrays(arrays, expected)


def _weight(metrics: MetricRecord, key: str) -> tuple[float, list[str]]:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0, [f"metric {key!r} missing or not a number: {value!r}"]
    if not math.isfinite(value) or value <= 0:
        return 0.0, [f"weight {key!r} = {value} (must be a finite number > 0)"]
    return float(value), []


def _common_metric_records(contents: list[RecordDict]) -> list[RecordDict]:
    """The replies' MetricRecords restricted to the keys all of them have (FedAvg's default metric
    aggregation would otherwise sum a key over only the sites that sent it)."""
    records = [next(iter(c.metric_records.values())) for c in contents]
    common = set.intersection(*(set(r.keys()) for r in records))
    dropped = sorted(set().union(*(set(r.keys()) for r in records)) - common)
    if dropped:
        logger.warning("metrics not sent by every site are left out of the aggregate: %s", dropped)
    return [RecordDict({"metrics": MetricRecord({k: r[k] for k in r.keys() if k in common})})
            for r in records]


class ValidatedFedAvg(FedAvg):
    """FedAvg that validates each reply against `template` (key -> array of the expected shape and dtype)
    and averages only the valid ones; `rounds[r]` records what round r accepted, excluded and received.
    `max_weight` bounds a credible weight (e.g. the largest site's sample count), so that one site cannot
    dominate the average by over-reporting. Subclasses change the averaging through `aggregate_arrays`.
    Other arguments are FedAvg's."""

    def __init__(self, template: Mapping[str, Any] | ArrayRecord, *, max_weight: float | None = None,
                 **fedavg_kwargs: Any) -> None:
        super().__init__(**fedavg_kwargs)
        self.max_weight = max_weight
        self.expected = expected_spec(template)
        self.keys = list(template.keys())
        self.rounds: dict[int, RoundStats] = {}

    def aggregate_arrays(self, states: list[dict[str, np.ndarray]], weights: list[float]) -> dict[str, np.ndarray]:
        """Plain weighted mean, in the template's dtypes."""
        mean = weighted_mean(states, weights)
        return {k: v.numpy().astype(self.expected[k][1]) for k, v in mean.items()}

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate every reply, exclude the bad ones (logged, recorded), average the rest."""
        stats, states, weights, contents = RoundStats(), [], [], []
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            if msg.has_content():
                stats.bytes_received[node] = sum(r.count_bytes() for r in msg.content.array_records.values())
            arrays, weight, problems = screen_reply(msg, self.expected, self.weighted_by_key, self.max_weight)
            if problems:
                stats.excluded.append({"node_id": node, "reason": "; ".join(problems)})
                logger.error("[ROUND %d] reply of node %d excluded: %s", server_round, node, "; ".join(problems))
                continue
            stats.accepted[node] = weight
            states.append(arrays)
            weights.append(weight)
            contents.append(msg.content)
        self.rounds[server_round] = stats
        logger.info("[ROUND %d] aggregate_train: %d replies accepted, %d excluded, %d bytes received",
                    server_round, len(states), len(stats.excluded), sum(stats.bytes_received.values()))
        if not states:
            return None, None
        merged = self.aggregate_arrays(states, weights)
        arrays = ArrayRecord({k: Array(np.ascontiguousarray(merged[k])) for k in self.keys})
        metrics = self.train_metrics_aggr_fn(_common_metric_records(contents), self.weighted_by_key)
        return arrays, metrics


class LoraFedAvg(ValidatedFedAvg):
    """FedAvg of LoRA adapters weighted by `weighted_by_key`, with `exact` in (None, "svd", "stack") as in
    the module docstring; `rank` (svd) defaults to the template's LoRA rank; `seed` seeds the spare
    directions of a rank-deficient SVD re-factorisation."""

    def __init__(self, template: Mapping[str, Any] | ArrayRecord, *, exact: str | None = None,
                 rank: int | None = None, seed: int = 0, max_weight: float | None = None,
                 **fedavg_kwargs: Any) -> None:
        if exact not in EXACT:
            raise ValueError(f"exact must be one of {EXACT}, got {exact!r}")
        super().__init__(template, max_weight=max_weight, **fedavg_kwargs)
        pairs, _ = lora_pairs(self.keys)
        if not pairs:
            logger.warning("LoraFedAvg: the template has no lora_A/lora_B pairs; every key is averaged plainly")
        self.exact, self.seed = exact, seed
        self.rank = rank or max((self.expected[a][0][0] for a, _ in pairs), default=None)
        self.stacked: dict[str, np.ndarray] | None = None  # cumulative global adapter in "stack" mode

    def aggregate_arrays(self, states: list[dict[str, np.ndarray]], weights: list[float]) -> dict[str, np.ndarray]:
        merged = aggregate_lora(states, weights, self.exact, rank=self.rank, seed=self.seed)
        if self.exact == "stack":
            merged = merged if self.stacked is None else stack_adapters([self.stacked, merged], [1.0, 1.0])
            self.stacked = merged
        return merged
