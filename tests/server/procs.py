"""Process helpers for the deployment tests: free ports, processes in their own session, waits on logs, and the
nginx skip marker (in CI, FEDCURATE_REQUIRE_NGINX=1 turns the skip into a failure, so a missing nginx can never
pass silently)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "fedcurate.app.cli"]
BIN = Path(sys.executable).parent
HAS_NGINX = bool(shutil.which("nginx")) or Path("/usr/sbin/nginx").is_file()
needs_nginx = pytest.mark.skipif(not HAS_NGINX and os.environ.get("FEDCURATE_REQUIRE_NGINX") != "1",
                                 reason="nginx not installed (apt-get install nginx-light); it fronts the SuperLink")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def env(**extra: str) -> dict[str, str]:
    """This environment with telemetry off and this venv's bin first on PATH."""
    return {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", **extra,
            "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")])}


def start(cmd: list[str], log: Path, environ: dict[str, str] | None = None) -> subprocess.Popen:
    """`cmd` in its own session (so `stop` reaches its children), in the log's folder, output to `log`."""
    handle = open(log, "w")  # noqa: SIM115 - closed when the process is reaped
    return subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                            env=environ or env(), cwd=Path(log).parent)


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_until(predicate, timeout: float, poll: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


def wait_for(text: str, log: Path, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """True once `text` is in `log`; False after `timeout` or once `proc` exited without writing it."""
    def seen() -> bool:
        return log.exists() and text in log.read_text(errors="replace")
    return wait_until(lambda: seen() or (proc is not None and proc.poll() is not None), timeout) and seen()
