"""Start the real Flower processes of a deployment with safe defaults, after checks that explain failures.

    fedcurate superlink --certs certs --host 0.0.0.0 --port 8000 --state /srv/fedcurate
    fedcurate supernode --superlink superlink.example.org:8000 --ca ca.crt --key hospital-a \\
                        --site hospital-a --data /data/a.jsonl
    fedcurate launch --superlink superlink.example.org:8000 --ca certs/ca.crt --config configs/x.toml --run-dir runs/x

TLS and SuperNode authentication are on unless `--insecure` is given (a warning says what that means).
`superlink` registers every public key in `<certs>/sites/*.pub` with the SuperLink once it is up, so only
those partners can connect. `supernode` first checks what it can locally -- the key file, that the address
resolves and answers, and that the SuperLink's certificate verifies against the given CA for that host --
and stops with a message naming the file or address when one is wrong, instead of Flower's retry loop.
The ServerApp runs in the SuperLink's Python environment (runtime dependency installation disabled) and
each ClientApp in its SuperNode's environment: every site installs fedcurate itself.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from fedcurate.server.certs import check_key

logger = logging.getLogger(__name__)

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


def superlink_command(certs: Path | None, host: str, port: int, state_dir: Path, insecure: bool) -> list[str]:
    cmd = [flower_bin("flower-superlink"), "--host", host, "--port", str(port),
           "--database", str(Path(state_dir) / "superlink.db"), "--disable-runtime-dependency-installation"]
    if insecure:
        return [*cmd, "--insecure"]
    certs = Path(certs) if certs else None
    if certs is None:
        raise DeployError("give --certs DIR (from `fedcurate certs`), or --insecure for a closed test network")
    for name in ("ca.crt", "server.pem", "server.key"):
        if not (certs / name).is_file():
            raise DeployError(f"{certs / name} not found: run `fedcurate certs --out {certs} --san <host>` first")
    return [*cmd, "--ssl-ca-certfile", str(certs / "ca.crt"), "--ssl-certfile", str(certs / "server.pem"),
            "--ssl-keyfile", str(certs / "server.key"), "--enable-supernode-auth"]


def write_connection(flwr_home: Path, address: str, ca: Path | None, insecure: bool) -> Path:
    """A `flwr` CLI connection profile named CONNECTION in `flwr_home/config.toml`."""
    from fedcurate.common import io

    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]", f'address = "{address}"']
    lines.append("insecure = true" if insecure else f'root-certificates = "{Path(ca).resolve()}"')
    path = Path(flwr_home) / "config.toml"
    io.write_text(path, "\n".join(lines) + "\n")
    return path


def process_env(flwr_home: Path | None = None) -> dict[str, str]:
    """The environment for Flower's processes: this environment's bin first on PATH (the SuperLink and
    SuperNode start `flower-superexec` by name), telemetry off, FLWR_HOME when given."""
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    if flwr_home is not None:
        env["FLWR_HOME"] = str(Path(flwr_home).resolve())
    return env


def flwr_env(flwr_home: Path) -> dict[str, str]:
    return process_env(flwr_home)


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


def register_keys(keys: list[Path], flwr_home: Path) -> dict[str, str]:
    """`flwr supernode register` for each public key; {key file: outcome}."""
    out = {}
    for key in keys:
        done = subprocess.run([flower_bin("flwr"), "supernode", "register", str(key), CONNECTION],
                              env=flwr_env(flwr_home), capture_output=True, text=True, timeout=120)
        text = (done.stdout + done.stderr).strip()
        if done.returncode != 0 and "already" not in text.lower():
            raise DeployError(f"registering {key} failed: {text.splitlines()[-1] if text else done.returncode}")
        out[str(key)] = text.splitlines()[-1] if text else "registered"
        logger.info("%s: %s", key.name, out[str(key)])
    return out


def check_superlink(address: str, ca: Path | None, insecure: bool, timeout: float = 10.0) -> str:
    """'' when `address` answers and (with TLS) its certificate verifies against `ca` for that host name."""
    host, port = split_address(address)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror:
        return f"SuperLink address {address!r}: host {host!r} does not resolve"
    except OSError as err:
        return f"SuperLink address {address!r}: cannot connect ({err.strerror or err}); is it running, is the port open?"
    with sock:
        if insecure:
            return ""
        if ca is None or not Path(ca).is_file():
            return f"CA certificate {ca} not found: it is the ca.crt you received from the coordinator"
        ctx = ssl.create_default_context(cafile=str(ca))
        try:
            with ctx.wrap_socket(sock, server_hostname=host):
                return ""
        except ssl.SSLCertVerificationError as err:
            return (f"the SuperLink at {address} presented a certificate that does not verify with {ca}: "
                    f"{err.verify_message}. Check that {ca} is the coordinator's CA and that the SuperLink "
                    f"certificate was issued for {host!r} (fedcurate certs --san {host})")
        except ssl.SSLError as err:
            return f"TLS handshake with {address} failed: {err.reason or err}; is the SuperLink started with TLS?"


def supernode_command(superlink: str, ca: Path | None, key: Path | None, site: str, data: str,
                      run_dir: Path | None, port: int, insecure: bool, test: str | None = None) -> list[str]:
    node_config = (f'site="{site}" data-path="{data}"' + (f' run-dir="{run_dir}"' if run_dir else "")
                   + (f' test-path="{test}"' if test else ""))
    cmd = [flower_bin("flower-supernode"), "--superlink", superlink, "--node-config", node_config,
           "--port", str(port)]
    if insecure:
        return [*cmd, "--insecure"]
    return [*cmd, "--root-certificates", str(ca), "--auth-supernode-private-key", str(key)]


def preflight_supernode(superlink: str, ca: Path | None, key: Path | None, data: str, insecure: bool) -> None:
    """Every local check a SuperNode can make before it starts; raises DeployError with the first problem."""
    split_address(superlink)
    if not insecure:
        if key is None:
            raise DeployError("give --key (your private key file from the coordinator), or --insecure")
        why = check_key(Path(key))
        if why:
            raise DeployError(why)
        if ca is None:
            raise DeployError("give --ca (the coordinator's ca.crt), or --insecure")
    if not Path(data).exists():
        raise DeployError(f"data file {data} not found")
    why = check_superlink(superlink, ca, insecure)
    if why:
        raise DeployError(why)


def launch_command(app_dir: Path, config_file: Path, run_dir: Path, stream: bool = True) -> list[str]:
    """`flwr run` of the fedcurate app against the CONNECTION profile."""
    run_config = f'config-file="{Path(config_file).resolve()}" run-dir="{Path(run_dir).resolve()}"'
    return [flower_bin("flwr"), "run", str(app_dir), CONNECTION, "--run-config", run_config,
            *(["--stream"] if stream else [])]


def app_dir() -> Path:
    """The fedcurate source tree (holds the pyproject with the Flower app section)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").exists():
        raise DeployError(f"{root} is not a fedcurate source tree; run `fedcurate launch` from a checkout "
                          f"(`flwr run` builds the app from its pyproject.toml)")
    return root
