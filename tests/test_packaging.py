"""Packaging: every source folder is listed under the `fedcurate` import package, and the Flower app
components resolve to the ServerApp and ClientApp."""

import importlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_declared():
    # Prepare
    tool = PYPROJECT["tool"]["setuptools"]
    roots = {folder: name for name, folder in tool["package-dir"].items()}
    found = set()
    for folder, name in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    # Assert
    assert found == set(tool["packages"])


def test_flower_components_resolve():
    # Prepare
    comps = PYPROJECT["tool"]["flwr"]["app"]["components"]
    # Execute
    server = importlib.import_module(comps["serverapp"].split(":")[0])
    client = importlib.import_module(comps["clientapp"].split(":")[0])
    # Assert
    assert type(server.app).__name__ == "ServerApp"
    assert type(client.app).__name__ == "ClientApp"
