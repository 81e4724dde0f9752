"""The `fedcurate` CLI end to end: validate, select on broken input (raise and skip), help examples."""

import json

import pytest

from fedcurate.app.cli import build_parser, main

BROKEN_ROWS = [
    b'{"id": "a", "instruction": "Say hi", "output": "hi"}',
    b'{"id": "b", "instruction": "Say bye", "output": ',  # 2: malformed JSON
    b'{"id": "c", "instruction": "Count to 3"}',  # 3: missing response field
    b'{"id": "d", "instruction": 42, "output": "x"}',  # 4: wrong type
    b'{"id": "e", "instruction": "Be quiet", "output": "   "}',  # 5: empty response
    b'{"id": "f", "instruction": "caf\xe9", "output": "ok"}',  # 6: invalid UTF-8
    b'{"id": "a", "instruction": "Say hi again", "output": "hi"}',  # 7: duplicate id
    b'{"id": "g", "instruction": "Add 1+1", "output": "2"}',
]


@pytest.fixture
def broken_file(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"\n".join(BROKEN_ROWS) + b"\n")
    return path


def test_select_on_broken_rows_names_every_line(broken_file, tmp_path, capsys):
    # Execute
    code = main(["select", "--input", str(broken_file), "--out", str(tmp_path / "run"),
                 "--set", "scoring.scorers=['length']"])
    # Assert
    err = capsys.readouterr().err
    assert code == 2
    for line in range(2, 8):
        assert f"broken.jsonl:{line}" in err, err


def test_select_skip_mode_writes_every_reject(broken_file, tmp_path, capsys):
    # Prepare
    out = tmp_path / "run"
    # Execute
    code = main(["select", "--input", str(broken_file), "--out", str(out),
                 "--set", "scoring.scorers=['length', 'random']", "--set", 'data.on-error="skip"'])
    # Assert
    assert code == 0
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["line"] for r in rejects) == [2, 3, 4, 5, 6, 7]
    assert all(r["reason"] for r in rejects)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["num_samples"] == 2 and stats["num_rejected_rows"] == 6
    assert "kept 1 of 2 samples" in capsys.readouterr().out


def test_validate_reports_config_errors(tmp_path, capsys):
    # Prepare
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[selection]\nmode = "top"\n')
    # Execute
    code = main(["validate", str(cfg)])
    # Assert
    assert code == 2
    assert "selection.mode = 'top': allowed values are" in capsys.readouterr().err


def test_every_subcommand_has_an_example():
    # Prepare
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    # Assert
    assert {"demo", "validate", "select", "simulate"} <= set(subparsers)
    for name, sub in subparsers.items():
        assert sub.epilog and f"fedcurate {name}" in sub.epilog, name
