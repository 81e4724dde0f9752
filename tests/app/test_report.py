"""HTML run reports and run comparisons, on small real runs (in-process transport, tiny model)."""

from __future__ import annotations

import base64
import io
import json
import shutil
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedcurate.app.local import LocalTransport
from fedcurate.app.pipeline import run_select
from fedcurate.app.report import ReportError, write_comparison, write_report
from fedcurate.app.report.plots import coarsen
from fedcurate.client.site import SiteLocation
from fedcurate.common.config import load_config
from fedcurate.common.data.loaders import load_samples, write_samples
from fedcurate.server.orchestrator import run_phases
from fedcurate.simulations.partition import partition_quality_skew
from fedcurate.simulations.synthetic import make_splits

SECTION_IDS = ["overview", "scores", "transition", "threshold", "selection", "training", "communication",
               "evaluation", "privacy"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _site_data(root: Path, per_site: int, rates: tuple[float, ...] = (0.1, 0.7), rated: bool = False
               ) -> list[tuple[str, Path]]:
    """Synthetic sites; with `rated`, a 0-5 judge rating in metadata (3-5 when clean, 0-2 when not)."""
    rng = np.random.default_rng(0)
    out = []
    for i, part in enumerate(partition_quality_skew(len(rates), per_site, list(rates), seed=3)):
        if rated:
            part = [replace(s, metadata={**s.metadata, "judge": int(rng.integers(3, 6) if s.metadata["clean"]
                                                                     else rng.integers(0, 3))}) for s in part]
        path = root / "data" / f"site-{i}.jsonl"
        write_samples(path, part)
        out.append((f"site-{i}", path))
    return out


def build_federated_run(root: Path) -> Path:
    """Every phase over two sites: DS2 curation + length composite, 2 FedAvg rounds, evaluation (~10 s)."""
    data = _site_data(root, per_site=60, rated=True)
    write_samples(root / "data" / "test.jsonl", make_splits(0, 0.0, 0, 10, seed=1).test)
    cfg = load_config(None, {
        "scoring.scorers": ["ds2", "length"], "scoring.weights": [1.0, 0.5], "curation.score-field": "judge",
        "curation.hoc-rounds": 5, "selection.fraction": 0.5, "federation.sites": 2, "federation.train-rounds": 2,
        "federation.local-steps": 2, "model.max-length": 128, "training.batch-size": 8,
        "evaluation.test-path": str(root / "data" / "test.jsonl"), "evaluation.max-samples": 10})
    run_dir = root / "run"
    sites = [SiteLocation(name, str(path), run_dir / "sites" / name) for name, path in data]
    run_phases(cfg, run_dir, LocalTransport(sites, cfg))
    return run_dir


class _Page(HTMLParser):
    """Section ids, images, and per section: its text, its table rows (cell texts) and data-site tags."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.text: dict[str, str] = {}
        self.rows: dict[str, list[list[str]]] = {}
        self.site_rows: dict[str, list[str]] = {}
        self.scripts = 0
        self._section = ""
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "h2" and a.get("id"):
            self._section = str(a["id"])
            self.ids.append(self._section)
            self.text[self._section] = ""
        elif tag == "img":
            self.imgs.append({**a, "section": self._section})
        elif tag == "tr":
            self.rows.setdefault(self._section, []).append([])
            if a.get("data-site"):
                self.site_rows.setdefault(self._section, []).append(str(a["data-site"]))
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("script", "link", "iframe"):
            self.scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[self._section][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._section:
            self.text[self._section] += data
        if self._cell is not None:
            self._cell.append(data)

    def row(self, section: str, first: str) -> list[str]:
        """The first table row of `section` whose first cell is `first`."""
        return next(r for r in self.rows[section] if r and r[0] == first)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _png(src: str | None) -> Image.Image:
    assert src and src.startswith("data:image/png;base64,"), (src or "")[:60]
    raw = base64.b64decode(src.split(",", 1)[1], validate=True)
    assert raw.startswith(PNG_SIGNATURE) and len(raw) > 5000
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image


@pytest.fixture(scope="module")
def fed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_federated_run(tmp_path_factory.mktemp("fed"))


@pytest.fixture(scope="module")
def central_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("central")
    (_, path), = _site_data(root, per_site=100, rates=(0.3,))
    cfg = load_config(None, {"scoring.scorers": ["length", "random"], "selection.fraction": 0.25})
    run_select(cfg, root / "run", path)
    return root / "run"


def test_full_federated_report_has_every_section_plot_and_site(fed_run, tmp_path):
    # Execute
    out = write_report(fed_run, tmp_path / "report.html")

    # Assert: sections in order, nothing external, every image a real PNG with an alt text
    page = _parse(out)
    assert page.ids == SECTION_IDS
    assert page.scripts == 0 and "http://" not in out.read_text() and "https://" not in out.read_text()
    assert {i["section"] for i in page.imgs} == set(SECTION_IDS) - {"overview", "privacy"}
    for i in page.imgs:
        assert i.get("alt"), i["section"]
        width, height = _png(i["src"]).size
        assert width >= 400 and height >= 200
    not_run = [s for s in SECTION_IDS if "not run" in page.text[s]]
    assert not_run == ["privacy"] and "dp-epsilon = 0" in page.text["privacy"]
    # Assert: tables name each site once (plus no more), numbers match the run's summaries
    for section in ("overview", "scores", "transition", "selection", "communication"):
        assert page.site_rows[section] == ["site-0", "site-1"], section
    select = json.loads((fed_run / "server" / "select" / "summary.json").read_text())
    assert select["kept"] == 60 and page.row("selection", "all sites")[:4] == ["all sites", "120", "60", "60"]
    assert page.row("selection", "site-0")[2] == str(select["sites"]["site-0"]["kept"])
    assert page.row("overview", "site-1")[:2] == ["site-1", "60"]
    assert page.row("overview", "evaluate")[:2] == ["evaluate", "done"]
    assert "ds2" in page.text["scores"] and "length" in page.text["scores"]
    assert "merged adapter" in page.text["evaluation"] and "base model" in page.text["evaluation"]


def test_default_output_is_report_html_in_the_run_directory_written_atomically(fed_run):
    out = write_report(fed_run)
    assert out == fed_run / "report.html" and out.stat().st_size > 20_000
    assert not list(fed_run.glob(".report.html.*"))


def test_a_run_stopped_after_threshold_reports_later_sections_as_not_run(tmp_path):
    # Prepare: DP threshold phase, then stop
    data = _site_data(tmp_path, per_site=100)
    cfg = load_config(None, {"scoring.scorers": ["random"], "federation.sites": 2, "selection.fraction": 0.5,
                             "selection.bins": 32, "privacy.dp-epsilon": 4.0, "privacy.score-range": [0.0, 1.0],
                             "run.stop-after": "threshold"})
    sites = [SiteLocation(n, str(p), tmp_path / "run" / "sites" / n) for n, p in data]
    run_phases(cfg, tmp_path / "run", LocalTransport(sites, cfg))

    # Execute
    page = _parse(write_report(tmp_path / "run"))

    # Assert
    assert page.ids == SECTION_IDS
    for section in ("selection", "evaluation"):
        assert "not run: the" in page.text[section] and "has not run (the run stopped after threshold)" in \
            page.text[section], section
    assert "not run" in page.text["training"] and "skipped" in page.text["transition"]
    assert "not run" not in page.text["threshold"] and "DP noise" in page.text["threshold"]
    assert page.row("privacy", "spent epsilon") == ["spent epsilon", "4"]  # 4.000000000000001 at 4 digits
    assert page.row("privacy", "threshold/hist/0: histogram")[2] == "1"  # L2 sensitivity
    assert {i["section"] for i in page.imgs} == {"scores", "threshold", "communication"}
    for i in page.imgs:
        _png(i["src"])


def test_centralized_run_reports_its_one_site_and_each_scorers_precision(central_run):
    page = _parse(write_report(central_run))
    assert "centralized" in page.text["overview"]
    assert page.site_rows["selection"] == ["local"] and page.site_rows["scores"] == ["local"]
    assert "Each scorer alone" in page.text["selection"]
    kept = json.loads((central_run / "stats.json").read_text())["kept"]
    assert kept == 25 and page.row("selection", "local")[:4] == ["local", "100", "25", "75"]
    assert "not run" in page.text["training"] and "not run" in page.text["evaluation"]


def test_a_path_that_is_not_a_run_directory_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(ReportError, match=rf"{path}.*(not a run directory|does not exist)"):
            write_report(path)
    assert issubclass(ReportError, ValueError)
    broken = tmp_path / "broken"
    (broken / "server" / "prepare").mkdir(parents=True)
    (broken / "server" / "prepare" / "summary.json").write_text("{not json")
    (broken / "server" / "prepare" / "DONE").write_text("")
    with pytest.raises(ReportError, match="summary.json: cannot read it as JSON"):
        write_report(broken)


def test_comparison_of_two_runs_has_one_row_each_and_a_plot(fed_run, central_run, tmp_path):
    # Execute
    html_path = write_comparison([fed_run, central_run], tmp_path / "cmp", labels=["fed", "central"])

    # Assert
    assert html_path == tmp_path / "cmp" / "comparison.html"
    rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [r["label"] for r in rows] == ["fed", "central"]
    assert [r["kept"] for r in rows] == [60, 25]
    assert rows[0]["loss"] is not None and rows[1]["loss"] is None and rows[0]["bytes"] > 0
    md = (tmp_path / "cmp" / "comparison.md").read_text().splitlines()
    table = [line for line in md if line.startswith("| ")]
    assert len(table) == 3 and table[1].startswith("| fed | federated, 2 site(s) |")
    assert table[2].startswith("| central | centralized")
    assert _png("data:image/png;base64," + base64.b64encode((tmp_path / "cmp" / "comparison.png").read_bytes())
                .decode()).size[0] > 600
    page = _parse(html_path)
    assert len(page.imgs) == 1 and page.imgs[0]["alt"]
    _png(page.imgs[0]["src"])
    with pytest.raises(ReportError, match="1 label"):
        write_comparison([fed_run, central_run], tmp_path / "x", labels=["one"])


def test_comparison_expands_a_benchmark_folder_of_runs(fed_run, central_run, tmp_path):
    # Prepare: the quality benchmark's layouts, <out>/<method> and <out>/seed-<s>/<method>, beside data
    bench = tmp_path / "bench"
    for method, src in (("full", central_run), ("ds2", fed_run)):
        shutil.copytree(src, bench / method, ignore=shutil.ignore_patterns("state.npz", "*.safetensors"))
        shutil.copytree(src, tmp_path / "seeds" / "seed-0" / method, ignore=shutil.ignore_patterns("*.npz"))
    (bench / "data").mkdir()
    (bench / "results.json").write_text("{}")

    # Execute
    write_comparison([bench], tmp_path / "cmp")
    write_comparison([tmp_path / "seeds"], tmp_path / "cmp-seeds")

    # Assert
    rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [(r["label"], r["kept"]) for r in rows] == [("ds2", 60), ("full", 25)]
    rows = json.loads((tmp_path / "cmp-seeds" / "comparison.json").read_text())
    assert [r["label"] for r in rows] == ["seed-0/ds2", "seed-0/full"]
    with pytest.raises(ReportError, match="data is not a run directory"):
        write_comparison([bench / "data"], tmp_path / "none")


def test_coarsen_keeps_the_central_mass_and_the_threshold_bin():
    edges = np.linspace(-40.0, 2.0, 1025)
    counts = np.zeros(1024, dtype=int)
    counts[0] = 1  # one far outlier
    counts[900:1000] = 10
    shown_edges, shown = coarsen(edges, counts, keep=[-1.0])
    assert len(shown) <= 120 and len(shown_edges) == len(shown) + 1
    assert shown_edges[0] > -40.0 and shown_edges[0] <= -1.0 and shown_edges[-1] >= edges[999]
    assert shown.sum() == 1000
    np.testing.assert_array_equal(np.diff(shown_edges) > 0, True)


def test_report_reads_ground_truth_precision_from_the_select_summary(fed_run):
    samples = [s for site in ("site-0", "site-1")
               for s in load_samples(fed_run / "sites" / site / "select" / "selected.jsonl").samples]
    precision = sum(bool(s.metadata["clean"]) for s in samples) / len(samples)
    text = _parse(write_report(fed_run)).text["selection"]
    assert f"Precision of the kept set {precision:.4g}" in text
