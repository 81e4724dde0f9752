"""The coordinator's side: Flower's SuperLink (behind nginx) and the ServerApp's SuperExec, with the
partners' keys registered.

    fedcurate superlink --certs certs --host 0.0.0.0 --port 8000 --state /srv/fedcurate

    code = serve_superlink(Path("certs"), "0.0.0.0", 8000, Path("/srv/fedcurate"), insecure=False)
    registry = register_sites(Path("certs"), state, state / "superlink.db")   # {node id: {"site", "key"}}

What faces the partners' network is nginx on HOST:PORT, forwarding only the Fleet API (`server/proxy.py`);
Flower's SuperLink listens on 127.0.0.1:INTERNAL and its Control and runtime APIs are reachable only from
the coordinator's host. `register_sites` registers every public key in `<certs>/sites/*.pub` with Flower,
maps node ids to site names from the SuperLink's own node table (`server/identity.py`) and unregisters any
node whose key is not there; `serve_superlink` then starts the ServerApp's SuperExec with an
authentication secret and the gated `flwr-serverapp` (`server/gate.py`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

from fedcurate.common.app_pin import PIN_ENV, AppPin
from fedcurate.server.certs import fingerprint, load_public_key, registered_sites
from fedcurate.server.deploy.processes import (
    CONNECTION,
    STARTED_FILE,
    Children,
    DeployError,
    check_port_free,
    flower_bin,
    flwr_cli,
    gate_bin,
    process_env,
    wait_for_port,
)
from fedcurate.server.identity import REGISTRY_ENV, REGISTRY_FILE, write_registry

logger = logging.getLogger(__name__)


def _dialable(host: str) -> str:
    """The address to dial a server bound to `host` from this host (a wildcard bind answers on loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


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
        code, text = flwr_cli(["supernode", "register", str(path), CONNECTION, "--format", "json"], flwr_home)
        if code != 0 and "already in use" not in text:
            raise DeployError(f"registering {path} for site {site!r} failed: {text.splitlines()[-1] if text else code}")
    registry: dict[int, dict[str, str]] = {}
    for node, (status, key) in registered_nodes(database).items():
        if status == "unregistered":
            continue
        site = by_key.get(key)
        if site is None:
            code, text = flwr_cli(["supernode", "unregister", str(node), CONNECTION], flwr_home)
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
