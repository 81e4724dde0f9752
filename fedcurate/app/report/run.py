"""Reading a run directory for the report: settings, each phase's state and summary, the sites.

    run = load_run(Path("runs/demo"))      # ReportError naming the path if it is not a run directory
    run.status["select"]                   # "done" | "skipped" | "unfinished" | "not run"
    run.done("select")["kept"]             # a finished phase's summary (None when it did not run)
    run.why_missing("train")               # "the train phase has not run (the run stopped after select)"

Only what the phases wrote is read: `run.json`, `server/<phase>/summary.json` + `DONE`, `stats/*.json`
and the site folders under `sites/`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from fedcurate.common.protocol import layout

PROGRESS_MIN_ITEMS = 8  # show a progress bar when reading or plotting at least this many sites or runs


class ReportError(ValueError):
    """The path given is not a run directory, or one of its files cannot be read."""

@dataclass
class RunView:
    """What a run directory holds: settings, each phase's state and summary, the sites."""

    root: Path
    settings: dict[str, Any]
    status: dict[str, str]  # phase -> "done" | "skipped" | "unfinished" | "not run"
    summaries: dict[str, dict[str, Any]]  # finished phases only (skipped ones too)
    sites: list[str]

    def done(self, phase: str) -> dict[str, Any] | None:
        """The summary of a phase that ran (None when it did not run or was skipped)."""
        return self.summaries[phase] if self.status[phase] == "done" else None

    def why_missing(self, phase: str) -> str:
        state = self.status[phase]
        if state == "skipped":
            return f"the {phase} phase was skipped: {self.summaries[phase]['skipped']}"
        last = next((p for p in reversed(list(self.status)) if self.status[p] in ("done", "skipped")), None)
        after = f" (the run stopped after {last})" if last else " (no phase has finished)"
        return f"the {phase} phase {'started but did not finish' if state == 'unfinished' else 'has not run'}{after}"

    def stats(self, name: str) -> Any:
        """stats/<name>.json, or None."""
        return read_json(layout.stats_path(self.root, name), missing_ok=True)

    def site_dir(self, site: str) -> Path:
        return layout.site_dir(self.root, site)


def read_json(path: Path, missing_ok: bool = False) -> Any:
    if missing_ok and not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: cannot read it as JSON ({err})") from err


def is_run_dir(path: Path) -> bool:
    return (path / layout.RUN_FILE).is_file() or any(layout.summary_path(path, p).is_file() for p in layout.PHASES)


def load_run(path: Path) -> RunView:
    """Read a run directory; ReportError naming the path if it is not one."""
    from fedcurate.common.protocol.layout import PHASES

    root = Path(path)
    if not root.is_dir() or not is_run_dir(root):
        what = "does not exist" if not root.exists() else "is not a run directory"
        raise ReportError(f"{root} {what}: expected run.json or server/<phase>/summary.json in it (the --out of "
                          "fedcurate select, simulate or demo)")
    settings = (read_json(root / "run.json", missing_ok=True) or {}).get("settings", {})
    status, summaries = {}, {}
    for phase in PHASES:
        folder = layout.phase_dir(root, phase)
        if (folder / "DONE").is_file():
            summaries[phase] = read_json(folder / "summary.json")
            status[phase] = "skipped" if "skipped" in summaries[phase] else "done"
        else:
            status[phase] = "unfinished" if folder.is_dir() else "not run"
    sites = sorted(p.name for p in (root / "sites").iterdir() if p.is_dir()) if (root / "sites").is_dir() else []
    for listed in (summaries.get("prepare", {}).get("sites", {}), summaries.get("select", {}).get("sites", {})):
        sites = sorted(set(sites) | set(listed))
    return RunView(root, settings, status, summaries, sites)


def mode_of(run: RunView) -> str:
    if not run.sites:
        return "no site has replied yet"
    if run.sites == ["local"]:
        return "centralized (one site, local)"
    return f"federated, {len(run.sites)} site(s)"


def progress(items: Sequence[Any], desc: str) -> Any:
    return tqdm(items, desc=desc, unit="site", leave=False, disable=len(items) < PROGRESS_MIN_ITEMS)
