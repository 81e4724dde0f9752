"""Packaging: every source folder under `fedcurate/` is a package (so it ships), and the Flower app
components resolve to the ServerApp and ClientApp."""

import importlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_source_folder_is_a_package():
    # Prepare: setuptools' find only ships folders that have an __init__.py
    folders = {p.parent for p in (ROOT / "fedcurate").rglob("*.py") if "__pycache__" not in p.parts}
    # Assert
    assert sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file()) == []
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == ["fedcurate*"]


def test_flower_components_resolve():
    # Prepare
    comps = PYPROJECT["tool"]["flwr"]["app"]["components"]
    # Execute
    server = importlib.import_module(comps["serverapp"].split(":")[0])
    client = importlib.import_module(comps["clientapp"].split(":")[0])
    # Assert
    assert type(server.app).__name__ == "ServerApp"
    assert type(client.app).__name__ == "ClientApp"
