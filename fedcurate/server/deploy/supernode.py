"""A partner's side: Flower's SuperNode for one site, after every check it can make locally, with each
ClientApp run through the gate.

    fedcurate supernode --superlink superlink.example.org:8000 --ca ca.crt --key keys/hospital-a \\
                        --site hospital-a --data /data/a.jsonl

    preflight_supernode("superlink.example.org:8000", ca, key, "/data/a.jsonl", insecure=False)  # DeployError
    code = serve_supernode("superlink.example.org:8000", ca, key, "hospital-a", "/data/a.jsonl", run_dir,
                           9094, insecure=False)   # 2 when the SuperLink refuses the key

The preflight checks the key file, the CA file, that the address resolves and answers, and that the
SuperLink's certificate verifies against the CA for that host (`check_superlink`). Every ClientApp runs
through the gate (`client/gate.py`): only the fedcurate installed at the site runs there. A refusal by the
SuperLink (an unknown or unregistered key) is reported with what the partner should do (`refusal_help`).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from fedcurate.common.app_pin import PIN_ENV, AppPin
from fedcurate.server.certs import check_ca_file, check_key, fingerprint, load_public_key
from fedcurate.server.deploy.processes import (
    Children,
    DeployError,
    flower_bin,
    gate_bin,
    process_env,
    split_address,
)


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
