"""Hosts for deployment tests: one network namespace per party on a bridge, or plain loopback.

    with Hosts(["site-a", "outsider"]) as hosts:
        hosts.coordinator_ip                  # where the SuperLink's public port listens (the bridge)
        hosts.run("outsider", cmd, ...)       # `ip netns exec <ns> cmd`, or cmd itself on loopback
        hosts.isolated                        # False on loopback: every party shares the coordinator's host

Namespaces need root and `ip netns`; without them every party is a process on 127.0.0.1 and the tests say
which checks that leaves out (an outsider can then reach the coordinator's loopback by definition).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def can_isolate() -> bool:
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False
    probe = f"fcprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
        return True
    except (subprocess.CalledProcessError, OSError):
        return False


class Hosts:
    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self.isolated = can_isolate()
        tag = os.getpid() % 10000
        self.prefix = f"fc{tag}"
        self.subnet = f"10.{200 + tag % 50}.{tag % 250}"
        self.coordinator_ip = f"{self.subnet}.1" if self.isolated else "127.0.0.1"
        self.ns = {name: f"{self.prefix}-{i}" for i, name in enumerate(self.names)}
        self.ip_of = {name: f"{self.subnet}.{10 + i}" if self.isolated else "127.0.0.1"
                      for i, name in enumerate(self.names)}

    def __enter__(self) -> Hosts:
        if not self.isolated:
            return self
        bridge = f"{self.prefix}br"
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{self.coordinator_ip}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for i, name in enumerate(self.names):
            ns, outer = self.ns[name], f"{self.prefix}v{i}"
            _ip("netns", "add", ns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", outer, "master", bridge)
            _ip("link", "set", outer, "up")
            _ip("-n", ns, "addr", "add", f"{self.ip_of[name]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.isolated:
            return
        for ns in self.ns.values():
            for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except OSError:
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", f"{self.prefix}br"], capture_output=True)

    def cmd(self, name: str, cmd: list[str]) -> list[str]:
        """`cmd` as run from party `name`'s host."""
        return ["ip", "netns", "exec", self.ns[name], *cmd] if self.isolated else list(cmd)
