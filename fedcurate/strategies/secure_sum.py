"""Secure aggregation of the sites' counts with Flower's SecAgg+ (`privacy.secure-aggregation = true`).

    summed = secure_sum(grid, nodes, instruction, keys=["counts", "num-above"], timeout=600, threshold=0.67)
    summed.sums["counts"]      # the sum over sites; no site's own vector ever reaches the server

Flower implements SecAgg+ only in its legacy workflow (`SecAggPlusWorkflow` on the server, `secaggplus_mod`
on the client, replies in the legacy FitRes layout), so one secure round here is one legacy "fit" round:
the instruction (the flat config, the step and the payload, as one JSON string) travels in the FitIns
config; each site runs the step (`client/handlers.py`, `client/steps/`), keeps all of its reply but the fields `keys`, and
returns those as float vectors that the mod quantises, masks with pairwise and private masks, and sends.
The server unmasks only the sum.

Exact integer sums: every site reports weight 1 (`max_weight` 1), and the clipping range C and quantisation
range Q = 2C make the quantiser the identity on integers (x -> x + C, no rounding), so the aggregate, times
the number of contributing sites, is the exact sum. C is the largest power of two with 2 C n < 2**31 for n
sites (2**28 for 3 sites): no count at one site may exceed it in absolute value (the site refuses, with
that reason). Sites are told apart only by the "site" metric each sends in the clear, with no numbers.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Parameters,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.server_config import ServerConfig
from flwr.server.strategy import Strategy
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import SecAggPlusWorkflow
from flwr.serverapp import Grid

from fedcurate.common.protocol.payload import SecureSum

logger = logging.getLogger(__name__)

INSTRUCTION_KEY = "fedcurate"  # the FitIns config entry holding the JSON instruction
MODULUS = 2 ** 32


def clipping_range(num_sites: int) -> int:
    """The largest power of two C with 2 C n < 2**31: n masked vectors of values in [0, 2C] never wrap."""
    return 2 ** min(28, 30 - math.ceil(math.log2(max(num_sites, 2))))


def check_range(vectors: Sequence[np.ndarray], limit: int) -> None:
    """A site refuses to contribute a value the quantiser would clip (the sum would silently be wrong)."""
    for vec in vectors:
        if vec.size and float(np.max(np.abs(vec))) > limit:
            raise ValueError(f"secure sum: a value {float(np.max(np.abs(vec))):.0f} exceeds the clipping range "
                             f"{limit} of SecAgg+ with this many sites")


class _SumStrategy(Strategy):
    """The legacy strategy SecAgg+ drives: sends the instruction, keeps the unmasked aggregate."""

    def __init__(self, proxies: list[ClientProxy], instruction: str, site_of: dict[int, str] | None = None,
                 bound: bool = False) -> None:
        self.proxies, self.instruction = proxies, instruction
        self.site_of, self.bound = site_of if site_of is not None else {}, bound
        self.aggregate: list[np.ndarray] | None = None
        self.sites: list[str] = []
        self.failures: list[str] = []

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager
                      ) -> list[tuple[ClientProxy, FitIns]]:
        return [(proxy, FitIns(ndarrays_to_parameters([]), {INSTRUCTION_KEY: self.instruction}))
                for proxy in self.proxies]

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[Any]) -> tuple[Parameters | None, dict[str, Any]]:
        # Every FitRes carries the same unmasked aggregate (the weighted mean); its metrics only the site name.
        self.sites = sorted(self._site(proxy, res) for proxy, res in results)
        self.failures = [str(f) for f in failures]
        if results:
            mean = parameters_to_ndarrays(results[0][1].parameters)
            self.aggregate = [np.asarray(a, dtype=np.float64) * len(results) for a in mean]
        return None, {}

    def _site(self, proxy: ClientProxy, res: FitRes) -> str:
        """The registered name of the node (bound); else the name it gave, learnt for later rounds."""
        node, claimed = int(proxy.node_id), str(res.metrics.get("site", proxy.cid))
        if self.bound:
            if claimed != self.site_of[node]:
                logger.error("secure round: node %d names itself %r but its registered key is %r (rule "
                             "identity.registered-key): named %r", node, claimed, self.site_of[node],
                             self.site_of[node])
            return self.site_of[node]
        return self.site_of.setdefault(node, claimed)

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager
                           ) -> list[Any]:
        return []

    def aggregate_evaluate(self, server_round: int, results: list[Any], failures: list[Any]
                           ) -> tuple[float | None, dict[str, Any]]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Any]] | None:
        return None


class _CountingGrid:
    """The grid, counting the bytes of every message to and from each node (and handing replies to `seen`)."""

    def __init__(self, grid: Grid, seen: Any = None) -> None:
        self._grid, self._seen = grid, seen
        self.sent: dict[int, int] = {}
        self.received: dict[int, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        from fedcurate.strategies.messages import content_bytes

        messages = list(messages)
        for msg in messages:
            self.sent[msg.metadata.dst_node_id] = self.sent.get(msg.metadata.dst_node_id, 0) + \
                content_bytes(msg.content)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            if reply.has_content():
                node = reply.metadata.src_node_id
                self.received[node] = self.received.get(node, 0) + content_bytes(reply.content)
                if self._seen is not None:
                    self._seen(node, reply.content)
        return replies


def secure_sum(grid: Grid, nodes: Sequence[int], instruction: dict[str, Any], keys: Sequence[str], *,
               timeout: float, threshold: float, site_of: dict[int, str], seen: Any = None,
               bound: bool = False) -> SecureSum:
    """One SecAgg+ round over `nodes`: each runs the instruction's step and contributes its fields `keys`."""
    if len(nodes) < 2:
        raise ValueError(f"secure aggregation needs at least 2 sites, {len(nodes)} connected")
    limit = clipping_range(len(nodes))
    text = json.dumps({**instruction, "keys": list(keys), "clip": limit})
    counting = _CountingGrid(grid, seen)
    proxies: list[ClientProxy] = [GridClientProxy(node, counting, grid.run.run_id) for node in nodes]  # type: ignore
    strategy = _SumStrategy(proxies, text, site_of, bound)
    base = Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={})
    manager = SimpleClientManager()
    for proxy in proxies:
        manager.register(proxy)
    ctx = LegacyContext(base, config=ServerConfig(num_rounds=1), strategy=strategy, client_manager=manager)
    ctx.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: 1})
    ctx.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
    workflow = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=threshold, max_weight=1.0,
                                  clipping_range=float(limit), quantization_range=2 * limit,
                                  modulus_range=MODULUS, timeout=timeout)
    workflow(counting, ctx)  # type: ignore[arg-type]
    traffic = {site_of.get(n, f"node-{n}"): {"sent": counting.sent.get(n, 0), "received": counting.received.get(n, 0)}
               for n in nodes}
    if strategy.aggregate is None:
        raise RuntimeError(f"secure aggregation of {instruction.get('step')!r} halted (too few sites answered "
                           f"every SecAgg+ stage within {timeout:.0f} s, or a site refused: "
                           f"{'; '.join(strategy.failures) or 'see the SuperNode logs'})")
    if len(strategy.aggregate) != len(keys):
        raise RuntimeError(f"secure aggregation of {instruction.get('step')!r}: {len(strategy.aggregate)} "
                           f"vectors for the {len(keys)} fields {list(keys)}")
    sums = {k: np.rint(v).astype(np.int64) for k, v in zip(keys, strategy.aggregate, strict=True)}
    lost = [{"site": site_of.get(n, f"node-{n}"), "node_id": n, "reason": "dropped out of the SecAgg+ round"}
            for n in nodes if site_of.get(n) not in strategy.sites]
    return SecureSum(sums, strategy.sites, lost, traffic)


def site_contribution(msg: Message, run: Any) -> Message:
    """Client side of one secure round (under `secaggplus_mod`): run the step, reply with the fields only.

    `run(instruction) -> (site, reply Payload)` runs the step at this site. The reply carries the fields
    `keys` as float vectors (which the mod masks) and the site's name as its only metric."""
    from flwr.compat.common.recorddict_compat import fitres_to_recorddict, recorddict_to_fitins

    from fedcurate.common.protocol.payload import summable

    ins = recorddict_to_fitins(msg.content, keep_input=True)
    instruction = json.loads(str(ins.config[INSTRUCTION_KEY]))
    site, reply = run(instruction)
    vectors = summable(reply, instruction["keys"])
    check_range(vectors, int(instruction["clip"]))
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(vectors), num_examples=1, metrics={"site": site})
    return Message(fitres_to_recorddict(res, keep_input=False), reply_to=msg)
