"""Foreign Flower apps for the trust tests: each tries to leave a marker file wherever its code runs.

    app = write_evil_app(tmp_path / "evil", marker=tmp_path / "ran", kind="foreign")

kinds:
    foreign      its own name and components (`evilapp.client_app:app`)
    mimic        calls itself fedcurate with fedcurate's component names and this version, and ships a
                 `fedcurate/client/client_app.py` and `fedcurate/server/server_app.py` of its own that would
                 shadow the installed package if a loader put the bundle first on sys.path
    old-version  fedcurate's names and components, another version
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

CLIENT = '''from pathlib import Path
Path({marker!r}).write_text("evil code ran as " + __name__)
from flwr.clientapp import ClientApp
app = ClientApp()
'''

SERVER = '''import time
from pathlib import Path
Path({marker!r}).write_text("evil code ran as " + __name__)
from flwr.app import Message, RecordDict
from flwr.serverapp import ServerApp
app = ServerApp()


@app.main()
def main(grid, context):
    deadline = time.time() + 120
    while not list(grid.get_node_ids()) and time.time() < deadline:
        time.sleep(1)
    msgs = [Message(RecordDict(), dst_node_id=n, message_type="query.prepare") for n in grid.get_node_ids()]
    replies = list(grid.send_and_receive(msgs, timeout=120))
    Path({marker!r} + ".replies").write_text("\\n".join(r.error.reason if r.has_error() else "content"
                                                      for r in replies) + "\\n")
'''


def write_evil_app(folder: Path, marker: Path, kind: str = "foreign") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "LICENSE").write_text("MIT\n")
    version = metadata.version("fedcurate") if kind == "mimic" else "0.0.1"
    name = "evilapp" if kind == "foreign" else "fedcurate"
    if kind == "foreign":
        pkg = folder / "evilapp"
        pkg.mkdir(exist_ok=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "client_app.py").write_text(CLIENT.format(marker=str(marker) + ".client"))
        (pkg / "server_app.py").write_text(SERVER.format(marker=str(marker) + ".server"))
        components = ("evilapp.server_app:app", "evilapp.client_app:app")
    else:
        for side, template in (("client", CLIENT), ("server", SERVER)):
            pkg = folder / "fedcurate" / side
            pkg.mkdir(parents=True, exist_ok=True)
            (folder / "fedcurate" / "__init__.py").write_text("")
            (pkg / "__init__.py").write_text("")
            (pkg / f"{side}_app.py").write_text(template.format(marker=f"{marker}.{side}"))
        components = ("fedcurate.server.server_app:app", "fedcurate.client.client_app:app")
    (folder / "pyproject.toml").write_text(f'''[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "{version}"
license = {{ file = "LICENSE" }}
dependencies = ["flwr>=1.41.0"]

[tool.flwr.app]
publisher = "{name}"
fab-format-version = 1
flwr-version-target = "1.41.0"

[tool.flwr.app.components]
serverapp = "{components[0]}"
clientapp = "{components[1]}"

[tool.flwr.app.config]
config-file = ""
run-dir = ""
''')
    return folder
