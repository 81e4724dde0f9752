"""Site phases without Flower: prepare writes samples, rejects, stats and DONE; DONE makes a re-run resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcurate.client.site import SiteLocation, describe_rejects, locate, phase_done, prepare, reject_kind
from fedcurate.common.config import load_config
from fedcurate.common.data.sample import DataError, Reject

GOOD = [{"id": f"g{i}", "instruction": f"Add {i} and 1.", "output": str(i + 1)} for i in range(3)]


def _write_data(path: Path, *, bad: bool) -> Path:
    lines = [json.dumps(r) for r in GOOD]
    if bad:
        lines.insert(1, "{not json")  # line 2
        lines.append(json.dumps({"id": "b1", "instruction": "Say hi.", "output": 12345}))  # line 5
        lines.append(json.dumps({"id": "b2", "instruction": "Say bye."}))  # line 6: no response
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_prepare_skip_mode_writes_samples_rejects_and_stats(tmp_path):
    # Prepare
    data = _write_data(tmp_path / "data.jsonl", bad=True)
    cfg = load_config(overrides={"data.on-error": "skip"})
    site_dir = tmp_path / "sites" / "a"

    # Execute
    result = prepare("a", str(data), site_dir, cfg)

    # Assert
    out = site_dir / "prepare"
    assert (result.num_samples, result.num_rejects, result.resumed) == (3, 3, False)
    assert result.rejects_by_reason == {"malformed JSON at column": 1, "missing required field (output)": 1,
                                        "wrong type (output)": 1}
    assert [s["id"] for s in _lines(out / "samples.jsonl")] == ["g0", "g1", "g2"]
    assert _lines(out / "samples.jsonl")[0]["response"] == "1"  # normalised: output -> response
    assert [r["line"] for r in _lines(out / "rejects.jsonl")] == [2, 5, 6]
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats == {"site": "a", "num_samples": 3, "num_rejects": 3,
                     "rejects_by_reason": result.rejects_by_reason, "seconds": result.seconds}
    assert phase_done(site_dir, "prepare")


def test_prepare_resumes_from_done_marker_without_reading_data(tmp_path):
    # Prepare
    data = _write_data(tmp_path / "data.jsonl", bad=True)
    cfg = load_config(overrides={"data.on-error": "skip"})
    first = prepare("a", str(data), tmp_path / "site", cfg)
    data.unlink()  # a re-read would now fail with FileNotFoundError

    # Execute
    second = prepare("a", str(data), tmp_path / "site", cfg)

    # Assert
    assert second.resumed
    assert second.to_stats() == first.to_stats()


def test_prepare_raise_mode_propagates_data_error_and_marks_nothing_done(tmp_path):
    # Prepare
    data = _write_data(tmp_path / "data.jsonl", bad=True)
    cfg = load_config(overrides={"data.on-error": "raise"})

    # Execute
    with pytest.raises(DataError) as info:
        prepare("a", str(data), tmp_path / "site", cfg)

    # Assert
    assert [r.line for r in info.value.rejects] == [2, 5, 6]
    assert not phase_done(tmp_path / "site", "prepare")


@pytest.mark.parametrize(("field", "reason", "kind"), [
    ("", "malformed JSON at column 7: Expecting value", "malformed JSON at column"),
    ("output", "wrong type: expected a string, got int 12345", "wrong type (output)"),
    ("id", "duplicate id 'a:1' (first seen at line 3)", "duplicate id (id)"),
    ("", "invalid UTF-8 at byte 4 of the line (invalid start byte)", "invalid UTF-8 at byte of the line"),
    ("text", "", "unknown (text)"),
])
def test_reject_kind_groups_by_cause_without_values(field, reason, kind):
    # Execute / Assert
    assert reject_kind(Reject("f.jsonl", 1, field, reason)) == kind


def test_describe_rejects_locates_rows_but_quotes_no_values():
    # Prepare
    rejects = [Reject("/d/f.jsonl", i, "output", f"wrong type: got int {9000 + i}") for i in range(1, 4)]

    # Execute
    text = describe_rejects(rejects, limit=2)

    # Assert
    assert text.splitlines() == ["3 bad input row(s):", "  /d/f.jsonl:1: wrong type (output)",
                                 "  /d/f.jsonl:2: wrong type (output)", "  ... and 1 more"]
    assert "900" not in text


RECORD = {"run-dir": "/runs/x", "data-template": "/runs/x/data/site-{partition_id}.jsonl"}


@pytest.mark.parametrize(("node", "record", "expected"), [
    ({"partition-id": 1, "num-partitions": 2}, RECORD,
     SiteLocation("site-1", "/runs/x/data/site-1.jsonl", Path("/runs/x/sites/site-1"))),
    ({"partition-id": 1}, {"run-dir": "/r", "data-paths": ["/in/a.csv", "/in/b.parquet"]},
     SiteLocation("site-1", "/in/b.parquet", Path("/r/sites/site-1"))),
    ({"site": "clinic", "data-path": "/data/c.jsonl"}, RECORD,
     SiteLocation("clinic", "/data/c.jsonl", Path("/runs/x/sites/clinic"))),
    ({"site": "clinic", "data-path": "/data/c.jsonl", "run-dir": "/local/fc"}, RECORD,
     SiteLocation("clinic", "/data/c.jsonl", Path("/local/fc"))),
])
def test_locate_prefers_node_config_then_falls_back_on_the_instruction(node, record, expected):
    # Execute / Assert
    assert locate(node, record) == expected


@pytest.mark.parametrize(("node", "message"), [
    ({"data-path": "/d.jsonl"}, "no site name"),
    ({"site": "clinic"}, "site 'clinic' has no data"),
])
def test_locate_names_the_missing_node_config(node, message):
    # Execute / Assert
    with pytest.raises(ValueError, match=message):
        locate(node, {"run-dir": "/r"})
