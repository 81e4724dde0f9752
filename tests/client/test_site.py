"""Site phases without Flower: prepare writes samples, rejects, stats and DONE; DONE makes a re-run with the
same data resume, a changed data file is prepared again, and every stored step reply follows the data."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from fedcurate.client.handlers import StaleDataError, handle
from fedcurate.client.site import SiteLocation, describe_rejects, locate, prepare, reject_kind
from fedcurate.common.config import load_config
from fedcurate.common.data.sample import DataError, Reject
from fedcurate.common.protocol.layout import step_done
from fedcurate.common.protocol.payload import Payload

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


def _write_rows(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"r{i}", "instruction": f"Add {i} and 1.", "output": str(i + 1)})
                            + "\n" for i in range(n)), encoding="utf-8")
    return path


def _drop_rows(path: Path, count: int) -> None:
    """Remove `count` rows from the middle of a JSONL file, in place."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:2] + lines[2 + count:]), encoding="utf-8")


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
    assert step_done(site_dir, "prepare")
    done = json.loads((out / "DONE").read_text(encoding="utf-8"))
    assert done["data_digest"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert (done["data_path"], done["data"]["on-error"]) == (str(data), "skip")


def test_prepare_resumes_from_done_marker_when_the_data_is_unchanged(tmp_path):
    # Prepare
    data = _write_data(tmp_path / "data.jsonl", bad=True)
    cfg = load_config(overrides={"data.on-error": "skip"})
    first = prepare("a", str(data), tmp_path / "site", cfg)
    written = (tmp_path / "site" / "prepare" / "samples.jsonl").stat().st_mtime_ns
    data.write_bytes(data.read_bytes())  # rewritten, same content

    # Execute
    second = prepare("a", str(data), tmp_path / "site", cfg)

    # Assert
    assert second.resumed
    assert second.to_stats() == first.to_stats()
    assert (tmp_path / "site" / "prepare" / "samples.jsonl").stat().st_mtime_ns == written  # not rewritten


def test_prepare_again_when_rows_were_removed_from_the_data_file(tmp_path, caplog):
    # Prepare: a partner prepares N rows, then removes 3 from its file and runs again in the same site dir
    data = _write_rows(tmp_path / "data.jsonl", 10)
    cfg = load_config()
    site_dir = tmp_path / "site"
    first = prepare("a", str(data), site_dir, cfg)
    _drop_rows(data, 3)

    # Execute
    with caplog.at_level(logging.INFO, logger="fedcurate.client.site"):
        second = prepare("a", str(data), site_dir, cfg)

    # Assert
    out = site_dir / "prepare"
    assert (first.num_samples, second.num_samples, second.resumed) == (10, 7, False)
    assert [s["id"] for s in _lines(out / "samples.jsonl")] == ["r0", "r1", "r5", "r6", "r7", "r8", "r9"]
    assert json.loads((out / "stats.json").read_text(encoding="utf-8"))["num_samples"] == 7
    assert json.loads((out / "DONE").read_text(encoding="utf-8"))["data_digest"] == \
        hashlib.sha256(data.read_bytes()).hexdigest()
    assert any(r.levelno == logging.INFO and "data file changed since the cached prepare" in r.getMessage()
               for r in caplog.records)
    assert prepare("a", str(data), site_dir, cfg).resumed  # the new outputs are cached in turn


def test_prepare_again_when_the_data_settings_changed(tmp_path):
    # Prepare
    data = _write_rows(tmp_path / "data.jsonl", 10)
    prepare("a", str(data), tmp_path / "site", load_config())

    # Execute
    second = prepare("a", str(data), tmp_path / "site", load_config(overrides={"data.max-samples": 4}))

    # Assert
    assert (second.num_samples, second.resumed) == (4, False)
    assert len(_lines(tmp_path / "site" / "prepare" / "samples.jsonl")) == 4


def test_prepare_of_a_deleted_data_file_raises_instead_of_resuming(tmp_path):
    # Prepare
    data = _write_rows(tmp_path / "data.jsonl", 5)
    prepare("a", str(data), tmp_path / "site", load_config())
    data.unlink()

    # Execute / Assert
    with pytest.raises(FileNotFoundError):
        prepare("a", str(data), tmp_path / "site", load_config())


def test_handle_prepare_answers_from_its_stored_reply_only_while_the_data_is_unchanged(tmp_path):
    # Prepare
    data = _write_rows(tmp_path / "data.jsonl", 10)
    where = SiteLocation("a", str(data), tmp_path / "site")
    cfg = load_config()
    first = handle("prepare", cfg, where, Payload())

    # Execute
    again = handle("prepare", cfg, where, Payload())
    _drop_rows(data, 3)
    changed = handle("prepare", cfg, where, Payload())

    # Assert
    assert (first.values["num-samples"], "resumed" in first.values) == (10, False)
    assert (again.values["num-samples"], again.values.get("resumed")) == (10, True)
    assert (changed.values["num-samples"], "resumed" in changed.values) == (7, False)
    assert len(_lines(tmp_path / "site" / "prepare" / "samples.jsonl")) == 7


def test_later_steps_follow_the_data_and_refuse_prepare_outputs_of_old_data(tmp_path):
    # Prepare: prepare and dynamics ran; then rows are removed from the data file
    data = _write_rows(tmp_path / "data.jsonl", 10)
    where = SiteLocation("a", str(data), tmp_path / "site")
    cfg = load_config(overrides={"scoring.scorers": ["length"]})
    handle("prepare", cfg, where, Payload())
    assert handle("dynamics", cfg, where, Payload()).values["moments"]["length"][0] == 10
    assert handle("dynamics", cfg, where, Payload()).values.get("resumed")
    _drop_rows(data, 3)

    # Execute / Assert: without a new prepare, dynamics neither answers from its stored reply nor reads old samples
    with pytest.raises(StaleDataError, match="data file changed since the cached prepare"):
        handle("dynamics", cfg, where, Payload())
    handle("prepare", cfg, where, Payload())
    redone = handle("dynamics", cfg, where, Payload())
    assert (redone.values["moments"]["length"][0], "resumed" in redone.values) == (7, False)


def test_prepare_raise_mode_propagates_data_error_and_marks_nothing_done(tmp_path):
    # Prepare
    data = _write_data(tmp_path / "data.jsonl", bad=True)
    cfg = load_config(overrides={"data.on-error": "raise"})

    # Execute
    with pytest.raises(DataError) as info:
        prepare("a", str(data), tmp_path / "site", cfg)

    # Assert
    assert [r.line for r in info.value.rejects] == [2, 5, 6]
    assert not step_done(tmp_path / "site", "prepare")


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
