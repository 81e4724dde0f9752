"""Flower ClientApp: one handler per phase; it unpacks the message, runs the step (`client/handlers.py`), packs the reply.

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
from typing import Any

from flwr.app import Context, Error, Message
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from fedcurate.client import site as site_phases
from fedcurate.client.handlers import handle
from fedcurate.common.config import Config, from_flat
from fedcurate.common.data.loaders import DataFileError
from fedcurate.common.data.sample import DataError
from fedcurate.common.protocol.layout import PHASES
from fedcurate.common.protocol.payload import Payload
from fedcurate.strategies.messages import decode_array, pack, unpack
from fedcurate.strategies.secure_sum import site_contribution

logger = logging.getLogger(__name__)

# Keys of the "config" record that are not experiment config.
TRANSPORT_KEYS = ("run-dir", "data-template", "data-paths", "step")

app = ClientApp()


def unpack_instruction(msg: Message, context: Context) -> tuple[Config, site_phases.SiteLocation]:
    """The typed config and where this site's data and outputs are, from the instruction and node config."""
    record = dict(msg.content["config"])
    cfg = from_flat({k: v for k, v in record.items() if k not in TRANSPORT_KEYS}, source="<instruction>")
    return cfg, site_phases.locate(dict(context.node_config), record)


def run_step(msg: Message, context: Context) -> Message:
    """Unpack the instruction, run its step at this site (`client/handlers.py`), pack the reply."""
    cfg, where = unpack_instruction(msg, context)
    step = str(msg.content["config"]["step"])
    try:
        reply = handle(step, cfg, where, unpack(msg.content))
    except (DataError, DataFileError) as err:  # the site's data, not a bug: no traceback, no row values
        logger.error("[%s] %s failed: %s", where.site, step, err)
        return _data_error_reply(msg, where.site, err)
    return Message(pack(reply, {}), reply_to=msg)


# One handler per phase (message type "query.<phase>"); the step inside a phase is in the config record.
for _phase in PHASES:
    app.query(_phase)(run_step)


@app.train(mods=[secaggplus_mod])
def secure_step(msg: Message, context: Context) -> Message:
    """A secure-aggregation round (`strategies/secure_sum.py`): Flower's SecAgg+ mod runs its key-exchange stages
    and calls this in its masking stage; the reply's fields leave this site only masked."""
    def run(instruction: dict[str, Any]) -> tuple[str, Payload]:
        record = instruction["record"]
        cfg = from_flat({k: v for k, v in record.items() if k not in TRANSPORT_KEYS}, source="<instruction>")
        where = site_phases.locate(dict(context.node_config), record)
        sent = instruction["payload"]
        payload = Payload(sent["values"], {k: decode_array(v) for k, v in sent["arrays"].items()})
        return where.site, handle(str(record["step"]), cfg, where, payload)

    return site_contribution(msg, run)


def _data_error_reply(msg: Message, site: str, err: Exception) -> Message:
    """An error reply naming files, lines and kinds of fault, never row values (those stay in the log)."""
    if isinstance(err, DataError):
        detail = site_phases.describe_rejects(err.rejects) + '\n(set data.on-error = "skip" to use the good rows)'
    else:
        detail = str(err).splitlines()[0]
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"site {site!r}: {detail}"),
                   reply_to=msg)
