"""A run, server side, free of Flower: the phases in order, resume, and the refusal to mix settings.

    summaries = run_phases(cfg, Path("runs/x"), transport)          # a FlowerTransport or a LocalTransport

Phases, in order, are in `server/phases/` (one module each; its docstring lists them). A phase that does
not apply is recorded as skipped.

Outputs: `<run>/server/<phase>/summary.json` then `DONE` (a re-run skips done phases: resume), server
artefacts beside them (checkpoints, T, adapter), `<run>/stats/<phase>.json` (per site: what it replied, who
was excluded and why) and `<run>/stats/communication.json` (bytes sent and received per round per site).
Every summary lists the phase's `exclusions` (step, site, reason) across all its rounds.
A reply that fails validation is excluded with its reason and never aggregated; a phase with fewer than
`federation.min-sites` valid replies stops the run with every reason.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from fedcurate.common import io
from fedcurate.common.config import Config, to_flat, to_toml
from fedcurate.common.protocol import layout
from fedcurate.common.protocol.layout import PHASES, RUN_FILE
from fedcurate.common.protocol.payload import Transport
from fedcurate.server.phases import PHASE_FUNCTIONS
from fedcurate.server.run import PhaseError, Run

logger = logging.getLogger(__name__)
__all__ = ["ConfigChangedError", "PhaseError", "check_same_config", "run_phases"]


def run_phases(cfg: Config, run_dir: Path, transport: Transport, stop_after: str | None = None
               ) -> dict[str, dict[str, Any]]:
    """Run every phase not yet done, up to `stop_after` (default `run.stop-after`, else all)."""
    run = Run(cfg, Path(run_dir), transport)
    check_same_config(cfg, run.run_dir)
    io.write_text(run.run_dir / layout.CONFIG_FILE, to_toml(cfg))
    last = stop_after or cfg.run.stop_after or PHASES[-1]
    if last not in PHASES:
        raise ValueError(f"unknown phase {last!r}; phases are {', '.join(PHASES)}")
    comm_path = layout.stats_path(run.run_dir, "communication")
    if comm_path.exists():
        run.traffic = json.loads(comm_path.read_text(encoding="utf-8"))
    for phase in PHASES:
        if layout.phase_done(run.run_dir, phase):
            logger.info("[PHASE %s] already done, skipping (%s)", phase, run.server_dir(phase))
            run.summaries[phase] = layout.read_summary(run.run_dir, phase)
        else:
            start = time.monotonic()
            logger.info("[PHASE %s] starting", phase)
            summary = PHASE_FUNCTIONS[phase](run)
            summary["seconds"] = round(time.monotonic() - start, 3)
            summary["communication"] = _phase_traffic(run.traffic, phase)
            summary["exclusions"] = [e for e in run.exclusions if e["phase"] == phase]
            io.write_json(comm_path, run.traffic)
            layout.write_phase_done(run.run_dir, phase, summary)
            run.summaries[phase] = summary
        if phase == last:
            break
    return run.summaries


NOT_RESULT_SETTINGS = ("run.", "federation.round-timeout-s", "federation.connect-timeout-s", "federation.min-sites")  # where, when, how long


class ConfigChangedError(RuntimeError):
    """The run directory holds a run made with other settings; resuming it would mix the two."""


def check_same_config(cfg: Config, run_dir: Path) -> None:
    """Refuse to resume a run directory whose finished phases were made with other settings."""
    flat = {k: v for k, v in to_flat(cfg).items() if not k.startswith(NOT_RESULT_SETTINGS)}
    path = Path(run_dir) / RUN_FILE
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8")).get("settings", {})
        changed = sorted(k for k in set(stored) | set(flat) if stored.get(k) != flat.get(k))
        if changed and any(layout.phase_done(run_dir, p) for p in PHASES):
            shown = "; ".join(f"{k}: {stored.get(k)!r} -> {flat.get(k)!r}" for k in changed[:8])
            raise ConfigChangedError(
                f"{run_dir} holds a run made with other settings ({shown}{' ...' if len(changed) > 8 else ''}); "
                f"resuming would mix them. Use another run directory, or delete {run_dir} to start over.")
    io.write_json(path, {"settings": flat})


def _phase_traffic(traffic: list[dict[str, Any]], phase: str) -> dict[str, Any]:
    rows = [t for t in traffic if t["phase"] == phase]
    per_site: dict[str, dict[str, int]] = {}
    for t in rows:
        s = per_site.setdefault(t["site"], {"sent": 0, "received": 0})
        s["sent"] += t["sent"]
        s["received"] += t["received"]
    return {"rounds": len({t["step"] for t in rows}), "bytes_sent": sum(t["sent"] for t in rows),
            "bytes_received": sum(t["received"] for t in rows), "per_site": per_site}
