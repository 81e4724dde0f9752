"""The one door partners see: nginx in front of the SuperLink, forwarding only the Fleet API.

Flower 1.41 serves the Fleet API (SuperNodes), the Control API (`flwr run`, `flwr stop`, `flwr supernode
register`, ...) and the runtime API (ServerApp processes) on one HTTPS port, and its Control API has no
login: whoever completes TLS -- every partner holds `ca.crt` -- could list, stop and submit runs and register
nodes. So `fedcurate superlink` binds Flower to loopback and puts nginx on the public address:

    public  HOST:PORT (TLS, the SuperLink certificate)   POST /v1/fleet/<the 12 SuperNode calls> -> SuperLink
                                                          everything else -> 403 (rule deploy.fleet-only)
    loopback 127.0.0.1:INTERNAL (TLS)                     Flower itself: Fleet + Control + runtime, for the
                                                          coordinator's own `flwr`/`fedcurate launch` and
                                                          the ServerApp's SuperExec (runtime needs its secret)

`admin_networks` (CIDRs the coordinator names, e.g. an operations subnet) may also reach the Control API
through nginx; nobody else can.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fedcurate.common import io

# Every path a SuperNode calls (flwr/supernode/fleet_http_client.py in flwr 1.41), POST only.
FLEET_CALLS = ("register-node", "activate-node", "deactivate-node", "unregister-node", "send-node-heartbeat",
               "pull-messages", "push-messages", "get-run", "get-fab", "push-object", "pull-object",
               "confirm-message-received")
RULE = "deploy.fleet-only"


def nginx_bin() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if Path(p).is_file()), None)
    if not found:
        raise FileNotFoundError("nginx not found: install it (Debian/Ubuntu: apt-get install nginx-light) -- it is "
                                "the only process partners reach; or pass --no-proxy on a closed test network")
    return found


def _listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def nginx_conf(state: Path, certs: Path, host: str, port: int, internal_port: int,
               admin_networks: tuple[str, ...] = ()) -> str:
    """The nginx configuration (no system paths: pid, logs and temp files under `state/proxy`)."""
    root = (Path(state) / "proxy").resolve()
    certs = Path(certs).resolve()
    upstream = f"""
            proxy_pass https://flwr_superlink$uri;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host localhost;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {certs / 'ca.crt'};
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
            proxy_connect_timeout 10s;
            proxy_send_timeout 600s;
            proxy_read_timeout 600s;
            proxy_next_upstream off;
            proxy_request_buffering off;
            proxy_buffering off;"""
    admin = ""
    if admin_networks:
        allow = "\n".join(f"            allow {net};" for net in admin_networks)
        admin = f"""
        location /v1/control/ {{
{allow}
            deny all;{upstream}
        }}"""
    return f"""# written by `fedcurate superlink`; partners reach only the Fleet API (rule {RULE})
worker_processes 1;
daemon off;
pid {root / 'nginx.pid'};
error_log {root / 'error.log'} warn;
events {{ worker_connections 1024; }}
http {{
    access_log {root / 'access.log'};
    client_body_temp_path {root / 'tmp' / 'body'};
    proxy_temp_path {root / 'tmp' / 'proxy'};
    fastcgi_temp_path {root / 'tmp' / 'fastcgi'};
    uwsgi_temp_path {root / 'tmp' / 'uwsgi'};
    scgi_temp_path {root / 'tmp' / 'scgi'};
    server_tokens off;
    upstream flwr_superlink {{
        server 127.0.0.1:{internal_port};
        keepalive 16;
    }}
    server {{
        listen {_listen(host, port)} ssl;
        server_name _;
        ssl_certificate {certs / 'server.pem'};
        ssl_certificate_key {certs / 'server.key'};
        ssl_protocols TLSv1.2 TLSv1.3;
        client_max_body_size 64m;
        location ~ ^/v1/fleet/({'|'.join(FLEET_CALLS)})$ {{
            limit_except POST {{ deny all; }}{upstream}
        }}{admin}
        location / {{
            default_type application/json;
            return 403 '{{"detail":"refused by fedcurate (rule {RULE}): only the Fleet API is served on this port"}}\\n';
        }}
    }}
}}
"""


def write_nginx_conf(state: Path, certs: Path, host: str, port: int, internal_port: int,
                     admin_networks: tuple[str, ...] = ()) -> Path:
    root = Path(state) / "proxy"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    path = root / "nginx.conf"
    io.write_text(path, nginx_conf(state, certs, host, port, internal_port, admin_networks))
    return path


def nginx_command(conf: Path) -> list[str]:
    root = Path(conf).resolve().parent
    return [nginx_bin(), "-c", str(Path(conf).resolve()), "-p", str(root), "-e", str(root / "error.log")]


def check_nginx_conf(conf: Path) -> str:
    """'' when `nginx -t` accepts the configuration, else nginx's complaint."""
    import subprocess

    done = subprocess.run([*nginx_command(conf), "-t"], capture_output=True, text=True, timeout=60)
    return "" if done.returncode == 0 else (done.stderr or done.stdout).strip()
