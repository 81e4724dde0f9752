"""The in-process transport: the server's phases and the site steps in one process (centralized mode, tests).

    transport = LocalTransport([SiteLocation("site-0", "data.jsonl", Path("runs/x/sites/site-0"))], cfg)
    summaries = run_phases(cfg, Path("runs/x"), transport)         # every site runs `handle(step, ...)`

It joins the two sides (`server/` and `client/`, which never import each other), so it lives in the
application layer. A site's failure excludes that site, like a Flower error reply, unless it is the only one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fedcurate.client.handlers import handle
from fedcurate.client.site import SiteLocation
from fedcurate.common.config import Config
from fedcurate.common.protocol.payload import Payload, RoundResult, SecureSum, integer_sums, summable, tap

logger = logging.getLogger(__name__)


class LocalTransport:
    """Runs the site handlers in this process, one site after the other (centralized mode, tests)."""

    def __init__(self, sites: Sequence[SiteLocation], cfg: Config) -> None:
        self.sites, self.cfg, self._handle = list(sites), cfg, handle

    def round(self, phase: str, step: str, payload: Payload) -> RoundResult:
        result = RoundResult(replies={})
        for where in self.sites:
            sent = payload
            tap("sent", where.site, step, sent)
            try:
                reply = self._handle(step, self.cfg, where, sent)
            except Exception as err:  # noqa: BLE001 - one site's failure excludes that site, like a Flower error reply
                if len(self.sites) == 1:
                    raise
                result.excluded.append({"site": where.site, "reason": f"{type(err).__name__}: {err}"})
                logger.exception("[%s] site %s failed", step, where.site)
                continue
            tap("received", where.site, step, reply)
            result.replies[where.site] = reply
            result.traffic[where.site] = {"sent": sent.num_bytes(), "received": reply.num_bytes()}
        return result

    def secure_sum(self, phase: str, step: str, payload: Payload, keys: Sequence[str]) -> SecureSum:
        """In process, the sum is taken here and only the sum is returned; the orchestrator never sees a
        site's own vector (a Flower deployment uses SecAgg+, `server/server_app.FlowerTransport.secure_sum`)."""
        result = self.round(phase, step, payload)
        vectors, sites = [], []
        for site, reply in sorted(result.replies.items()):
            try:
                vectors.append(summable(reply, keys))
                sites.append(site)
            except ValueError as err:
                result.excluded.append({"site": site, "reason": str(err)})
        return SecureSum(integer_sums(vectors, keys) if vectors else {}, sites, result.excluded,
                         {s: result.traffic[s] for s in sites})
