"""Server phase bookkeeping: prepare summary maths and the summary/DONE layout."""

from __future__ import annotations

import json

import pytest

from fedcurate.common.protocol.layout import PHASES, phase_dir, phase_done, write_phase_done
from fedcurate.server.phases.prepare import summarize_prepare


def _reply(site: str, n: int, bad: int, by_reason: dict[str, int] | None = None) -> dict:
    return {"site": site, "num_samples": n, "num_rejects": bad, "rejects_by_reason": by_reason or {}}


def test_summarize_prepare_totals_shares_and_reject_rates():
    # Prepare
    replies = [_reply("b", 60, 0), _reply("a", 20, 5, {"wrong type (output)": 3, "malformed JSON": 2}),
               _reply("c", 120, 1, {"malformed JSON": 1})]

    # Execute
    summary = summarize_prepare(replies)

    # Assert
    assert (summary["num_sites"], summary["num_samples"], summary["num_rejects"]) == (3, 200, 6)
    assert summary["rejects_by_reason"] == {"malformed JSON": 3, "wrong type (output)": 3}
    assert list(summary["sites"]) == ["a", "b", "c"]
    assert summary["sites"]["a"]["share"] == pytest.approx(0.1)
    assert summary["sites"]["c"]["share"] == pytest.approx(0.6)
    assert summary["sites"]["a"]["reject_rate"] == pytest.approx(5 / 25)
    assert summary["sites"]["b"]["reject_rate"] == 0.0


def test_summarize_prepare_handles_sites_without_samples():
    # Execute
    summary = summarize_prepare([_reply("a", 0, 0)])

    # Assert
    assert summary["sites"]["a"] == {"num_samples": 0, "num_rejects": 0, "rejects_by_reason": {},
                                     "share": 0.0, "reject_rate": 0.0}


def test_summarize_prepare_rejects_duplicate_site_names():
    # Execute / Assert
    with pytest.raises(ValueError, match="same site name: a"):
        summarize_prepare([_reply("a", 1, 0), _reply("a", 2, 0), _reply("b", 1, 0)])


def test_write_phase_done_writes_summary_then_marker(tmp_path):
    # Prepare
    summary = summarize_prepare([_reply("a", 10, 1, {"malformed JSON": 1})])
    assert not phase_done(tmp_path, "prepare")

    # Execute
    path = write_phase_done(tmp_path, "prepare", summary)

    # Assert
    assert path == tmp_path / "server" / "prepare" / "summary.json"
    assert json.loads(path.read_text(encoding="utf-8")) == summary
    assert phase_done(tmp_path, "prepare")
    assert (phase_dir(tmp_path, "prepare") / "DONE").is_file()


def test_unknown_phase_is_an_error(tmp_path):
    # Execute / Assert
    assert PHASES[0] == "prepare"
    with pytest.raises(ValueError, match="unknown phase 'prep'"):
        phase_done(tmp_path, "prep")
