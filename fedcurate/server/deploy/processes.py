"""The Flower processes of a deployment: where their executables are, their environment, the `flwr` CLI,
and `Children`, which forwards signals to them and stops them together.

    env = process_env(state, gate_bin(state / "bin", "flwr-serverapp", "fedcurate.server.gate").parent)
    children = Children()                         # SIGINT/SIGTERM/SIGHUP now go to every started process
    link = children.start("flower-superlink", [flower_bin("flower-superlink"), ...], env)
    wait_for_port("127.0.0.1", 9093, proc=link)   # DeployError if it exits first or never opens
    code = children.wait()                        # until one exits; the others are stopped
    code, text = flwr_cli(["ls", CONNECTION, "--format", "json"], state)

`gate_bin` writes a launcher of `python -m <module>` that `process_env` puts first on PATH, so Flower's
SuperExec starts the gated app (`server/gate.py`, `client/gate.py`) instead of its own `flwr-*app`.
Every child gets SIGTERM if the wrapper dies (Linux parent-death signal), so none outlives it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STARTED_FILE = "superlink.started.json"  # rewritten at every start: `launch` tells a restart from it
CONNECTION = "fedcurate"  # the name of the connection profile written for the `flwr` CLI
INSECURE_WARNING = ("--insecure: traffic is unencrypted and any process that reaches the port can join as a "
                    "SuperNode. Use it only on a closed test network.")


class DeployError(RuntimeError):
    """A certificate, key or address is wrong; the message says which and how to fix it."""


def flower_bin(name: str) -> str:
    """The Flower executable next to this Python (the venv), else on PATH."""
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise DeployError(f"{name} not found: install fedcurate (it depends on flwr) in this environment")
    return found


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise DeployError(f"address {address!r}: expected HOST:PORT, e.g. superlink.example.org:8000")
    return host.strip("[]"), int(port)


def check_port_free(host: str, port: int, what: str) -> None:
    """DeployError when something already listens on host:port (e.g. a SuperLink that outlived its wrapper)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no owner
        try:
            sock.bind((host, port))
        except OSError as err:
            raise DeployError(f"{what} {host}:{port} is already in use ({err.strerror}): another SuperLink or "
                              f"proxy is running there; stop it (or pick another --port) and start again") from err


# ------------------------------------------------------------------ child processes
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class Children:
    """Flower's processes under one wrapper: SIGINT/SIGTERM/SIGHUP are forwarded to all of them, each gets
    SIGTERM if the wrapper dies (Linux parent-death signal), and when one exits the others are stopped."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.stopping = False
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._forward)

    def start(self, name: str, cmd: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen:
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        proc = subprocess.Popen(cmd, env=env, preexec_fn=preexec, **kwargs)  # noqa: PLW1509
        self.procs.append((name, proc))
        logger.info("started %s (pid %d)", name, proc.pid)
        return proc

    def _forward(self, signum: int, _frame: Any) -> None:
        self.stopping = True
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    def stop(self, timeout: float = 20.0) -> None:
        self.stopping = True
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def wait(self) -> int:
        """Until one process exits; then stop the rest. Its exit code (0 after a forwarded signal)."""
        while True:
            for name, proc in self.procs:
                code = proc.poll()
                if code is not None:
                    if not self.stopping:
                        logger.error("%s exited with code %d; stopping the others", name, code)
                    self.stop()
                    return 0 if self.stopping and code in (0, -signal.SIGTERM, -signal.SIGINT) else (code or 1)
            time.sleep(0.5)


def gate_bin(folder: Path, command: str, module: str) -> Path:
    """`folder/<command>`: a launcher of `python -m <module>` that Flower's SuperExec finds first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / command
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n', encoding="utf-8")
    path.chmod(0o755)
    return path


def process_env(flwr_home: Path | None = None, gate_dir: Path | None = None,
                extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for Flower's processes: the gate's launchers, then this environment's bin, first on
    PATH (Flower starts `flower-superexec` and `flwr-clientapp`/`flwr-serverapp` by name), telemetry off,
    FLWR_HOME when given."""
    path = [str(gate_dir)] if gate_dir else []
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0",
           "PATH": os.pathsep.join([*path, str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    if flwr_home is not None:
        env["FLWR_HOME"] = str(Path(flwr_home).resolve())
    env.update(extra or {})
    return env


def flwr_env(flwr_home: Path) -> dict[str, str]:
    return process_env(flwr_home)


def flwr_cli(args: list[str], flwr_home: Path, timeout: float = 120) -> tuple[int, str]:
    """`flwr <args>` with FLWR_HOME = `flwr_home` (its connection profile): (exit code, stdout + stderr)."""
    done = subprocess.run([flower_bin("flwr"), *args], env=flwr_env(flwr_home), capture_output=True, text=True,
                          timeout=timeout)
    return done.returncode, (done.stdout + done.stderr).strip()


def wait_for_port(host: str, port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise DeployError(f"the process exited with code {proc.returncode} before {host}:{port} opened")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)
    raise DeployError(f"{host}:{port} did not open within {timeout:.0f} s")
