"""Flower ClientApp: one handler per phase; each unpacks the message, calls `client/site.py`, packs the reply.

Every instruction carries a ConfigRecord "config": the flat experiment config (`to_flat`), "run-dir" and,
in simulation, "data-template" (formatted with `partition_id`) or "data-paths" (indexed by partition id).
The typed config is rebuilt from it, so nothing depends on `context.run_config`.

Node config (deployment: `flower-supernode --node-config 'site="a" data-path="/data/a.jsonl"'`):
  site      the site's name (default in simulation: "site-<partition-id>")
  data-path the site's data file (default in simulation: from the instruction)
  run-dir   the site's own output directory (default: <run-dir of the instruction>/sites/<site>)
"""

from __future__ import annotations

import logging

from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from fedcurate.client import site as site_phases
from fedcurate.common.config import Config, from_flat
from fedcurate.common.data.loaders import DataFileError
from fedcurate.common.data.sample import DataError

logger = logging.getLogger(__name__)

# Keys of the "config" record that are not experiment config.
TRANSPORT_KEYS = ("run-dir", "data-template", "data-paths")

app = ClientApp()


def unpack(msg: Message, context: Context) -> tuple[Config, site_phases.SiteLocation]:
    """The typed config and where this site's data and outputs are, from the instruction and node config."""
    record = dict(msg.content["config"])
    cfg = from_flat({k: v for k, v in record.items() if k not in TRANSPORT_KEYS}, source="<instruction>")
    return cfg, site_phases.locate(dict(context.node_config), record)


@app.query("prepare")
def prepare(msg: Message, context: Context) -> Message:
    """Load and validate the site's data; reply with counts (no rows, no text)."""
    cfg, where = unpack(msg, context)
    site = where.site
    try:
        result = site_phases.prepare(site, where.data_path, where.site_dir, cfg)
    except (DataError, DataFileError, FileNotFoundError) as err:  # the site's data, not a bug: no traceback
        logger.error("[%s] prepare failed: %s", site, err)
        return _data_error_reply(msg, site, err)
    info = ConfigRecord({"site": site, "resumed": result.resumed})
    if result.rejects_by_reason:  # empty lists are left out: ConfigRecord.count_bytes fails on them
        info["reject-kinds"] = list(result.rejects_by_reason)
        info["reject-counts"] = list(result.rejects_by_reason.values())
    metrics = MetricRecord({"num-samples": result.num_samples, "num-rejects": result.num_rejects,
                            "seconds": float(result.seconds)})
    return Message(RecordDict({"metrics": metrics, "info": info}), reply_to=msg)


def _data_error_reply(msg: Message, site: str, err: Exception) -> Message:
    """An error reply naming files, lines and kinds of fault, never row values (those stay in the log)."""
    if isinstance(err, DataError):
        detail = site_phases.describe_rejects(err.rejects) + '\n(set data.on-error = "skip" to use the good rows)'
    else:
        detail = str(err).splitlines()[0]
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"site {site!r}: {detail}"),
                   reply_to=msg)
