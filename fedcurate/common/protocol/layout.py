"""The run directory, as functions: where the server and every site write what (one definition for all).

    write_phase_done(run_dir, "prepare", summary)    # run_dir/server/prepare/{summary.json, DONE}
    phase_done(run_dir, "prepare")                   # True: a re-run skips this phase
    stats_path(run_dir, "select")                    # run_dir/stats/select.json
    step_dir(site_dir, "warmup/2")                   # site_dir/warmup/round-2

    <run>/
      run.json, config.toml          the settings of the run (a resume with other settings is refused)
      server/<phase>/                summary.json then DONE, and the server's artefacts of that phase
      stats/<phase>.json             per site: what it replied, who was excluded and why
      stats/communication.json       bytes sent and received per round per site
      stats/privacy.json             the privacy budget spent, per kind of release
      sites/<site>/                  a site's own directory (in simulation and centralized mode; a deployed
        <phase>/<step rest>/           site chooses its own): what each step computed, and its reply
        cache/                         ratings and embeddings cache

The DONE marker is written after the summary, so its presence means the summary is complete.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedcurate.common.io import write_json, write_text

PHASES = ("prepare", "curate", "warmup", "dynamics", "threshold", "select", "train", "evaluate")  # run order
RUN_FILE = "run.json"
CONFIG_FILE = "config.toml"


# ---------------------------------------------------------------- server side
def phase_dir(run_dir: Path, phase: str) -> Path:
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; phases are {', '.join(PHASES)}")
    return Path(run_dir) / "server" / phase


def summary_path(run_dir: Path, phase: str) -> Path:
    return phase_dir(run_dir, phase) / "summary.json"


def phase_done(run_dir: Path, phase: str) -> bool:
    return (phase_dir(run_dir, phase) / "DONE").is_file()


def read_summary(run_dir: Path, phase: str) -> dict[str, Any]:
    """The summary.json a finished phase wrote."""
    return json.loads(summary_path(run_dir, phase).read_text(encoding="utf-8"))


def write_phase_done(run_dir: Path, phase: str, summary: dict[str, Any]) -> Path:
    """Write `summary.json`, then the `DONE` marker (both atomically); returns the summary path."""
    out = phase_dir(run_dir, phase)
    write_json(out / "summary.json", summary)
    write_text(out / "DONE", datetime.now(UTC).isoformat(timespec="seconds") + "\n")
    return out / "summary.json"


def stats_path(run_dir: Path, name: str) -> Path:
    """<run>/stats/<name>.json: a phase's per-site stats, or "communication", "privacy", "identity"."""
    return Path(run_dir) / "stats" / f"{name}.json"


def site_dir(run_dir: Path, site: str) -> Path:
    """A site's directory inside a run (simulation, centralized mode)."""
    return Path(run_dir) / "sites" / site


# ---------------------------------------------------------------- site side
def step_name(step: str) -> str:
    """'warmup/2' -> 'warmup'; 'threshold/hist/0' -> 'threshold/hist'."""
    parts = step.split("/")
    return "/".join(p for p in parts if not p.isdigit())


def step_dir(site_root: Path, step: str) -> Path:
    """<site>/<phase>/<rest>: 'warmup/2' -> warmup/round-2, 'curate/counts' -> curate/counts."""
    phase, *rest = step.split("/")
    return Path(site_root, phase, *[f"round-{p}" if p.isdigit() else p for p in rest])


def step_done(site_root: Path, step: str) -> bool:
    """A site step that marks its completion (prepare) has written its DONE marker."""
    return (step_dir(site_root, step) / "DONE").is_file()


def site_samples_path(site_root: Path) -> Path:
    """The samples `prepare` validated at a site."""
    return Path(site_root) / "prepare" / "samples.jsonl"


def selected_path(site_root: Path) -> Path:
    """The samples a site kept (`select`), which it trains on."""
    return Path(site_root) / "select" / "selected.jsonl"


def columns_dir(site_root: Path) -> Path:
    """Every scorer's column at a site (`dynamics`): columns.parquet and columns.json."""
    return Path(site_root) / "dynamics"


def curation_path(site_root: Path) -> Path:
    """A site's DS2 curation (`curate/apply`): raw, curated and long-tail scores."""
    return Path(site_root) / "curate" / "apply" / "curation.npz"


def composite_dir(site_root: Path) -> Path:
    """A site's composite score (`threshold/range`)."""
    return Path(site_root) / "threshold" / "range"


def site_cache_dir(site_root: Path) -> Path:
    """A site's ratings and embeddings cache."""
    return Path(site_root) / "cache"
