"""The partner runbook's deployment, attacked from outside: only partners reach the SuperLink, only the
fedcurate app runs, identities come from registered keys -- with real nginx, SuperLink and SuperNodes.

Topology (network namespaces when root and `ip netns` work, else loopback, see `netns.py`): the coordinator
on a bridge, three partners and a liar (a registered partner whose SuperNode calls itself another site) in
their own namespaces, and an outsider holding only `ca.crt` in another.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evil_apps import write_evil_app  # noqa: E402
from netns import Hosts  # noqa: E402
from procs import BIN, CLI, needs_nginx, wait_for  # noqa: E402
from procs import env as _env  # noqa: E402
from procs import free_port as _free_port  # noqa: E402
from procs import start as _start  # noqa: E402
from procs import stop as _stop  # noqa: E402

from fedcurate.common.data.loaders import write_samples
from fedcurate.simulations.partition import partition_quality_skew

SITES = ("hosp-a", "bank.b", "lab-c")  # a dotted name on purpose
PARTIES = [*SITES, "liar", "outsider"]

PROBE = r'''
import json, socket, ssl, sys, http.client
host, port, internal, ca = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = {}
ctx = ssl.create_default_context(cafile=ca)
for method, path in [("POST", "/v1/control/list-runs"), ("POST", "/v1/control/stop-run"),
                     ("POST", "/v1/control/register-node"), ("POST", "/v1/control/unregister-node"),
                     ("POST", "/v1/control/start-run"), ("POST", "/v1/runtime/acquire-task"),
                     ("POST", "/v1/runtime/pull-task-input"), ("GET", "/health"), ("GET", "/docs"),
                     ("POST", "/v1/fleet/../control/list-runs"), ("POST", "/v1/fleet/%2e%2e/control/list-runs"),
                     ("GET", "/v1/fleet/pull-messages")]:
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=20)
    try:
        conn.request(method, path, body=b"", headers={"content-type": "application/protobuf"})
        res = conn.getresponse()
        out[method + " " + path] = [res.status, res.read()[:300].decode("utf-8", "replace")]
    except Exception as err:
        out[method + " " + path] = [0, repr(err)]
    finally:
        conn.close()
try:
    socket.create_connection((host, internal), timeout=5).close()
    out["internal"] = "open"
except OSError as err:
    out["internal"] = "closed: " + str(err)
print(json.dumps(out))
'''


def _run(cmd: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _profile(home: Path, address: str, ca: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'[superlink]\ndefault = "x"\n\n[superlink.x]\naddress = "{address}"\n'
                                      f'root-certificates = "{ca}"\n')
    return _env(FLWR_HOME=str(home))


def _flwr_json(cmd: list[str], env: dict[str, str], timeout: float = 300) -> dict:
    done = _run(cmd, timeout=timeout, env=env)
    text = done.stdout
    try:
        return json.loads(text[text.find("{"):])
    except ValueError:
        return {"success": False, "error-message": (done.stdout + done.stderr)[-500:]}


@pytest.mark.integration
@needs_nginx
def test_outsiders_are_refused_and_the_registered_run_completes(tmp_path):
    with Hosts(PARTIES) as hosts:
        _attack_scenario(tmp_path, hosts)


def _attack_scenario(tmp_path: Path, hosts: Hosts) -> None:
    # ---- Prepare, exactly as the README's runbook: coordinator certs, partner keygen, coordinator register
    coord, port, internal = hosts.coordinator_ip, _free_port(), _free_port()
    certs = tmp_path / "coordinator" / "certs"
    made = _run([*CLI, "certs", "--out", str(certs), "--san", coord])
    assert made.returncode == 0, made.stderr
    partner = {p: tmp_path / "partners" / p for p in PARTIES}
    for site in [*SITES, "liar"]:
        keygen = _run(hosts.cmd(site, [*CLI, "keygen", "--site", site, "--out", str(partner[site] / "keys")]))
        assert keygen.returncode == 0, keygen.stderr
        reg = _run([*CLI, "register", "--certs", str(certs), "--site", site, "--key",
                    str(partner[site] / "keys" / f"{site}.pub")])
        assert reg.returncode == 0, reg.stderr
    evil_key = _run([*CLI, "keygen", "--site", "hosp-a", "--out", str(partner["outsider"] / "keys")])
    assert evil_key.returncode == 0
    ca = tmp_path / "partners" / "ca.crt"  # every partner and the outsider get the CA certificate
    ca.write_bytes((certs / "ca.crt").read_bytes())
    names = [*SITES, "liar"]
    rates = [0.1, 0.5, 0.9, 0.5]
    for name, part in zip(names, partition_quality_skew(len(names), 40, rates, seed=7), strict=True):
        write_samples(partner[name] / "data.jsonl", part)
    config = tmp_path / "coordinator" / "run.toml"
    config.write_text('[scoring]\nscorers = ["length", "random"]\nprimary = "random"\n[federation]\nsites = 4\n'
                      'min-sites = 3\ntrain-rounds = 1\nlocal-steps = 2\nround-timeout-s = 300\n'
                      '[model]\nmax-length = 128\n[privacy]\nsecure-aggregation = true\nscore-range = [0.0, 1.0]\n'
                      'train-noise-multiplier = 0.3\ntrain-clipping-norm = 0.5\n')
    state, run_dir = tmp_path / "coordinator" / "state", tmp_path / "coordinator" / "run"
    public = f"{coord}:{port}"
    procs: dict[str, subprocess.Popen] = {}
    try:
        # ---- Execute: the coordinator's SuperLink, the partners' SuperNodes, the run
        procs["superlink"] = _start([*CLI, "superlink", "--certs", str(certs), "--host", coord, "--port", str(port),
                                     "--internal-port", str(internal), "--state", str(state)],
                                    tmp_path / "superlink.log")
        assert wait_for("site key(s) registered", tmp_path / "superlink.log", 180, procs["superlink"]), \
            (tmp_path / "superlink.log").read_text()[-3000:]
        for site in SITES:
            procs[site] = _start(hosts.cmd(site, [*CLI, "supernode", "--superlink", public, "--ca", str(ca), "--key",
                                                  str(partner[site] / "keys" / site), "--site", site, "--data",
                                                  str(partner[site] / "data.jsonl"), "--run-dir",
                                                  str(partner[site] / "run"), "--port", str(_free_port())]),
                                 tmp_path / f"supernode-{site}.log")
        # a registered partner whose SuperNode claims to be hosp-a
        procs["liar"] = _start(hosts.cmd("liar", [*CLI, "supernode", "--superlink", public, "--ca", str(ca), "--key",
                                                  str(partner["liar"] / "keys" / "liar"), "--site", "hosp-a",
                                                  "--data", str(partner["liar"] / "data.jsonl"), "--run-dir",
                                                  str(partner["liar"] / "run"), "--port", str(_free_port())]),
                               tmp_path / "supernode-liar.log")
        procs["launch"] = _start([*CLI, "launch", "--state", str(state), "--config", str(config), "--run-dir",
                                  str(run_dir), "--poll", "2"], tmp_path / "launch.log")
        assert wait_for("submitted", tmp_path / "launch.log", 300, procs["launch"]), \
            (tmp_path / "launch.log").read_text()[-3000:]
        run_id = (tmp_path / "launch.log").read_text().split("run ", 1)[1].split()[0]

        # ---- the outsider: only ca.crt, only the network; every door it tries
        outsider = lambda cmd, **kw: _run(hosts.cmd("outsider", cmd), **kw)  # noqa: E731
        probe = tmp_path / "probe.py"
        probe.write_text(PROBE)
        doors = json.loads(outsider([sys.executable, str(probe), coord, str(port), str(internal), str(ca)]).stdout)
        flwr_out = _profile(tmp_path / "outsider-home", public, ca)
        attempts = {
            "ls": [str(BIN / "flwr"), "ls", "x", "--format", "json"],
            "stop": [str(BIN / "flwr"), "stop", run_id, "x", "--format", "json"],
            "register": [str(BIN / "flwr"), "supernode", "register", str(partner["outsider"] / "keys" / "hosp-a.pub"),
                         "x", "--format", "json"],
            "unregister": [str(BIN / "flwr"), "supernode", "unregister", "1", "x", "--format", "json"],
            "run": [str(BIN / "flwr"), "run", str(write_evil_app(tmp_path / "evil", tmp_path / "marker-outsider")),
                    "x", "--format", "json"],
        }
        refused = {name: _flwr_json(hosts.cmd("outsider", cmd), flwr_out) for name, cmd in attempts.items()}
        joiner = outsider([*CLI, "supernode", "--superlink", public, "--ca", str(ca), "--key",
                           str(partner["outsider"] / "keys" / "hosp-a"), "--site", "hosp-a", "--data",
                           str(partner["liar"] / "data.jsonl"), "--port", str(_free_port())], timeout=300)
        (tmp_path / "other").mkdir()
        other = _run([*CLI, "certs", "--out", str(tmp_path / "other" / "certs"), "--san", coord])
        assert other.returncode == 0
        wrong_ca = _run(hosts.cmd("hosp-a", [*CLI, "supernode", "--superlink", public, "--ca",
                                             str(tmp_path / "other" / "certs" / "ca.crt"), "--key",
                                             str(partner["hosp-a"] / "keys" / "hosp-a"), "--site", "hosp-a",
                                             "--data", str(partner["hosp-a"] / "data.jsonl")]))
        not_a_cert = _run(hosts.cmd("hosp-a", [*CLI, "supernode", "--superlink", public, "--ca",
                                               str(partner["hosp-a"] / "data.jsonl"), "--key",
                                               str(partner["hosp-a"] / "keys" / "hosp-a"), "--site", "hosp-a",
                                               "--data", str(partner["hosp-a"] / "data.jsonl")]))

        procs["launch"].wait(timeout=1500)
        launch_log = (tmp_path / "launch.log").read_text(errors="replace")

        # ---- a foreign app submitted on the coordinator's own host: the ServerApp gate refuses it
        local = _env(FLWR_HOME=str(state))
        evil_run = _flwr_json([str(BIN / "flwr"), "run", str(write_evil_app(tmp_path / "evil2", tmp_path /
                                                                             "marker-local")), "fedcurate",
                               "--format", "json"], local)
        assert evil_run.get("success"), evil_run
        deadline, evil_status = time.monotonic() + 300, {}
        while time.monotonic() < deadline:
            evil_status = _flwr_json([str(BIN / "flwr"), "ls", "fedcurate", "--run-id", str(evil_run["run-id"]),
                                      "--format", "json"], local)["runs"][0]
            if evil_status["status"].startswith("finished"):
                break
            time.sleep(2)
        nodes = _flwr_json([str(BIN / "flwr"), "supernode", "list", "fedcurate", "--format", "json"], local)
    finally:
        for proc in reversed(list(procs.values())):
            _stop(proc)

    # ---- Assert: the doors
    for door, answer in doors.items():
        if door == "internal":
            continue
        status, body = answer
        assert status == 403, (door, status, body)
        assert door.startswith("GET /v1/fleet") or "rule deploy.fleet-only" in body, (door, body)
    if hosts.isolated:  # Flower's own port is on the coordinator's loopback: no route from another host
        assert doors["internal"].startswith("closed"), doors["internal"]
    for name, got in refused.items():
        assert not got.get("success"), (name, got)
        assert "Forbidden" in got.get("error-message", "") or "refused by fedcurate" in got.get("error-message", ""), \
            (name, got)
    assert joiner.returncode == 2 and "has not registered key" in joiner.stderr, joiner.stdout[-1500:] + joiner.stderr
    assert wrong_ca.returncode == 2 and "does not verify with" in wrong_ca.stderr, wrong_ca.stderr
    assert not_a_cert.returncode == 2 and "not a PEM certificate" in not_a_cert.stderr, not_a_cert.stderr
    assert "Traceback" not in wrong_ca.stderr + not_a_cert.stderr

    # ---- Assert: the legitimate run completed with the three registered sites, the liar dropped by rule
    assert procs["launch"].returncode == 0, launch_log[-3000:]
    assert "[8/8] evaluate done" in launch_log or "completed" in launch_log
    select = json.loads((run_dir / "server" / "select" / "summary.json").read_text())
    assert set(select["sites"]) == set(SITES) and select["kept"] == 60, select
    prepare = json.loads((run_dir / "server" / "prepare" / "summary.json").read_text())
    liar = [e for e in prepare["exclusions"] if e["site"] == "liar"]
    assert liar and "identity.registered-key" in liar[0]["reason"] and "'hosp-a'" in liar[0]["reason"], prepare
    identity = json.loads((run_dir / "stats" / "identity.json").read_text())
    assert sorted(identity["sites"].values()) == sorted([*SITES, "liar"])
    threshold = json.loads((run_dir / "server" / "threshold" / "summary.json").read_text())
    assert threshold["secure_aggregation"] and sum(threshold["histogram"]["counts"]) == 120
    assert json.loads((run_dir / "stats" / "privacy.json").read_text())["training"]["rounds"] == 1
    assert len(nodes["nodes"]) == 4, nodes  # the outsider registered nothing, unregistered nobody

    # ---- Assert: no code of a foreign app ran anywhere
    assert evil_status["status"] == "finished:failed" and "app refused (rule app.name)" in \
        evil_status["status-details"], evil_status
    assert not list(tmp_path.glob("marker-*")), list(tmp_path.glob("marker-*"))
