"""Deployment on loopback: the SuperLink behind its proxy, SuperNodes, faults (a lost site, a killed wrapper,
failed and stopped runs). The full runbook under attack is `test_attacks.py`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import CLI, needs_nginx, wait_for  # noqa: E402
from procs import free_port as _free_port  # noqa: E402
from procs import start as _start  # noqa: E402
from procs import stop as _stop  # noqa: E402

from fedcurate.common.data.loaders import write_samples
from fedcurate.server.certs import make_certs
from fedcurate.server.deploy import check_superlink
from fedcurate.simulations.partition import partition_quality_skew

INTERNAL: dict[int, int] = {}


def _setup(tmp_path: Path, sites: str, min_sites: int, timeout_s: float, seed: int, extra: str = ""
           ) -> tuple[Path, int, Path]:
    """Certificates for `sites`, a data file per site (noise rising from 0.1 to 0.9), a small run config;
    returns (certs dir, SuperLink port, config path)."""
    certs = tmp_path / "certs"
    make_certs(certs, ["localhost"], list(sites), demo=True)  # partner keys in tmp_path/demo-keys
    rates = [0.1 + 0.8 * i / max(1, len(sites) - 1) for i in range(len(sites))]
    for site, part in zip(sites, partition_quality_skew(len(sites), 40, rates, seed=seed), strict=True):
        write_samples(tmp_path / "data" / f"{site}.jsonl", part)
    config = tmp_path / "run.toml"
    config.write_text(f'[scoring]\nscorers = ["length", "random"]\n[federation]\nsites = {len(sites)}\n'
                      f'min-sites = {min_sites}\ntrain-rounds = 1\nlocal-steps = 2\nround-timeout-s = {timeout_s}\n'
                      '[model]\nmax-length = 128\n' + extra)
    return certs, _free_port(), config


def _superlink(tmp_path: Path, certs: Path, port: int, log: str = "superlink.log") -> subprocess.Popen:
    """`fedcurate superlink` on `port`; returns once it has registered the site keys."""
    internal = INTERNAL.setdefault(port, _free_port())  # Flower's own port (loopback); PORT is nginx's
    proc = _start([*CLI, "superlink", "--certs", str(certs), "--port", str(port), "--internal-port", str(internal),
                   "--state", str(tmp_path / "state")], tmp_path / log)
    assert wait_for("site key(s) registered", tmp_path / log, 90, proc), (tmp_path / log).read_text()[-3000:]
    return proc


def _supernodes(tmp_path: Path, certs: Path, address: str, sites: str) -> dict[str, subprocess.Popen]:
    """One `fedcurate supernode` per site, each on its own Runtime API port, data from tmp_path/data/<site>.jsonl."""
    return {site: _start([*CLI, "supernode", "--superlink", address, "--ca", str(certs / "ca.crt"),
                          "--key", str(certs.parent / "demo-keys" / site), "--site", site, "--data",
                          str(tmp_path / "data" / f"{site}.jsonl"), "--run-dir",
                          str(tmp_path / f"site-{site}"), "--port", str(_free_port())],
                         tmp_path / f"supernode-{site}.log") for site in sites}


def test_supernode_preflight_names_the_bad_input(tmp_path):
    make_certs(tmp_path / "certs", ["localhost"], ["a"], demo=True)
    data = tmp_path / "a.jsonl"
    data.write_text('{"instruction": "x", "output": "y"}\n')
    base = [*CLI, "supernode", "--site", "a", "--data", str(data), "--ca", str(tmp_path / "certs" / "ca.crt")]
    bad_key = subprocess.run([*base, "--superlink", "127.0.0.1:1", "--key", str(tmp_path / "certs" / "ca.crt")],
                             capture_output=True, text=True, timeout=60)
    assert bad_key.returncode == 2 and "not an OpenSSH private key" in bad_key.stderr
    no_port = subprocess.run([*base, "--superlink", "nohost", "--key", str(tmp_path / "demo-keys" / "a")],
                             capture_output=True, text=True, timeout=60)
    assert no_port.returncode == 2 and "expected HOST:PORT" in no_port.stderr
    (tmp_path / "not-a-cert").write_text("hello\n")
    bad_ca = subprocess.run([*base[:-1], str(tmp_path / "not-a-cert"), "--superlink", "127.0.0.1:1", "--key",
                             str(tmp_path / "demo-keys" / "a")], capture_output=True, text=True, timeout=60)
    assert bad_ca.returncode == 2 and "not-a-cert: not a PEM certificate" in bad_ca.stderr, bad_ca.stderr
    assert "Traceback" not in bad_ca.stderr
    closed = check_superlink(f"127.0.0.1:{_free_port()}", tmp_path / "certs" / "ca.crt", insecure=False)
    assert "cannot connect" in closed


ROUND_TIMEOUT_S = 150.0


@pytest.mark.integration
@needs_nginx
def test_a_supernode_killed_mid_run_is_dropped_and_the_run_completes_with_the_others(tmp_path):
    # Prepare: 3 registered sites, min-sites 2, a round timeout that a live site meets even on a loaded machine
    # (a site's first reply starts a ClientApp process: 60-80 s were seen at a load of 8 on 2 cores)
    certs, port, config = _setup(tmp_path, "abc", min_sites=2, timeout_s=ROUND_TIMEOUT_S, seed=2,
                                 extra='[run]\nstop-after = "select"\n')
    address = f"127.0.0.1:{port}"
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["link"] = _superlink(tmp_path, certs, port)
        procs.update(_supernodes(tmp_path, certs, address, "abc"))
        launch = _start([*CLI, "launch", "--state", str(tmp_path / "state"), "--config", str(config),
                         "--run-dir", str(tmp_path / "run")], tmp_path / "launch.log")
        procs["launch"] = launch

        # Execute: kill site c (SuperNode and its ClientApp processes) once prepare is done
        prepared = tmp_path / "run" / "server" / "prepare" / "DONE"
        deadline = time.monotonic() + 300
        while not prepared.exists() and time.monotonic() < deadline and launch.poll() is None:
            time.sleep(0.2)
        assert prepared.exists(), (tmp_path / "launch.log").read_text()[-3000:]
        os.killpg(procs["c"].pid, signal.SIGKILL)
        launch.wait(timeout=900)
    finally:
        for proc in reversed(list(procs.values())):
            _stop(proc)

    # Assert
    assert launch.returncode == 0, (tmp_path / "launch.log").read_text()[-3000:]
    run = tmp_path / "run"
    assert (run / "server" / "select" / "DONE").exists() and not (run / "server" / "train" / "DONE").exists()
    select = json.loads((run / "server" / "select" / "summary.json").read_text())
    assert set(select["sites"]) == {"a", "b"}
    lost = [e for p in ("dynamics", "threshold") for e in
            json.loads((run / "server" / p / "summary.json").read_text())["exclusions"]]
    # lost once, named by its key: by the round timeout, or earlier by the SuperLink's missed-heartbeat reply
    assert [e["site"] for e in lost] == ["c"] and "dropped from later rounds" in lost[0]["reason"]
    assert f"no reply within {ROUND_TIMEOUT_S:.0f} s" in lost[0]["reason"] or "Node Unavailable" in lost[0]["reason"]


def _pids(log: Path) -> dict[str, int]:
    """{process: pid} from the wrapper's "started NAME (pid N)" lines."""
    found = re.findall(r"started (\S+) \(pid (\d+)\)", log.read_text(errors="replace"))
    return {name: int(pid) for name, pid in found}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.integration
@needs_nginx
def test_a_superlink_killed_with_its_wrapper_leaves_no_process_and_the_secure_run_resumes_by_itself(tmp_path):
    # Prepare: 2 sites, secure aggregation (SecAgg+ needs the node -> site map after the restart)
    certs, port, config = _setup(tmp_path, "ab", min_sites=2, timeout_s=120.0, seed=3, extra=(
        '[privacy]\nsecure-aggregation = true\nscore-range = [0.0, 1.0]\n[run]\nstop-after = "select"\n'))
    config.write_text(config.read_text().replace('[scoring]\n', '[scoring]\nprimary = "random"\n'))
    address = f"127.0.0.1:{port}"
    curate_done = tmp_path / "run" / "server" / "curate" / "DONE"
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["link"] = _superlink(tmp_path, certs, port, "superlink-1.log")
        procs.update(_supernodes(tmp_path, certs, address, "ab"))
        procs["launch"] = _start([*CLI, "launch", "--state", str(tmp_path / "state"), "--config", str(config),
                                  "--run-dir", str(tmp_path / "run"), "--poll", "1"], tmp_path / "launch.log")

        # Execute: once the secure curate phase is done, SIGKILL the wrapper alone (not its process group)
        deadline = time.monotonic() + 300
        while not curate_done.exists() and time.monotonic() < deadline and procs["launch"].poll() is None:
            time.sleep(0.05)
        assert curate_done.exists(), (tmp_path / "launch.log").read_text()[-3000:]
        stamp = curate_done.stat().st_mtime_ns
        children = _pids(tmp_path / "superlink-1.log")
        os.kill(procs["link"].pid, signal.SIGKILL)
        procs["link"].wait()
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in children.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = {name: pid for name, pid in children.items() if _alive(pid)}
        procs["link"] = _superlink(tmp_path, certs, port, "superlink-2.log")  # same state: keys and registry kept
        procs["launch"].wait(timeout=900)
    finally:
        for proc in reversed(list(procs.values())):
            _stop(proc)

    # Assert
    assert set(children) == {"flower-superlink", "flower-superexec", "nginx"}, children
    assert survivors == {}, f"outlived their wrapper: {survivors}"
    log = (tmp_path / "launch.log").read_text(errors="replace")
    assert procs["launch"].returncode == 0, log[-3000:]
    assert "resubmitted as run" in log, log[-3000:]  # nobody re-typed launch
    run = tmp_path / "run" / "server"
    assert (run / "curate" / "DONE").stat().st_mtime_ns == stamp  # finished phases were not redone
    assert (run / "select" / "DONE").exists() and not (run / "train").exists()  # run.stop-after = "select"
    threshold = json.loads((run / "threshold" / "summary.json").read_text())
    assert threshold["secure_aggregation"] and sum(threshold["histogram"]["counts"]) == 80
    assert set(json.loads((run / "select" / "summary.json").read_text())["sites"]) == {"a", "b"}


@pytest.mark.integration
@needs_nginx
def test_launch_exits_non_zero_when_the_run_fails_is_stopped_or_loses_the_superlink(tmp_path):
    # Prepare: a SuperLink with no SuperNode at all
    certs, port, config = _setup(tmp_path, "ab", min_sites=2, timeout_s=60.0, seed=4)
    failing = tmp_path / "failing.toml"
    failing.write_text(config.read_text().replace("[federation]\n", "[federation]\nconnect-timeout-s = 1\n"))
    waiting = tmp_path / "waiting.toml"
    waiting.write_text(config.read_text().replace("[federation]\n", "[federation]\nconnect-timeout-s = 3600\n"))
    launch = [*CLI, "launch", "--state", str(tmp_path / "state"), "--poll", "1"]
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["link"] = _superlink(tmp_path, certs, port)

        # Execute: a run that fails (no site connects), one stopped by the coordinator, one losing the SuperLink
        failed = subprocess.run([*launch, "--config", str(failing), "--run-dir", str(tmp_path / "r1")],
                                capture_output=True, text=True, timeout=600)
        procs["stopped"] = _start([*launch, "--config", str(waiting), "--run-dir", str(tmp_path / "r2")],
                                  tmp_path / "stopped.log")
        assert wait_for("submitted", tmp_path / "stopped.log", 300, procs["stopped"])
        run_id = (tmp_path / "stopped.log").read_text().split("run ", 1)[1].split()[0]
        stop = subprocess.run([str(Path(sys.executable).with_name("flwr")), "stop", run_id, "fedcurate"],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "FLWR_HOME": str(tmp_path / "state")})
        assert stop.returncode == 0, stop.stdout + stop.stderr
        procs["stopped"].wait(timeout=120)
        procs["lost"] = _start([*launch, "--config", str(waiting), "--run-dir", str(tmp_path / "r3"),
                                "--reconnect-timeout", "5"], tmp_path / "lost.log")
        assert wait_for("submitted", tmp_path / "lost.log", 300, procs["lost"])
        _stop(procs.pop("link"))
        procs["lost"].wait(timeout=300)
    finally:
        for proc in reversed(list(procs.values())):
            _stop(proc)

    # Assert
    assert failed.returncode == 1 and "finished:failed" in failed.stdout, failed.stdout[-2000:] + failed.stderr[-2000:]
    assert "only 0 of 2 sites connected" in failed.stdout, failed.stdout[-2000:]
    assert procs["stopped"].returncode == 3, (tmp_path / "stopped.log").read_text()[-2000:]
    assert "was stopped" in (tmp_path / "stopped.log").read_text()
    assert procs["lost"].returncode == 4, (tmp_path / "lost.log").read_text()[-2000:]
    assert "lost the SuperLink" in (tmp_path / "lost.log").read_text()
