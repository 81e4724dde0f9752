"""The HTML report in a real browser: headless Chromium loads every embedded image and renders the page.

Needs the Debian package `chromium` (`.ci/run` installs it); skipped without it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TIMEOUT_S = 120
CHECKER = """<script>
window.addEventListener("load", function () {
  var imgs = Array.from(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var marker = document.createElement("div");
  marker.id = "imgcheck";
  marker.textContent = ok + "/" + imgs.length;
  document.body.appendChild(marker);
});
</script>
"""


def _report_tests():  # the run-building helper and section ids of test_report.py (tests are no package)
    spec = importlib.util.spec_from_file_location("_report_tests", Path(__file__).with_name("test_report.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None and os.environ.get("FEDCURATE_REQUIRE_CHROMIUM"):
        pytest.fail("chromium not installed but FEDCURATE_REQUIRE_CHROMIUM is set (.ci/run installs Debian's chromium)")
    if path is None:
        pytest.skip("chromium not installed (Debian package 'chromium'); .ci/run installs it")
    return path


def _run_chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report.html a (shrunk) `fedcurate demo` writes: 4 sites over Flower's simulation, every phase."""
    from fedcurate.app.demo import run_demo

    _chromium()  # skip before building the run
    small = {"synthetic.anchor-size": 60, "synthetic.test-size": 20, "training.epochs": 1.0,
             "model.max-length": 128, "federation.warmup-rounds": 2, "federation.train-rounds": 2,
             "federation.local-steps": 2, "evaluation.exact-match": False}
    out = tmp_path_factory.mktemp("demo")
    run_demo(out, num_samples=200, extra=small)
    return out / "report.html"


def test_every_section_and_every_image_loads_in_chromium(report, tmp_path):
    # Prepare: a copy of the report with a script that counts the images loaded
    checked = tmp_path / "checked.html"
    checked.write_text(report.read_text(encoding="utf-8").replace("</body>", CHECKER + "</body>"), encoding="utf-8")

    # Execute
    done = _run_chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", checked.as_uri())

    # Assert
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    for section in _report_tests().SECTION_IDS:
        assert f'id="{section}"' in dom, section
    marker = re.search(r'<div id="imgcheck">(\d+)/(\d+)</div>', dom)
    assert marker, dom[-2000:]
    loaded, total = int(marker.group(1)), int(marker.group(2))
    assert total == report.read_text(encoding="utf-8").count("<img ") >= 6 and loaded == total


def test_the_report_renders_to_a_non_blank_screenshot(report, tmp_path):
    # Execute
    shot = tmp_path / "report.png"
    done = _run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,4000", report.as_uri())

    # Assert
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    assert shot.stat().st_size > 50_000
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (4000, 1280) and pixels.var() > 100.0
    assert (pixels < 128).mean() > 0.01  # text and plots, not a white page
