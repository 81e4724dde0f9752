"""Flower ServerApp: waits for the sites, runs each phase as one message round, writes its summary.

`flwr run` uses the module-level `app`; its config comes from the run config: `config-file` (a TOML file
readable by the ServerApp) and/or flat `section.key` overrides, plus `run-dir`. `fedcurate simulate`
builds its own app with `make_server_app(cfg, run_dir, ...)` (run_simulation passes no run config).

The phases themselves are Flower-free (`server/orchestrator.py`); this module only turns their payloads
into messages and back (`FlowerTransport`). Every instruction carries a ConfigRecord "config": the flat
config, "run-dir", the step and, in simulation, where each partition's data lies ("data-template" or
"data-paths"). A phase whose DONE marker exists under `<run-dir>/server/<phase>/` is skipped, so a
re-run resumes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, MessageType
from flwr.serverapp import Grid, ServerApp

from fedcurate.common import io
from fedcurate.common.config import Config, FederationConfig, from_flat, load_config, to_flat
from fedcurate.common.protocol import layout
from fedcurate.common.protocol.payload import PAYLOAD_TAPS, Payload, RoundResult, SecureSum, tap
from fedcurate.server.identity import RULE, load_registry
from fedcurate.server.orchestrator import run_phases
from fedcurate.strategies.messages import content_bytes, encode_array, pack, unpack, wire_bytes

logger = logging.getLogger(__name__)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg, run_dir = config_from_run_config(dict(context.run_config))
    run(grid, cfg, run_dir, transport={})


def make_server_app(cfg: Config, run_dir: Path, data_template: str | None = None,
                    data_paths: list[str] | None = None) -> ServerApp:
    """A ServerApp running `cfg` into `run_dir`; simulated sites find their data through
    `data_template` (formatted with `partition_id`) or `data_paths[partition_id]`."""
    transport: dict[str, Any] = {}
    if data_template is not None:
        transport["data-template"] = data_template
    if data_paths is not None:
        transport["data-paths"] = [str(p) for p in data_paths]
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        run(grid, cfg, Path(run_dir), transport)

    return server_app


def config_from_run_config(run_config: dict[str, Any]) -> tuple[Config, Path]:
    """(config, run dir) from Flower's run config: `config-file`, flat overrides, `run-dir`."""
    path = str(run_config.get("config-file", ""))
    flat = to_flat(load_config(path)) if path else {}
    flat.update({k: v for k, v in run_config.items() if k not in ("config-file", "run-dir")})
    cfg = from_flat(flat, source=path or "<run-config>")
    return cfg, Path(str(run_config.get("run-dir") or cfg.run.dir))


def run(grid: Grid, cfg: Config, run_dir: Path, transport: dict[str, Any],
        registry: dict[int, str] | None = None) -> None:
    """Run every phase that is not done yet (see `server/orchestrator.py`). With a `registry`
    ({node id: site}, from the keys the coordinator registered: `server/identity.py`), only registered nodes
    take part and each is named by its entry; without one (simulation, `--insecure`) sites name themselves."""
    if registry is None:
        registry = load_registry()
    if registry is None:
        logger.warning("no site registry: sites are named by their own replies (simulation or --insecure; "
                       "a deployment started with `fedcurate superlink` binds names to registered keys)")
    nodes = wait_for_nodes(grid, cfg.federation, registry)
    io.write_json(layout.stats_path(run_dir, "identity"), {
        "rule": RULE if registry is not None else "none (sites name themselves)",
        "sites": {str(n): registry[n] for n in nodes} if registry is not None else {},
        "left-out": [str(n) for n in sorted(grid.get_node_ids()) if registry is not None and n not in registry]})
    record = {**to_flat(cfg), "run-dir": str(Path(run_dir).resolve()), **transport}
    run_phases(cfg, Path(run_dir), FlowerTransport(grid, nodes, record, cfg.federation.round_timeout_s,
                                                   cfg.privacy.secagg_threshold, registry))


class FlowerTransport:
    """The orchestrator's rounds as Flower messages: `query.<phase>` to every node, replies by site name.

    Content of an instruction: "config" (flat config, run dir, where simulated data lies, and the "step"),
    "values" (the payload's values as one JSON string) and "arrays" (the payload's arrays). A reply has
    the same layout. With a registry, a node's site is its registered key's name and a reply naming
    another site is excluded (rule identity.registered-key); without one (simulation), sites are named by
    the "site" value of their replies.
    """

    def __init__(self, grid: Grid, nodes: list[int], record: dict[str, Any], timeout: float,
                 secagg_threshold: float = 0.67, registry: dict[int, str] | None = None) -> None:
        self.grid, self.nodes, self.record, self.timeout = grid, list(nodes), dict(record), timeout
        self.secagg_threshold = secagg_threshold
        self.bound = registry is not None
        self.site_of: dict[int, str] = dict(registry or {})
        self.banned: set[int] = set()

    def round(self, phase: str, step: str, payload: Payload) -> RoundResult:
        msgs = [Message(pack(payload, {**self.record, "step": step}), dst_node_id=node,
                        message_type=f"{MessageType.QUERY}.{phase}", group_id=step) for node in self.nodes]
        first = msgs[0].content if msgs else pack(payload, {})  # measured before sending: the grid consumes them
        size, wire = content_bytes(first), (wire_bytes(first) if PAYLOAD_TAPS else b"")
        replies = list(self.grid.send_and_receive(msgs, timeout=self.timeout))
        # the grid stamps each message's id when it pushes it; an error reply made by the SuperLink (e.g. "Node
        # Unavailable" for a SuperNode that stopped sending heartbeats) comes from the SuperLink's own node id,
        # so it is traced back to its node through the message it replies to
        sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in msgs if m.metadata.message_id}
        result = RoundResult(replies={})
        answered, gone = set(), set()
        for reply in replies:
            node = reply.metadata.src_node_id
            if node not in self.nodes:  # made by the SuperLink on the node's behalf: the node is gone
                node = sent_to.get(reply.metadata.reply_to_message_id, node)
                name = self.site_of.get(node, f"node-{node}")
                why = (reply.error.reason if reply.has_error() else "a reply the node did not send")
                result.excluded.append({"site": name, "node_id": node, "reason": f"{why}; dropped from later rounds"})
                logger.error("[ROUND %s] %s (node %d) is gone: %s", step, name, node, why)
                gone.add(node)
                continue
            answered.add(node)
            name = self.site_of.get(node, f"node-{node}")
            if reply.has_error():
                result.excluded.append({"site": name, "node_id": node, "reason": reply.error.reason})
                logger.error("[ROUND %s] %s (node %d) failed: %s", step, name, node, reply.error.reason)
                continue
            try:
                got = unpack(reply.content)
                claimed = str(got.values["site"])
            except (KeyError, ValueError, TypeError) as err:
                result.excluded.append({"site": name, "node_id": node, "reason": f"unreadable reply: {err}"})
                continue
            if self.bound and claimed != name:
                why = (f"the reply names site {claimed!r} but node {node}'s registered key is {name!r} "
                       f"(rule {RULE}: a site's name comes from its key); dropped from the run")
                result.excluded.append({"site": name, "node_id": node, "reason": why})
                logger.error("[ROUND %s] %s", step, why)
                self.banned.add(node)  # never again in a round, plain or secure (its sums would count)
                continue
            name = claimed
            if name in result.replies:
                raise RuntimeError(f"two SuperNodes report the same site name {name!r}: give each a "
                                   f"distinct --node-config site=...")
            self.site_of[node] = name
            tap("sent", name, step, payload, wire)
            tap("received", name, step, got, wire_bytes(reply.content) if PAYLOAD_TAPS else b"")
            result.replies[name] = got
            result.traffic[name] = {"sent": size, "received": content_bytes(reply.content)}
        lost = [node for node in self.nodes if node not in answered and node not in gone]
        for node in lost:  # crashed, cut off or too slow: dropped for the rest of the run
            name = self.site_of.get(node, f"node-{node}")
            result.excluded.append({"site": name, "node_id": node,
                                    "reason": f"no reply within {self.timeout:.0f} s; dropped from later rounds"})
            logger.error("[ROUND %s] %s (node %d) did not reply within %.0f s: dropped from the run", step, name,
                         node, self.timeout)
        self.nodes = [node for node in self.nodes if node in answered and node not in self.banned]
        return result

    def secure_sum(self, phase: str, step: str, payload: Payload, keys: Sequence[str]) -> SecureSum:
        """One SecAgg+ round (`strategies/secure_sum.py`): the sites' fields `keys`, summed; nothing else comes back."""
        from fedcurate.strategies.secure_sum import secure_sum

        instruction = {"record": {**self.record, "step": step}, "phase": phase,
                       "payload": {"values": payload.values,
                                   "arrays": {k: encode_array(v) for k, v in payload.arrays.items()}}}

        def seen(node: int, content: Any) -> None:  # what crossed the wire, for the privacy tests
            if PAYLOAD_TAPS:
                tap("received", self.site_of.get(node, f"node-{node}"), step, Payload(), wire_bytes(content))

        result = secure_sum(self.grid, self.nodes, instruction, keys, timeout=self.timeout,
                            threshold=self.secagg_threshold, site_of=self.site_of, seen=seen, bound=self.bound)
        lost = {e["node_id"] for e in result.excluded}
        self.nodes = [node for node in self.nodes if node not in lost]
        return result


def wait_for_nodes(grid: Grid, fed: FederationConfig, registry: dict[int, str] | None = None,
                   poll_s: float = 1.0) -> list[int]:
    """Poll until `fed.sites` nodes are connected; after `connect_timeout_s` settle for `min_sites`.
    With a registry, only registered nodes count; any other node is logged once and left out."""
    deadline, seen = time.monotonic() + fed.connect_timeout_s, set()
    while True:
        online = sorted(grid.get_node_ids())
        nodes = [n for n in online if registry is None or n in registry]
        for node in sorted(set(online) - seen):
            if registry is not None and node not in registry:
                logger.error("node %d is connected but its key is not registered to any site: not part of the "
                             "run (rule %s)", node, RULE)
            else:
                logger.info("node %d connected%s (%d/%d)", node,
                            f" as site {registry[node]!r}" if registry else "", len(nodes), fed.sites)
        seen.update(online)
        if len(nodes) >= fed.sites or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    if len(nodes) < fed.min_sites:
        raise RuntimeError(f"only {len(nodes)} of {fed.sites} sites connected within "
                           f"{fed.connect_timeout_s:.0f} s (federation.connect-timeout-s); "
                           f"federation.min-sites = {fed.min_sites}")
    if len(nodes) < fed.sites:
        logger.warning("proceeding with %d of %d sites (federation.min-sites = %d): nodes %s",
                       len(nodes), fed.sites, fed.min_sites, nodes)
    return nodes
