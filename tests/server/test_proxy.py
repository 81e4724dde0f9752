"""The nginx configuration `fedcurate superlink` writes: valid for nginx itself, Fleet calls only, admin networks
opt-in, nothing under system paths."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import needs_nginx  # noqa: E402

from fedcurate.server.certs import make_certs
from fedcurate.server.proxy import FLEET_CALLS, check_nginx_conf, nginx_conf, write_nginx_conf


def test_only_the_fleet_calls_are_forwarded_and_everything_else_is_refused_by_rule(tmp_path):
    text = nginx_conf(tmp_path / "state", tmp_path / "certs", "0.0.0.0", 8000, 8001)
    forwarded = re.search(r"location ~ \^/v1/fleet/\(([^)]*)\)\$", text)
    assert forwarded and set(forwarded.group(1).split("|")) == set(FLEET_CALLS) and len(FLEET_CALLS) == 12
    assert text.count("proxy_pass") == 1 and "/v1/control" not in text and "/v1/runtime" not in text
    assert "return 403" in text and "rule deploy.fleet-only" in text
    assert "limit_except POST" in text and "proxy_ssl_verify on" in text and "$remote_addr" in text
    assert "/var/" not in text and "/etc/" not in text  # pid, logs and temp files under the state directory
    admin = nginx_conf(tmp_path / "state", tmp_path / "certs", "0.0.0.0", 8000, 8001, ("10.1.0.0/16",))
    assert "location /v1/control/ {" in admin and "allow 10.1.0.0/16;" in admin and "deny all;" in admin
    assert "listen [::]:8000 ssl;" in nginx_conf(tmp_path, tmp_path, "::", 8000, 8001)


@needs_nginx
def test_nginx_accepts_the_configuration(tmp_path):
    make_certs(tmp_path / "certs", ["localhost"])
    for networks in ((), ("10.1.0.0/16", "192.168.7.0/24")):
        conf = write_nginx_conf(tmp_path / "state", tmp_path / "certs", "127.0.0.1", 18443, 18444, networks)
        assert check_nginx_conf(conf) == ""
    bad = write_nginx_conf(tmp_path / "bad", tmp_path / "certs", "127.0.0.1", 18443, 18444, ("not a network",))
    assert "not a network" in check_nginx_conf(bad) or "invalid" in check_nginx_conf(bad)
