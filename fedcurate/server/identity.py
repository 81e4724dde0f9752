"""Which site a SuperNode is: learnt from the key the coordinator registered, never from what the node says.

    fedcurate register --certs certs --site hospital-a --key hospital-a.pub   # certs/sites/hospital-a.pub
    fedcurate superlink ...        # registers each key with Flower, writes <state>/sites.json: node id -> site
    ServerApp: registry = load_registry()   # {node_id: site}, from FEDCURATE_SITE_REGISTRY

Flower assigns a node id when a public key is registered (`flwr supernode register`), and a SuperNode
authenticates with the private half of that key, so `node id -> registered key -> site name` binds the
identity to the key. A node that connects without an entry is not part of the run; a reply that names
another site than its node's entry is excluded (rule `identity.registered-key`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from fedcurate.common import io

logger = logging.getLogger(__name__)

REGISTRY_ENV = "FEDCURATE_SITE_REGISTRY"
REGISTRY_FILE = "sites.json"
RULE = "identity.registered-key"


def write_registry(path: Path, nodes: dict[int, dict[str, str]]) -> Path:
    """`{node_id: {"site", "key"}}` as JSON (atomically)."""
    io.write_json(Path(path), {"nodes": {str(n): v for n, v in sorted(nodes.items())}})
    return Path(path)


def read_registry(path: Path) -> dict[int, str]:
    """{node id: site name} from a registry file."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        nodes = {int(n): str(v["site"]) for n, v in doc["nodes"].items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RuntimeError(f"site registry {path}: unreadable ({err}); restart `fedcurate superlink` to rewrite "
                           f"it") from err
    sites = list(nodes.values())
    twice = sorted({s for s in sites if sites.count(s) > 1})
    if twice:
        raise RuntimeError(f"site registry {path}: site(s) {', '.join(twice)} registered under several nodes")
    return nodes


def load_registry() -> dict[int, str] | None:
    """The registry `fedcurate superlink` pointed this process at, or None (simulation, `--insecure`)."""
    path = os.environ.get(REGISTRY_ENV, "")
    return read_registry(Path(path)) if path else None
