"""`flwr-clientapp`, gated: a SuperNode runs only the fedcurate ClientApp installed at this site.

`fedcurate supernode` puts a `flwr-clientapp` that runs this module first on the SuperNode's PATH (Flower's
SuperExec starts the ClientApp process by that name). It is Flower's own `flwr-clientapp` with two changes,
made before anything of the app is touched:

1. the app bundle (FAB) is checked against the site's pin (`common/app_pin.py`) before it is extracted; a
   foreign app is refused with an error reply naming the rule, and none of its files is written or imported;
2. the ClientApp object is this environment's `fedcurate.client.client_app:app`, never a module from the FAB,
   so even an accepted bundle cannot bring code of its own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from fedcurate.common.app_pin import install_pinned


def main() -> None:
    runtime = importlib.import_module("flwr.supernode.runtime.run_clientapp")  # the module, not its function
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    for name in ("install_from_fab", "get_load_client_app_fn"):
        if not hasattr(runtime, name):  # a Flower release that moved things: refuse rather than run ungated
            raise SystemExit(f"fedcurate gate: flwr.supernode.runtime.run_clientapp.{name} not found; this "
                             f"fedcurate supports flwr 1.41")
    runtime.install_from_fab = install_pinned(runtime.install_from_fab, "clientapp")

    def load_installed(*_: Any, **__: Any) -> Callable[[str, str, str], Any]:
        def load(fab_id: str, fab_version: str, fab_hash: str) -> Any:
            from fedcurate.client.client_app import app
            return app
        return load

    runtime.get_load_client_app_fn = load_installed
    flwr_clientapp()


if __name__ == "__main__":
    main()
