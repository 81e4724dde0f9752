"""`flwr-serverapp`, gated: the SuperLink's host runs only the fedcurate ServerApp installed there.

`fedcurate superlink` starts Flower's SuperExec itself with a `flwr-serverapp` that runs this module first on
its PATH. As at a SuperNode (`client/gate.py`), the app bundle is checked against the pin before it is
extracted, and the ServerApp object is this environment's `fedcurate.server.server_app:app`, never code
from the bundle.
"""

from __future__ import annotations

import importlib
from typing import Any

from fedcurate.common.app_pin import install_pinned


def main() -> None:
    runtime = importlib.import_module("flwr.superlink.runtime.run_serverapp")  # the module, not its function
    from flwr.superlink.cli.flwr_serverapp import flwr_serverapp

    for name in ("install_from_fab", "run_"):
        if not hasattr(runtime, name):
            raise SystemExit(f"fedcurate gate: flwr.superlink.runtime.run_serverapp.{name} not found; this "
                             f"fedcurate supports flwr 1.41")
    runtime.install_from_fab = install_pinned(runtime.install_from_fab, "serverapp")
    original_run = runtime.run_

    def run_installed(*, grid: Any, context: Any, server_app_dir: str, **_: Any) -> Any:
        from fedcurate.server.server_app import app
        return original_run(grid=grid, context=context, server_app_dir=server_app_dir, loaded_server_app=app)

    runtime.run_ = run_installed
    flwr_serverapp()


if __name__ == "__main__":
    main()
