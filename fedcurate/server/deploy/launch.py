"""`fedcurate launch`: submit a run to the SuperLink with `flwr run` and follow it until it ends.

    fedcurate launch --state /srv/fedcurate --config configs/x.toml --run-dir runs/x

    code = follow_run(Path("/srv/fedcurate"), Path("configs/x.toml"), Path("runs/x"), PHASES)
    status, details = run_status(state, run_id)    # ("finished:completed", ""), ("unreachable", why), ...

`follow_run` prints each phase as its DONE marker appears, resubmits the run after a SuperLink restart
(`superlink_epoch` changes; phases resume from their DONE markers) and returns 0 only when the run
completed: 1 failed, 3 stopped, 4 SuperLink lost for longer than `reconnect_s`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fedcurate
from fedcurate.common.protocol import layout
from fedcurate.server.deploy.processes import CONNECTION, STARTED_FILE, DeployError, flower_bin, flwr_cli


def app_dir() -> Path:
    """The fedcurate source tree: the folder of the `fedcurate` package, which holds the pyproject with the
    Flower app section."""
    root = Path(fedcurate.__file__).resolve().parents[1]
    if not (root / "pyproject.toml").exists():
        raise DeployError(f"{root} is not a fedcurate source tree; run `fedcurate launch` from a checkout "
                          f"(`flwr run` builds the app from its pyproject.toml)")
    return root


def launch_command(app_dir: Path, config_file: Path, run_dir: Path, stream: bool = False) -> list[str]:
    """`flwr run` of the fedcurate app against the CONNECTION profile (JSON output: the run id)."""
    run_config = f'config-file="{Path(config_file).resolve()}" run-dir="{Path(run_dir).resolve()}"'
    return [flower_bin("flwr"), "run", str(app_dir), CONNECTION, "--run-config", run_config,
            *(["--stream"] if stream else ["--format", "json"])]


def _json_tail(text: str) -> dict[str, Any]:
    """The JSON object in a `flwr ... --format json` output (it may follow other lines)."""
    start = text.find("{")
    try:
        return json.loads(text[start:]) if start >= 0 else {}
    except ValueError:
        return {}


def submit_run(flwr_home: Path, config_file: Path, run_dir: Path) -> int:
    code, text = flwr_cli(launch_command(app_dir(), config_file, run_dir)[1:], flwr_home, timeout=600)
    got = _json_tail(text)
    if code != 0 or not got.get("success", False) or "run-id" not in got:
        raise DeployError(f"submitting the run failed: {got.get('error-message') or text[-500:]}")
    return int(got["run-id"])


def run_status(flwr_home: Path, run_id: int) -> tuple[str, str]:
    """('running' | 'finished:completed' | 'finished:failed' | ..., details); ('unreachable', why) when the
    SuperLink does not answer."""
    try:
        code, text = flwr_cli(["ls", CONNECTION, "--run-id", str(run_id), "--format", "json"], flwr_home,
                              timeout=60)
    except subprocess.TimeoutExpired:
        return "unreachable", "`flwr ls` timed out"
    got = _json_tail(text)
    if code != 0 or not got.get("success", False):
        return "unreachable", str(got.get("error-message") or text[-300:])
    runs = got.get("runs") or []
    if not runs:
        return "unknown", f"run {run_id} not found"
    run = runs[0]
    return str(run.get("status", "unknown")), str(run.get("status-details", run.get("details", "")) or "")


def superlink_epoch(state: Path) -> str:
    """Which start of the SuperLink is serving (changes at every restart); '' when unknown."""
    try:
        return (Path(state) / STARTED_FILE).read_text(encoding="utf-8")
    except OSError:
        return ""


def follow_run(flwr_home: Path, config_file: Path, run_dir: Path, phases: tuple[str, ...], *,
               poll_s: float = 5.0, reconnect_s: float = 600.0, resubmits: int = 3, out: Any = None) -> int:
    """Submit the run, print each phase as it completes, resubmit after a SuperLink restart (phases resume
    from their DONE markers), and return 0 only when the run completed: 1 failed, 3 stopped, 4 SuperLink
    lost for longer than `reconnect_s`."""
    out = out or sys.stdout
    say = lambda text: print(text, file=out, flush=True)  # noqa: E731
    reported = {p for p in phases if layout.phase_done(run_dir, p)}
    epoch, run_id = superlink_epoch(flwr_home), submit_run(flwr_home, config_file, run_dir)
    say(f"run {run_id} submitted; phases already done: {', '.join(p for p in phases if p in reported) or 'none'}")
    lost_since: float | None = None
    was_lost = False  # the SuperLink went away since this run was submitted (a restart ends its runs)

    def progress() -> None:
        for phase in phases:
            if phase not in reported and layout.phase_done(run_dir, phase):
                reported.add(phase)
                say(f"[{len(reported)}/{len(phases)}] {phase} done")

    while True:
        time.sleep(poll_s)
        progress()
        status, details = run_status(flwr_home, run_id)
        progress()
        if status == "unreachable":
            if lost_since is None:
                lost_since, was_lost = time.monotonic(), True
                say(f"SuperLink unreachable ({details}); waiting up to {reconnect_s:.0f} s for it to come back")
            if time.monotonic() - lost_since > reconnect_s:
                say(f"error: lost the SuperLink for more than {reconnect_s:.0f} s; run {run_id} state unknown. "
                    f"Start it again and re-run this command: finished phases are kept")
                return 4
            continue
        lost_since = None
        if status.startswith("finished:completed"):
            missing = [p for p in phases if not layout.phase_done(run_dir, p)]
            if missing:
                say(f"error: run {run_id} ended without finishing {', '.join(missing)}")
                return 1
            say(f"run {run_id} completed: {', '.join(phases)}")
            return 0
        if status.startswith("finished:stopped"):
            say(f"error: run {run_id} was stopped ({details or 'flwr stop'})")
            return 3
        if status.startswith("finished") or status == "unknown":  # unknown: e.g. a SuperLink on a new database
            if (was_lost or superlink_epoch(flwr_home) != epoch) and resubmits > 0:
                resubmits -= 1
                epoch = superlink_epoch(flwr_home)
                run_id, was_lost = submit_run(flwr_home, config_file, run_dir), False
                say(f"the SuperLink restarted and ended the run ({status}); resubmitted as run {run_id}, "
                    f"resuming after the last finished phase")
                continue
            say(f"error: run {run_id} {status}: {details or 'see the SuperLink log'}")
            return 1
