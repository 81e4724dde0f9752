"""Only the fedcurate installed at a partner runs there, even when the SuperLink itself hands out a foreign
app (a compromised or careless coordinator): real `flower-superlink`, `fedcurate supernode`, `flwr run`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evil_apps import write_evil_app  # noqa: E402
from procs import BIN, CLI, free_port, listening, start, stop, wait_until  # noqa: E402
from procs import env as _proc_env  # noqa: E402


@pytest.mark.integration
def test_a_partner_runs_no_code_of_a_foreign_app_even_from_its_superlink(tmp_path):
    # Prepare: an ungated, insecure Flower SuperLink (the attacker controls it) and one fedcurate SuperNode
    home, port = tmp_path / "flwr-home", free_port()
    home.mkdir()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "x"\n\n[superlink.x]\naddress = "127.0.0.1:{port}"\n'
                                      "insecure = true\n")
    data = tmp_path / "a.jsonl"
    data.write_text('{"instruction": "Say hi.", "output": "hi"}\n')
    marker = tmp_path / "partner-marker"
    apps = {kind: write_evil_app(tmp_path / kind, Path(f"{marker}-{kind}"), kind) for kind in ("foreign", "mimic")}
    env = _proc_env(FLWR_HOME=str(home))
    procs = []
    try:
        procs.append(start([str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(port),
                             "--database", str(tmp_path / "superlink.db")], tmp_path / "superlink.log", env))
        assert wait_until(lambda: listening(port), 120), (tmp_path / "superlink.log").read_text()[-2000:]
        node_env = {**env, "FLWR_HOME": str(tmp_path / "partner-home")}
        procs.append(start([*CLI, "supernode", "--insecure", "--superlink", f"127.0.0.1:{port}", "--site", "a",
                             "--data", str(data), "--run-dir", str(tmp_path / "site-a"), "--port", str(free_port())], tmp_path / "supernode.log", node_env))
        assert wait_until(lambda: "SuperNode ID" in (tmp_path / "supernode.log").read_text(errors="replace"), 120), \
            (tmp_path / "supernode.log").read_text()[-2000:]

        # Execute: submit each foreign app; its ServerApp (ungated here) sends the partner a message
        for kind, app in apps.items():
            done = subprocess.run([str(BIN / "flwr"), "run", str(app), "x", "--format", "json"], env=env,
                                  capture_output=True, text=True, timeout=300)
            assert json.loads(done.stdout[done.stdout.find("{"):])["success"], done.stdout + done.stderr
            replies = Path(f"{marker}-{kind}.server.replies")
            assert wait_until(replies.exists, 240), (tmp_path / "supernode.log").read_text()[-3000:]

        # and the SuperNode's wrapper, SIGKILLed alone, leaves no Flower process behind
        flower = int(re.search(r"started flower-supernode \(pid (\d+)\)",
                               (tmp_path / "supernode.log").read_text()).group(1))
        os.kill(procs[1].pid, signal.SIGKILL)
        procs[1].wait()
        orphaned = not wait_until(lambda: not Path(f"/proc/{flower}").exists() or
                                  Path(f"/proc/{flower}/stat").read_text().split()[2] == "Z", 60)
    finally:
        for proc in reversed(procs):
            stop(proc)

    # Assert: the attacker's ServerApp ran at its own SuperLink (so the test can see it), but no code of either
    # app ran at the partner, and the partner's refusal of the foreign app names the rule
    assert Path(f"{marker}-foreign.server").exists() and Path(f"{marker}-mimic.server").exists()
    assert not orphaned, f"flower-supernode (pid {flower}) outlived its wrapper"
    assert not Path(f"{marker}-foreign.client").exists()
    assert not Path(f"{marker}-mimic.client").exists()  # shipped fedcurate/client/client_app.py never imported
    foreign = Path(f"{marker}-foreign.server.replies").read_text()
    assert "app refused (rule app.name)" in foreign and "evilapp" in foreign, foreign
    mimic = Path(f"{marker}-mimic.server.replies").read_text()  # the installed ClientApp answered instead
    assert "evil code" not in mimic and mimic.strip(), mimic
