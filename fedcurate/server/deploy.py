"""Start the real Flower processes of a deployment with safe defaults, after checks that explain failures.

    fedcurate superlink --certs certs --host 0.0.0.0 --port 8000 --state /srv/fedcurate
    fedcurate supernode --superlink superlink.example.org:8000 --ca ca.crt --key keys/hospital-a \\
                        --site hospital-a --data /data/a.jsonl
    fedcurate launch --state /srv/fedcurate --config configs/x.toml --run-dir runs/x

What faces the partners' network is nginx on HOST:PORT, forwarding only the Fleet API (`server/proxy.py`);
Flower's SuperLink listens on 127.0.0.1:INTERNAL and its Control and runtime APIs are reachable only from
the coordinator's host. TLS and SuperNode authentication are on unless `--insecure` is given (a warning
says what that means). `superlink` registers every public key in `<certs>/sites/*.pub` with Flower, maps
node ids to site names from the SuperLink's own node table (`server/identity.py`), unregisters any node
whose key is not there, and starts the ServerApp's SuperExec itself with an authentication secret and
the gated `flwr-serverapp` (`server/gate.py`). `supernode` first checks what it can locally -- the key
file, the CA file, that the address resolves and answers, and that the SuperLink's certificate verifies
against the CA for that host -- and runs every ClientApp through the gate (`client/gate.py`): only the
fedcurate installed at the site runs there. Each wrapper forwards SIGINT/SIGTERM to its Flower processes,
which also get SIGTERM if the wrapper itself dies, so no Flower process outlives it.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fedcurate.common.app_pin import PIN_ENV, AppPin
from fedcurate.server.certs import check_ca_file, check_key, fingerprint, load_public_key, registered_sites
from fedcurate.server.identity import REGISTRY_ENV, REGISTRY_FILE, write_registry

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


def _dialable(host: str) -> str:
    """The address to dial a server bound to `host` from this host (a wildcard bind answers on loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


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


# ------------------------------------------------------------------ SuperLink
def write_connection(flwr_home: Path, address: str, ca: Path | None, insecure: bool) -> Path:
    """A `flwr` CLI connection profile named CONNECTION in `flwr_home/config.toml`."""
    from fedcurate.common import io

    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]", f'address = "{address}"']
    lines.append("insecure = true" if insecure else f'root-certificates = "{Path(ca).resolve()}"')
    path = Path(flwr_home) / "config.toml"
    io.write_text(path, "\n".join(lines) + "\n")
    return path


def check_superlink_certs(certs: Path | None) -> Path:
    if certs is None:
        raise DeployError("give --certs DIR (from `fedcurate certs`), or --insecure for a closed test network")
    certs = Path(certs)
    for name in ("ca.crt", "server.pem", "server.key"):
        if not (certs / name).is_file():
            raise DeployError(f"{certs / name} not found: run `fedcurate certs --out {certs} --san <host>` first")
    if (certs / "ca.key").exists():
        raise DeployError(f"{certs / 'ca.key'}: the CA's private key must not sit beside the SuperLink's files "
                          f"(whoever runs code here could issue certificates); move it off this directory, "
                          f"ideally off this machine, and start again")
    return certs


def superexec_secret(state: Path) -> Path:
    """`state/superexec.secret` (made once, 0600): what the ServerApp's SuperExec shows the runtime API."""
    from fedcurate.common import io

    path = Path(state) / "superexec.secret"
    if not path.is_file() or path.stat().st_size == 0:
        io.write_with(path, lambda tmp: (tmp.write_text(secrets.token_hex(32)), os.chmod(tmp, 0o600)))
    return path


def superlink_command(certs: Path | None, host: str, port: int, state_dir: Path, insecure: bool,
                      secret: Path | None = None) -> list[str]:
    """Flower's SuperLink on host:port; with `secret`, in process isolation (we start its SuperExec)."""
    cmd = [flower_bin("flower-superlink"), "--host", host, "--port", str(port),
           "--database", str(Path(state_dir) / "superlink.db"), "--disable-runtime-dependency-installation"]
    if secret is not None:
        cmd += ["--isolation", "process", "--superexec-auth-secret-file", str(secret)]
    if insecure:
        return [*cmd, "--insecure"]
    certs = check_superlink_certs(certs)
    return [*cmd, "--ssl-ca-certfile", str(certs / "ca.crt"), "--ssl-certfile", str(certs / "server.pem"),
            "--ssl-keyfile", str(certs / "server.key"), "--enable-supernode-auth"]


def superexec_command(internal: str, ca: Path | None, secret: Path | None) -> list[str]:
    """The SuperExec that starts (gated) ServerApp processes against the runtime API on `internal`."""
    cmd = [flower_bin("flower-superexec"), "--runtime-api-address", internal, "--parent-pid", str(os.getpid())]
    cmd += ["--root-certificates", str(Path(ca).resolve())] if ca else ["--insecure"]
    return cmd + (["--superexec-auth-secret-file", str(secret)] if secret else [])


def _flwr(args: list[str], flwr_home: Path, timeout: float = 120) -> tuple[int, str]:
    done = subprocess.run([flower_bin("flwr"), *args], env=flwr_env(flwr_home), capture_output=True, text=True,
                          timeout=timeout)
    return done.returncode, (done.stdout + done.stderr).strip()


def _pem_fingerprint(pem: bytes) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_public_key(bytes(pem))
    return fingerprint(key) if isinstance(key, ec.EllipticCurvePublicKey) else ""


def registered_nodes(database: Path) -> dict[int, tuple[str, str]]:
    """{node id: (status, key fingerprint)} from the SuperLink's own node table (read-only)."""
    conn = sqlite3.connect(f"file:{Path(database).resolve()}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT node_id, status, public_key FROM node").fetchall()
    finally:
        conn.close()
    return {int(n) & 0xFFFFFFFFFFFFFFFF: (str(status), _pem_fingerprint(key) if key else "")
            for n, status, key in rows}


def register_sites(certs: Path, flwr_home: Path, database: Path) -> dict[int, dict[str, str]]:
    """Register `certs/sites/*.pub` with Flower, unregister nodes with any other key, and return the registry
    {node id: {"site", "key"}} as the SuperLink's node table binds them."""
    sites = {site: fingerprint(load_public_key(path)) for site, path in registered_sites(certs).items()}
    by_key = {key: site for site, key in sites.items()}
    known = {key for _, key in registered_nodes(database).values()}
    for site, path in registered_sites(certs).items():
        if sites[site] in known:
            continue
        code, text = _flwr(["supernode", "register", str(path), CONNECTION, "--format", "json"], flwr_home)
        if code != 0 and "already in use" not in text:
            raise DeployError(f"registering {path} for site {site!r} failed: {text.splitlines()[-1] if text else code}")
    registry: dict[int, dict[str, str]] = {}
    for node, (status, key) in registered_nodes(database).items():
        if status == "unregistered":
            continue
        site = by_key.get(key)
        if site is None:
            code, text = _flwr(["supernode", "unregister", str(node), CONNECTION], flwr_home)
            logger.warning("node %d has a key (%s) that is not in %s/sites: unregistered (rule "
                           "identity.registered-key)%s", node, key or "?", certs,
                           "" if code == 0 else f"; unregister failed: {text.splitlines()[-1] if text else code}")
            continue
        registry[node] = {"site": site, "key": key}
    missing = sorted(set(sites) - {v["site"] for v in registry.values()})
    if missing:
        raise DeployError(f"site(s) {', '.join(missing)}: their key was unregistered earlier and Flower never "
                          f"accepts an unregistered key again; the partner makes a new one (`fedcurate keygen`) "
                          f"and you register it with `fedcurate register --replace`")
    return registry


def serve_superlink(certs: Path | None, host: str, port: int, state: Path, insecure: bool, *,
                    internal_port: int | None = None, proxy: bool = True, admin_networks: tuple[str, ...] = (),
                    register: bool = True, ready: Any = print) -> int:
    """Run the coordinator's side until a signal or a process exit; returns the exit code."""
    from fedcurate.common import io
    from fedcurate.server import proxy as nginx

    state = Path(state).resolve()
    for net in admin_networks:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError as err:
            raise DeployError(f"--admin-network {net!r}: not a network ({err}); e.g. 10.1.0.0/16") from err
    state.mkdir(parents=True, exist_ok=True)
    internal_port = internal_port or port + 1
    if not insecure:
        certs = check_superlink_certs(certs)
    bind, flower_port = ("127.0.0.1", internal_port) if proxy else (host, port)
    check_port_free(bind, flower_port, "SuperLink address")
    if proxy:
        check_port_free(host, port, "public address")
        nginx.nginx_bin()
    internal = f"{_dialable(bind)}:{flower_port}"
    write_connection(state, internal, Path(certs) / "ca.crt" if certs else None, insecure)
    secret = superexec_secret(state)
    registry_path = state / REGISTRY_FILE
    gates = gate_bin(state / "bin", "flwr-serverapp", "fedcurate.server.gate").parent
    env = process_env(state, gates, {PIN_ENV: AppPin.installed().to_env(), REGISTRY_ENV: str(registry_path)})
    if insecure or not (register or registry_path.is_file()):  # no keys: sites name themselves (warned)
        env.pop(REGISTRY_ENV)
    children = Children()
    try:
        link = children.start("flower-superlink", superlink_command(certs, bind, flower_port, state, insecure,
                                                                     secret), env)
        wait_for_port(_dialable(bind), flower_port, proc=link)
        children.start("flower-superexec", superexec_command(internal, Path(certs) / "ca.crt" if certs else None,
                                                             secret), env)
        registry: dict[int, dict[str, str]] = {}
        if register and not insecure:
            registry = register_sites(Path(certs), state, state / "superlink.db")  # type: ignore[arg-type]
            write_registry(registry_path, registry)
        if proxy:
            conf = nginx.write_nginx_conf(state, Path(certs), host, port, flower_port, admin_networks)
            why = nginx.check_nginx_conf(conf)
            if why:
                raise DeployError(f"nginx refused its configuration {conf}: {why}")
            front = children.start("nginx", nginx.nginx_command(conf), env)
            wait_for_port(_dialable(host), port, proc=front)
        io.write_json(state / STARTED_FILE, {"pid": os.getpid(), "started": time.time_ns()})
        doors = (f"partners reach {host}:{port} (Fleet API only, through nginx); Control and runtime APIs on "
                 f"{internal} (this host only)" if proxy else
                 f"Fleet, Control and runtime APIs on {host}:{port}, no proxy: whoever reaches it controls runs")
        ready(f"SuperLink: {doors}; {len(registry)} site key(s) registered"
              f"{': ' + ', '.join(sorted(v['site'] for v in registry.values())) if registry else ''}; "
              f"submit runs with `fedcurate launch --state {state}`")
        return children.wait()
    finally:
        children.stop()


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
            raise DeployError("give --key (your private key from `fedcurate keygen`), or --insecure")
        why = check_key(Path(key))
        if why:
            raise DeployError(why)
        if ca is None:
            raise DeployError("give --ca (the coordinator's ca.crt), or --insecure")
        why = check_ca_file(Path(ca))
        if why:
            raise DeployError(why)
    if not Path(data).exists():
        raise DeployError(f"data file {data} not found")
    why = check_superlink(superlink, ca, insecure)
    if why:
        raise DeployError(why)


# What Flower's SuperNode prints when the SuperLink turns it away, and what the partner should do about it.
REFUSALS = {
    "[code: 2001]": "the SuperLink does not know this SuperNode's key",
    "[code: 2004]": "the SuperLink refused to activate this SuperNode (its key is not, or no longer, registered)",
}


def refusal_help(key: Path | None, site: str) -> str:
    try:
        print_ = fingerprint(load_public_key(Path(f"{key}.pub"))) if key else "?"
    except Exception:  # noqa: BLE001 - only for the message
        print_ = "?"
    return (f"the coordinator has not registered key {key} ({print_}) for site {site!r}: send them {key}.pub, "
            f"read them the fingerprint over another channel, and ask them to run `fedcurate register --site "
            f"{site} --key {Path(str(key)).name}.pub` and restart `fedcurate superlink`")


def serve_supernode(superlink: str, ca: Path | None, key: Path | None, site: str, data: str,
                    run_dir: Path | None, port: int, insecure: bool, test: str | None = None,
                    pin_hashes: tuple[str, ...] = (), out: Any = None) -> int:
    """Run one site's SuperNode with the ClientApp gate until a signal or its exit; 2 when refused."""
    import threading

    out = out or sys.stdout
    preflight_supernode(superlink, ca, key, data, insecure)
    gates = Path(tempfile.mkdtemp(prefix="fedcurate-gate-"))
    gate_bin(gates, "flwr-clientapp", "fedcurate.client.gate")
    env = process_env(None, gates, {PIN_ENV: AppPin.installed(pin_hashes).to_env()})
    children = Children()
    refused: list[str] = []
    try:
        node = children.start("flower-supernode", supernode_command(superlink, ca, key, site, data, run_dir, port,
                                                                    insecure, test),
                              env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)

        def relay() -> None:
            for line in node.stdout:  # type: ignore[union-attr]
                out.write(line)
                out.flush()
                refused.extend(why for code, why in REFUSALS.items() if code in line)

        reader = threading.Thread(target=relay, daemon=True)
        reader.start()
        code = children.wait()
        reader.join(timeout=5)
        if refused:
            print(f"error: {refused[0]}: {refusal_help(key, site)}", file=sys.stderr, flush=True)
            return 2
        return code
    finally:
        children.stop()
        shutil.rmtree(gates, ignore_errors=True)


# ------------------------------------------------------------------ launch
def app_dir() -> Path:
    """The fedcurate source tree (holds the pyproject with the Flower app section)."""
    root = Path(__file__).resolve().parents[1]
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
    code, text = _flwr(launch_command(app_dir(), config_file, run_dir)[1:], flwr_home, timeout=600)
    got = _json_tail(text)
    if code != 0 or not got.get("success", False) or "run-id" not in got:
        raise DeployError(f"submitting the run failed: {got.get('error-message') or text[-500:]}")
    return int(got["run-id"])


def run_status(flwr_home: Path, run_id: int) -> tuple[str, str]:
    """('running' | 'finished:completed' | 'finished:failed' | ..., details); ('unreachable', why) when the
    SuperLink does not answer."""
    try:
        code, text = _flwr(["ls", CONNECTION, "--run-id", str(run_id), "--format", "json"], flwr_home, timeout=60)
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
    done_dir = Path(run_dir) / "server"
    reported = {p for p in phases if (done_dir / p / "DONE").is_file()}
    epoch, run_id = superlink_epoch(flwr_home), submit_run(flwr_home, config_file, run_dir)
    say(f"run {run_id} submitted; phases already done: {', '.join(p for p in phases if p in reported) or 'none'}")
    lost_since: float | None = None
    was_lost = False  # the SuperLink went away since this run was submitted (a restart ends its runs)

    def progress() -> None:
        for phase in phases:
            if phase not in reported and (done_dir / phase / "DONE").is_file():
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
            missing = [p for p in phases if not (done_dir / p / "DONE").is_file()]
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
