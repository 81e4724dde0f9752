"""Which Flower app a fedcurate process agrees to run: the pinned app, checked before any of its code runs.

    verdict = check_fab(fab_bytes, "clientapp", AppPin.installed())   # raises AppRefused naming the rule

A Flower App Bundle (FAB) is a zip holding a `pyproject.toml` and source files; `flwr run` ships it to the
SuperLink, which hands it to every SuperNode. Without a check, any party that can submit a run executes its
own code at every partner. fedcurate's gates (`client/gate.py` at a SuperNode, `server/gate.py` at the
SuperLink) run only the fedcurate that is *installed* in the site's own environment, never code from the FAB:
the FAB is an envelope whose declared app must be the pinned one, and the code imported is the local package.

The pin (rules named in every refusal):
    app.name        [project].name of the FAB is "fedcurate" and [tool.flwr.app].publisher is "fedcurate"
    app.component   its [tool.flwr.app.components] entry is the fedcurate ClientApp / ServerApp reference
    app.version     its [project].version equals the installed fedcurate's version
    app.hash        when the operator pinned FAB hashes (sha256 of the FAB bytes), the FAB's hash is one of them
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import logging
import os
import tomllib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

APP_NAME = "fedcurate"
COMPONENTS = {"clientapp": "fedcurate.client.client_app:app", "serverapp": "fedcurate.server.server_app:app"}
PIN_ENV = "FEDCURATE_APP_PIN"  # JSON of AppPin, set by `fedcurate supernode` / `fedcurate superlink`
MAX_PYPROJECT_BYTES = 1 << 20


class AppRefused(RuntimeError):
    """The submitted app is not the pinned fedcurate app; nothing of it was run or installed."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"app refused (rule {rule}): {detail}. Only the fedcurate app installed at this "
                         f"site runs here")
        self.rule = rule


@dataclass(frozen=True)
class AppPin:
    """What this site runs: fedcurate `version` and, when given, only FABs with one of `hashes`."""

    version: str
    hashes: tuple[str, ...] = field(default_factory=tuple)

    @staticmethod
    def installed(hashes: tuple[str, ...] = ()) -> AppPin:
        return AppPin(metadata.version(APP_NAME), tuple(h.lower() for h in hashes))

    def to_env(self) -> str:
        return json.dumps({"version": self.version, "hashes": list(self.hashes)})

    @staticmethod
    def from_env() -> AppPin:
        """The pin the wrapper set; the installed version when none was set."""
        raw = os.environ.get(PIN_ENV, "")
        if not raw:
            return AppPin.installed()
        got = json.loads(raw)
        return AppPin(str(got["version"]), tuple(str(h).lower() for h in got.get("hashes", [])))


@dataclass(frozen=True)
class Verdict:
    fab_hash: str
    name: str
    version: str


def fab_hash(fab: bytes) -> str:
    return hashlib.sha256(fab).hexdigest()


def _pyproject(fab: bytes) -> dict:
    try:
        with zipfile.ZipFile(_io.BytesIO(fab)) as z:
            info = z.getinfo("pyproject.toml")
            if info.file_size > MAX_PYPROJECT_BYTES:
                raise AppRefused("app.name", f"pyproject.toml of {info.file_size} bytes")
            return tomllib.loads(z.read(info).decode("utf-8"))
    except AppRefused:
        raise
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise AppRefused("app.name", f"not a readable Flower app bundle ({type(err).__name__}: {err})") from err


def check_fab(fab: bytes, component: str, pin: AppPin) -> Verdict:
    """The FAB's identity when it is the pinned fedcurate app, else `AppRefused` naming the rule."""
    digest = fab_hash(fab)
    if pin.hashes and digest not in pin.hashes:
        raise AppRefused("app.hash", f"FAB sha256 {digest} is not among the {len(pin.hashes)} hash(es) pinned "
                                     f"by this site's operator")
    doc = _pyproject(fab)
    project = doc.get("project", {}) if isinstance(doc.get("project"), dict) else {}
    flwr_app = doc.get("tool", {}).get("flwr", {}).get("app", {})
    name, publisher = str(project.get("name", "")), str(flwr_app.get("publisher", ""))
    if name != APP_NAME or publisher != APP_NAME:
        raise AppRefused("app.name", f"the app is {publisher or '?'}/{name or '?'}, not {APP_NAME}/{APP_NAME}")
    declared = str(flwr_app.get("components", {}).get(component, ""))
    if declared != COMPONENTS[component]:
        raise AppRefused("app.component", f"its {component} is {declared!r}, not {COMPONENTS[component]!r}")
    version = str(project.get("version", ""))
    if version != pin.version:
        raise AppRefused("app.version", f"fedcurate {version or '?'} was submitted; this site runs "
                                        f"{pin.version} (install the same version at the coordinator and partners)")
    return Verdict(digest, name, version)


def install_pinned(original: Callable[..., Path], component: str) -> Callable[..., Path]:
    """Flower's `install_from_fab`, preceded by the pin check (refusal raises before any extraction)."""
    def install(fab_file: bytes | Path, *args: Any, **kwargs: Any) -> Path:
        content = fab_file if isinstance(fab_file, bytes) else Path(fab_file).read_bytes()
        verdict = check_fab(content, component, AppPin.from_env())
        logger.info("app %s %s accepted (FAB sha256 %s)", verdict.name, verdict.version, verdict.fab_hash)
        return original(fab_file, *args, **kwargs)
    return install
