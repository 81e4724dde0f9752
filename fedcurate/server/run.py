"""What the server's phases share: the `Run` (config, run directory, transport) and its round bookkeeping.

    run = Run(cfg, Path("runs/x"), transport)
    result = run.round("select", "select", Payload({"threshold": t}), select.check_reply)
    # every reply validated (bad ones excluded with the reason), bytes logged, federation.min-sites enforced

A phase (`server/phases/<phase>.py`) is a function `Run -> summary`; `server/orchestrator.py` runs them in
order and resumes. A reply that fails validation is excluded with its reason and never aggregated; a round
with fewer than `federation.min-sites` valid replies stops the run with every reason (`PhaseError`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcurate.common import io
from fedcurate.common.config import Config
from fedcurate.common.protocol import layout
from fedcurate.common.protocol.payload import Payload, RoundResult, SecureSum, Transport

logger = logging.getLogger(__name__)


class PhaseError(RuntimeError):
    """A phase cannot go on (too few valid replies, a server-side failure)."""


@dataclass
class Run:
    """What the phases share: config, run directory, transport, the communication log."""

    cfg: Config
    run_dir: Path
    transport: Transport
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    traffic: list[dict[str, Any]] = field(default_factory=list)
    exclusions: list[dict[str, Any]] = field(default_factory=list)

    def server_dir(self, phase: str) -> Path:
        return layout.phase_dir(self.run_dir, phase)

    def round(self, phase: str, step: str, payload: Payload, validate: Callable[[str, Payload], list[str]]
              | None = None) -> RoundResult:
        """One round: send, validate every reply (exclude bad ones), log bytes, enforce min-sites."""
        start = time.monotonic()
        result = self.transport.round(phase, step, payload)
        # replies in site order, not arrival order: float sums over sites are then the same on every run
        result.replies = dict(sorted(result.replies.items()))
        for site in sorted(result.replies):
            problems = validate(site, result.replies[site]) if validate else []
            if problems:
                result.exclude(site, f"[{step}] invalid reply: " + "; ".join(problems))
        for site, t in sorted(result.traffic.items()):
            self.traffic.append({"phase": phase, "step": step, "site": site, **t})
        self.exclusions += [{"phase": phase, "step": step, **e} for e in result.excluded]
        logger.info("[ROUND %s] %d site(s) replied, %d excluded, %d B sent, %d B received in %.1f s", step,
                    len(result.replies), len(result.excluded), sum(t["sent"] for t in result.traffic.values()),
                    sum(t["received"] for t in result.traffic.values()), time.monotonic() - start)
        if len(result.replies) < self.cfg.federation.min_sites:
            reasons = "; ".join(f"{e['site']}: {e['reason']}" for e in result.excluded) or "no site connected"
            raise PhaseError(f"[{step}] {len(result.replies)} site(s) gave a valid reply, federation.min-sites = "
                             f"{self.cfg.federation.min_sites}: {reasons}")
        return result

    def secure_round(self, phase: str, step: str, payload: Payload, keys: list[str],
                     validate: Callable[[SecureSum], list[str]]) -> SecureSum:
        """One secure-aggregation round: only the sum over sites of the reply fields `keys` comes back. A sum
        that fails `validate` cannot be traced to a site (that is the point), so the phase stops."""
        start = time.monotonic()
        result = self.transport.secure_sum(phase, step, payload, keys)
        for site, t in sorted(result.traffic.items()):
            self.traffic.append({"phase": phase, "step": step, "site": site, "secure": True, **t})
        self.exclusions += [{"phase": phase, "step": step, **e} for e in result.excluded]
        logger.info("[ROUND %s] secure sum over %d site(s), %d lost, in %.1f s", step, len(result.sites),
                    len(result.excluded), time.monotonic() - start)
        if len(result.sites) < self.cfg.federation.min_sites:
            reasons = "; ".join(f"{e['site']}: {e['reason']}" for e in result.excluded) or "no site contributed"
            raise PhaseError(f"[{step}] {len(result.sites)} site(s) contributed to the secure sum, "
                             f"federation.min-sites = {self.cfg.federation.min_sites}: {reasons}")
        problems = validate(result)
        if problems:
            raise PhaseError(f"[{step}] the securely summed counts are invalid (one or more sites sent bad counts; "
                             f"secure aggregation hides which): " + "; ".join(problems))
        return result

    def write_site_stats(self, phase: str, result: RoundResult, extra: dict[str, Any] | None = None) -> None:
        """stats/<phase>.json: what every site replied, who was excluded and why."""
        io.write_json(layout.stats_path(self.run_dir, phase),
                      {"sites": {s: r.values for s, r in sorted(result.replies.items())},
                       "excluded": result.excluded, **(extra or {})})

    def record_privacy(self, key: str, info: dict[str, Any]) -> None:
        """stats/privacy.json: the budget spent per kind of release ("threshold": per sample; "training": per
        site; guarantees under different neighbouring relations are reported side by side, not added)."""
        path = layout.stats_path(self.run_dir, "privacy")
        current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        io.write_json(path, {**current, key: info})


def skipped(why: str) -> dict[str, Any]:
    """The summary of a phase that does not apply to this config."""
    logger.info("skipped: %s", why)
    return {"skipped": why}
