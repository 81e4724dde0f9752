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

One module per job; every name importers use is re-exported here (`from fedcurate.server import deploy`,
then `deploy.serve_superlink(...)`; `from fedcurate.server.deploy import DeployError`):

    processes.py   DeployError, Flower executables and environment, the `flwr` CLI, gate launchers,
                   `Children` (signal forwarding, parent-death signal), port checks
    superlink.py   the coordinator's SuperLink + SuperExec + nginx (`serve_superlink`), key registration
    supernode.py   a site's SuperNode behind its preflight checks (`serve_supernode`)
    launch.py      `fedcurate launch`: submit a run and follow it (`follow_run`)
"""

from fedcurate.server.deploy.launch import (
    app_dir,
    follow_run,
    launch_command,
    run_status,
    submit_run,
    superlink_epoch,
)
from fedcurate.server.deploy.processes import (
    CONNECTION,
    INSECURE_WARNING,
    STARTED_FILE,
    Children,
    DeployError,
    check_port_free,
    flower_bin,
    flwr_cli,
    flwr_env,
    gate_bin,
    process_env,
    split_address,
    wait_for_port,
)
from fedcurate.server.deploy.superlink import (
    check_superlink_certs,
    register_sites,
    registered_nodes,
    serve_superlink,
    superexec_command,
    superexec_secret,
    superlink_command,
    write_connection,
)
from fedcurate.server.deploy.supernode import (
    REFUSALS,
    check_superlink,
    preflight_supernode,
    refusal_help,
    serve_supernode,
    supernode_command,
)

__all__ = [
    "CONNECTION", "INSECURE_WARNING", "REFUSALS", "STARTED_FILE", "Children", "DeployError", "app_dir",
    "check_port_free", "check_superlink", "check_superlink_certs", "flower_bin", "flwr_cli", "flwr_env",
    "follow_run", "gate_bin", "launch_command", "preflight_supernode", "process_env", "refusal_help",
    "register_sites", "registered_nodes", "run_status", "serve_superlink", "serve_supernode", "split_address",
    "submit_run", "superexec_command", "superexec_secret", "superlink_command", "superlink_epoch",
    "supernode_command", "wait_for_port", "write_connection",
]
