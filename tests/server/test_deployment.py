"""A real deployment on loopback: `fedcurate certs`, a TLS + authentication SuperLink, SuperNodes, a run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedcurate.common.data.loaders import write_samples
from fedcurate.server.certs import check_key, make_certs
from fedcurate.server.deploy import check_superlink
from fedcurate.simulations.partition import partition_quality_skew

CLI = [sys.executable, "-m", "fedcurate.common.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    handle = open(log, "w")  # noqa: SIM115 - closed when the process is reaped
    return subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"})


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_for(text: str, log: Path, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return True
        if proc is not None and proc.poll() is not None:
            return text in log.read_text(errors="replace")
        time.sleep(0.3)
    return False


def _setup(tmp_path: Path, sites: str, min_sites: int, timeout_s: float, seed: int, extra: str = ""
           ) -> tuple[Path, int, Path]:
    """Certificates for `sites`, a data file per site (noise rising from 0.1 to 0.9), a small run config;
    returns (certs dir, SuperLink port, config path)."""
    certs = tmp_path / "certs"
    make_certs(certs, ["localhost"], list(sites))
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
    proc = _start([*CLI, "superlink", "--certs", str(certs), "--port", str(port), "--state", str(tmp_path / "state")],
                  tmp_path / log)
    assert _wait_for("site key(s) registered", tmp_path / log, 90, proc), (tmp_path / log).read_text()[-3000:]
    return proc


def _supernodes(tmp_path: Path, certs: Path, address: str, sites: str) -> dict[str, subprocess.Popen]:
    """One `fedcurate supernode` per site, each on its own Runtime API port, data from tmp_path/data/<site>.jsonl."""
    return {site: _start([*CLI, "supernode", "--superlink", address, "--ca", str(certs / "ca.crt"),
                          "--key", str(certs / "sites" / site), "--site", site, "--data",
                          str(tmp_path / "data" / f"{site}.jsonl"), "--port", str(_free_port())],
                         tmp_path / f"supernode-{site}.log") for site in sites}


def test_certs_are_valid_and_private_keys_owner_only(tmp_path):
    made = make_certs(tmp_path, ["superlink.example.org", "203.0.113.5"], ["a", "b"])
    assert check_key(made["site_keys"]["a"]) == ""
    assert oct(os.stat(made["site_keys"]["a"]).st_mode & 0o777) == "0o600"
    assert oct(os.stat(tmp_path / "ca.key").st_mode & 0o777) == "0o600"
    assert oct(os.stat(tmp_path / "server.key").st_mode & 0o777) == "0o600"
    ca_before = (tmp_path / "ca.crt").read_bytes()
    make_certs(tmp_path, ["superlink.example.org"], ["c"])  # adding a site keeps the CA and other keys
    assert (tmp_path / "ca.crt").read_bytes() == ca_before and (tmp_path / "sites" / "c.pub").exists()
    assert "not an OpenSSH private key" in check_key(tmp_path / "ca.crt")


@pytest.mark.integration
def test_tls_authenticated_deployment_runs_the_pipeline_and_refuses_strangers(tmp_path):
    # Prepare: certificates for 3 registered sites with data, a key nobody registered, another CA
    # (with SecAgg+ of the histograms and site-level DP on the adapter rounds: every protection at once)
    certs, port, config = _setup(tmp_path, "abc", min_sites=3, timeout_s=300.0, seed=1, extra=(
        '[privacy]\nsecure-aggregation = true\nscore-range = [0.0, 1.0]\ntrain-noise-multiplier = 0.3\n'
        'train-clipping-norm = 0.5\n'))
    config.write_text(config.read_text().replace('[scoring]\n', '[scoring]\nprimary = "random"\n'))
    other = tmp_path / "other-ca"
    make_certs(other, ["localhost"], ["x"])
    unregistered = make_certs(tmp_path / "stranger", ["localhost"], ["d"])["site_keys"]["d"]
    address = f"127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    try:
        # Execute: the SuperLink (registers certs/sites/*.pub), then the SuperNodes
        procs.append(_superlink(tmp_path, certs, port))
        wrong_ca = subprocess.run([*CLI, "supernode", "--superlink", address, "--ca", str(other / "ca.crt"),
                                   "--key", str(certs / "sites" / "a"), "--site", "a", "--data",
                                   str(tmp_path / "data" / "a.jsonl")], capture_output=True, text=True, timeout=60)
        procs += list(_supernodes(tmp_path, certs, address, "abc").values())
        stranger = _start([*CLI, "supernode", "--superlink", address, "--ca", str(certs / "ca.crt"),
                           "--key", str(unregistered), "--site", "d", "--data", str(tmp_path / "data" / "a.jsonl"),
                           "--port", str(_free_port())], tmp_path / "supernode-d.log")
        procs.append(stranger)
        launched = subprocess.run([*CLI, "launch", "--state", str(tmp_path / "state"), "--config", str(config),
                                   "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=900,
                                  env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"})
        stranger_log = (tmp_path / "supernode-d.log").read_text(errors="replace")
    finally:
        for proc in reversed(procs):
            _stop(proc)

    # Assert: the run went through every phase over the 3 registered sites
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    run = tmp_path / "run"
    assert all((run / "server" / p / "DONE").exists() for p in ("prepare", "threshold", "select", "train"))
    select = json.loads((run / "server" / "select" / "summary.json").read_text())
    assert set(select["sites"]) == {"a", "b", "c"} and select["kept"] == 60
    threshold = json.loads((run / "server" / "threshold" / "summary.json").read_text())
    assert threshold["secure_aggregation"] and sum(threshold["histogram"]["counts"]) == 120
    assert json.loads((run / "stats" / "privacy.json").read_text())["training"]["rounds"] == 1
    # the wrong CA is caught before Flower starts, with a message naming the CA file
    assert wrong_ca.returncode == 2 and "does not verify with" in wrong_ca.stderr and "other-ca" in wrong_ca.stderr
    # the unregistered key never joined
    assert "d" not in select["sites"]
    assert any(word in stranger_log.lower() for word in ("denied", "not registered", "unauthenticated",
                                                         "permission", "failed")), stranger_log[-2000:]


def test_supernode_preflight_names_the_bad_input(tmp_path):
    make_certs(tmp_path / "certs", ["localhost"], ["a"])
    data = tmp_path / "a.jsonl"
    data.write_text('{"instruction": "x", "output": "y"}\n')
    base = [*CLI, "supernode", "--site", "a", "--data", str(data), "--ca", str(tmp_path / "certs" / "ca.crt")]
    bad_key = subprocess.run([*base, "--superlink", "127.0.0.1:1", "--key", str(tmp_path / "certs" / "ca.crt")],
                             capture_output=True, text=True, timeout=60)
    assert bad_key.returncode == 2 and "not an OpenSSH private key" in bad_key.stderr
    no_port = subprocess.run([*base, "--superlink", "nohost", "--key", str(tmp_path / "certs" / "sites" / "a")],
                             capture_output=True, text=True, timeout=60)
    assert no_port.returncode == 2 and "expected HOST:PORT" in no_port.stderr
    closed = check_superlink(f"127.0.0.1:{_free_port()}", tmp_path / "certs" / "ca.crt", insecure=False)
    assert "cannot connect" in closed


@pytest.mark.integration
def test_a_supernode_killed_mid_run_is_dropped_and_the_run_completes_with_the_others(tmp_path):
    # Prepare: 3 registered sites, min-sites 2, short round timeout
    certs, port, config = _setup(tmp_path, "abc", min_sites=2, timeout_s=30.0, seed=2)
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
    assert (run / "server" / "evaluate" / "DONE").exists() or (run / "server" / "train" / "DONE").exists()
    select = json.loads((run / "server" / "select" / "summary.json").read_text())
    assert set(select["sites"]) == {"a", "b"}
    lost = [e for p in ("dynamics", "threshold") for e in
            json.loads((run / "server" / p / "summary.json").read_text())["exclusions"]]
    assert [e["site"] for e in lost] == ["c"] and "no reply within 30 s" in lost[0]["reason"]


@pytest.mark.integration
def test_a_restarted_superlink_resumes_the_run_after_the_last_finished_phase(tmp_path):
    # Prepare
    certs, port, config = _setup(tmp_path, "ab", min_sites=2, timeout_s=120.0, seed=3)
    address = f"127.0.0.1:{port}"
    launch_cmd = [*CLI, "launch", "--state", str(tmp_path / "state"), "--config", str(config),
                  "--run-dir", str(tmp_path / "run")]
    threshold_done = tmp_path / "run" / "server" / "threshold" / "DONE"
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["link"] = _superlink(tmp_path, certs, port, "superlink-1.log")
        procs.update(_supernodes(tmp_path, certs, address, "ab"))
        procs["launch-1"] = _start(launch_cmd, tmp_path / "launch-1.log")

        # Execute: kill the SuperLink as soon as the threshold phase is done, restart it, launch again
        deadline = time.monotonic() + 300
        while not threshold_done.exists() and time.monotonic() < deadline and procs["launch-1"].poll() is None:
            time.sleep(0.05)
        assert threshold_done.exists(), (tmp_path / "launch-1.log").read_text()[-3000:]
        stamps = {p: (tmp_path / "run" / "server" / p / "DONE").stat().st_mtime_ns
                  for p in ("prepare", "dynamics", "threshold")}
        os.killpg(procs["link"].pid, signal.SIGKILL)
        killed_at = time.time_ns()
        procs["link"].wait()
        procs["launch-1"].wait(timeout=120)
        procs["link"] = _superlink(tmp_path, certs, port, "superlink-2.log")  # same database: keys kept
        relaunch = subprocess.run(launch_cmd, capture_output=True, text=True, timeout=900)
    finally:
        for proc in reversed(list(procs.values())):
            _stop(proc)

    # Assert
    log = relaunch.stdout + relaunch.stderr
    assert relaunch.returncode == 0, log[-3000:]
    for phase, stamp in stamps.items():  # finished phases were not redone
        assert (tmp_path / "run" / "server" / phase / "DONE").stat().st_mtime_ns == stamp
    assert (tmp_path / "run" / "server" / "select" / "DONE").stat().st_mtime_ns > killed_at  # done after restart
    assert (tmp_path / "run" / "server" / "evaluate" / "DONE").exists()
    assert set(json.loads((tmp_path / "run" / "server" / "select" / "summary.json").read_text())["sites"]) == {"a", "b"}
