"""The pin check refuses every app bundle but the installed fedcurate, naming the rule, before extraction."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from fedcurate.common.app_pin import AppPin, AppRefused, check_fab, fab_hash, install_pinned

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from evil_apps import write_evil_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FLWR = Path(sys.executable).with_name("flwr")


def _build(app: Path, out: Path) -> bytes:
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([str(FLWR), "build", "--app", str(app)], cwd=out, capture_output=True, text=True,
                          timeout=300)
    fabs = sorted(out.glob("*.fab"))
    assert fabs, done.stdout + done.stderr
    return fabs[-1].read_bytes()


def _zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


@pytest.fixture(scope="module")
def fedcurate_fab(tmp_path_factory) -> bytes:
    return _build(ROOT, tmp_path_factory.mktemp("fab"))


def test_the_fedcurate_bundle_passes_and_foreign_ones_are_refused_by_rule(fedcurate_fab, tmp_path):
    pin = AppPin.installed()
    for component in ("clientapp", "serverapp"):
        assert check_fab(fedcurate_fab, component, pin).version == metadata.version("fedcurate")
    foreign = _build(write_evil_app(tmp_path / "foreign", tmp_path / "m", "foreign"), tmp_path / "f1")
    with pytest.raises(AppRefused, match=r"rule app\.name.*evilapp"):
        check_fab(foreign, "clientapp", pin)
    old = _build(write_evil_app(tmp_path / "old", tmp_path / "m", "old-version"), tmp_path / "f2")
    with pytest.raises(AppRefused, match=r"rule app\.version.*0\.0\.1"):
        check_fab(old, "clientapp", pin)
    mimic = _build(write_evil_app(tmp_path / "mimic", tmp_path / "m", "mimic"), tmp_path / "f3")
    assert check_fab(mimic, "clientapp", pin)  # passes the envelope check: the gate never imports its code
    with pytest.raises(AppRefused, match=r"rule app\.hash"):
        check_fab(mimic, "clientapp", AppPin.installed((fab_hash(fedcurate_fab),)))
    assert check_fab(fedcurate_fab, "clientapp", AppPin.installed((fab_hash(fedcurate_fab).upper(),)))


def test_malformed_bundles_are_refused_not_crashed_on():
    pin = AppPin.installed()
    with pytest.raises(AppRefused, match="not a readable Flower app bundle"):
        check_fab(b"not a zip", "clientapp", pin)
    with pytest.raises(AppRefused, match="not a readable Flower app bundle"):
        check_fab(_zip({"README": "x"}), "clientapp", pin)
    with pytest.raises(AppRefused, match="not a readable Flower app bundle"):
        check_fab(_zip({"pyproject.toml": "[[[ nope"}), "clientapp", pin)
    wrong = _zip({"pyproject.toml": '[project]\nname="fedcurate"\nversion="{}"\n[tool.flwr.app]\npublisher="fedcurate"\n'
                  '[tool.flwr.app.components]\nclientapp="fedcurate.evil:app"\n'.format(metadata.version("fedcurate"))})
    with pytest.raises(AppRefused, match=r"rule app\.component.*fedcurate\.evil:app"):
        check_fab(wrong, "clientapp", pin)


def test_install_is_not_called_for_a_refused_bundle():
    calls = []
    install = install_pinned(lambda fab, **kw: calls.append(fab) or Path("."), "clientapp")
    with pytest.raises(AppRefused):
        install(b"not a zip", skip_prompt=True)
    assert calls == []


def test_the_pin_travels_through_the_environment(monkeypatch):
    pin = AppPin.installed(("AB" * 32,))
    monkeypatch.setenv("FEDCURATE_APP_PIN", pin.to_env())
    assert AppPin.from_env() == AppPin(metadata.version("fedcurate"), ("ab" * 32,))
    monkeypatch.delenv("FEDCURATE_APP_PIN")
    assert AppPin.from_env() == AppPin.installed()
