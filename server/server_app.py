"""Flower ServerApp: waits for the sites, runs each phase as one message round, writes its summary.

`flwr run` uses the module-level `app`; its config comes from the run config: `config-file` (a TOML file
readable by the ServerApp) and/or flat `section.key` overrides, plus `run-dir`. `fedcurate simulate`
builds its own app with `make_server_app(cfg, run_dir, ...)` (run_simulation passes no run config).

Every instruction carries a ConfigRecord "config": the flat config, "run-dir" and, in simulation, where
each partition's data lies ("data-template" or "data-paths"). A phase whose DONE marker exists under
`<run-dir>/server/<phase>/` is skipped, so a re-run resumes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedcurate.common.config import Config, FederationConfig, from_flat, load_config, to_flat
from fedcurate.server import phases

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


def run(grid: Grid, cfg: Config, run_dir: Path, transport: dict[str, Any]) -> None:
    """Run every phase that is not done yet."""
    if phases.phase_done(run_dir, "prepare"):
        logger.info("[ROUND prepare] already done (%s), skipping", phases.phase_dir(run_dir, "prepare"))
        return
    nodes = wait_for_nodes(grid, cfg.federation)
    record = {**to_flat(cfg), "run-dir": str(Path(run_dir).resolve()), **transport}
    run_prepare(grid, cfg, run_dir, nodes, record)


def wait_for_nodes(grid: Grid, fed: FederationConfig, poll_s: float = 1.0) -> list[int]:
    """Poll until `fed.sites` nodes are connected; after `round_timeout_s` settle for `min_sites`."""
    deadline, seen = time.monotonic() + fed.round_timeout_s, set()
    while True:
        nodes = sorted(grid.get_node_ids())
        for node in sorted(set(nodes) - seen):
            logger.info("node %d connected (%d/%d)", node, len(nodes), fed.sites)
        seen.update(nodes)
        if len(nodes) >= fed.sites or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    if len(nodes) < fed.min_sites:
        raise RuntimeError(f"only {len(nodes)} of {fed.sites} sites connected within "
                           f"{fed.round_timeout_s:.0f} s (federation.round-timeout-s); "
                           f"federation.min-sites = {fed.min_sites}")
    if len(nodes) < fed.sites:
        logger.warning("proceeding with %d of %d sites (federation.min-sites = %d): nodes %s",
                       len(nodes), fed.sites, fed.min_sites, nodes)
    return nodes


def query_round(grid: Grid, phase: str, nodes: list[int], record: dict[str, Any],
                timeout: float) -> tuple[list[Message], list[dict[str, Any]], dict[str, int]]:
    """Send `query.<phase>` to `nodes`; return (ok replies, excluded nodes with reasons, bytes)."""
    msgs = [Message(RecordDict({"config": ConfigRecord(dict(record))}), dst_node_id=node,
                    message_type=f"{MessageType.QUERY}.{phase}", group_id=phase) for node in nodes]
    bytes_sent = sum(_content_bytes(m.content) for m in msgs)  # before sending: the grid consumes them
    replies = list(grid.send_and_receive(msgs, timeout=timeout))
    ok = [r for r in replies if not r.has_error()]
    excluded = [{"node_id": r.metadata.src_node_id, "reason": r.error.reason}
                for r in replies if r.has_error()]
    answered = {r.metadata.src_node_id for r in replies}
    excluded += [{"node_id": n, "reason": f"no reply within {timeout:.0f} s"} for n in nodes if n not in answered]
    for item in excluded:
        logger.error("[ROUND %s] node %d excluded: %s", phase, item["node_id"], item["reason"])
    traffic = {"bytes_sent": bytes_sent,
               "bytes_received": sum(_content_bytes(r.content) for r in ok)}
    logger.info("[ROUND %s] %d/%d sites replied (sent %d B, received %d B)", phase, len(ok), len(nodes),
                traffic["bytes_sent"], traffic["bytes_received"])
    return ok, excluded, traffic


def run_prepare(grid: Grid, cfg: Config, run_dir: Path, nodes: list[int], record: dict[str, Any]) -> None:
    start = time.monotonic()
    ok, excluded, traffic = query_round(grid, "prepare", nodes, record, cfg.federation.round_timeout_s)
    if len(ok) < cfg.federation.min_sites:
        reasons = "; ".join(f"node {e['node_id']}: {e['reason']}" for e in excluded)
        raise RuntimeError(f"[ROUND prepare] {len(ok)} site(s) replied OK, federation.min-sites = "
                           f"{cfg.federation.min_sites}. {reasons}")
    site_replies = [_prepare_reply(r) for r in ok]
    summary = phases.summarize_prepare(site_replies)
    summary["node_ids"] = {r["site"]: r["node_id"] for r in site_replies}
    summary["excluded"] = excluded
    summary["communication"] = traffic
    summary["seconds"] = round(time.monotonic() - start, 3)
    path = phases.write_phase_done(run_dir, "prepare", summary)
    logger.info("[ROUND prepare] %d samples, %d rejects over %d sites -> %s", summary["num_samples"],
                summary["num_rejects"], summary["num_sites"], path)


def _prepare_reply(reply: Message) -> dict[str, Any]:
    info, metrics = reply.content["info"], reply.content["metrics"]
    kinds, counts = info.get("reject-kinds", []), info.get("reject-counts", [])
    return {"site": str(info["site"]), "node_id": reply.metadata.src_node_id,
            "num_samples": int(metrics["num-samples"]), "num_rejects": int(metrics["num-rejects"]),
            "rejects_by_reason": {str(k): int(c) for k, c in zip(kinds, counts, strict=True)}}


def _content_bytes(content: RecordDict) -> int:
    """Payload bytes of a message's records: serialised size of config/metric records, tensor bytes of
    array records. (Flower 1.41's ConfigRecord.count_bytes fails on "" and [], hence deflate.)"""
    return sum(record.count_bytes() if isinstance(record, ArrayRecord) else len(record.deflate())
               for record in content.values())
