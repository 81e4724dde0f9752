"""Loaders: every file format round-trips, broken rows become exact rejects, skip mode, writers."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path

import pytest

from fedcurate.common.config import DataConfig
from fedcurate.common.data.loaders import (
    DataFileError,
    data_digest,
    load_from_config,
    load_samples,
    write_rejects,
    write_samples,
)
from fedcurate.common.data.sample import DataError, Reject, Sample

GSM8K = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "gsm8k" / "train.jsonl"
ROWS = [
    {"id": "r1", "instruction": "Add 2 and 2.", "input": "", "output": "4", "task": "math"},
    {"id": "r2", "instruction": "Name a colour.", "input": "warm", "output": "Red, as in \"fire\".",
     "task": "open"},
    {"id": "r3", "instruction": "Translate", "input": "chat", "output": "cat\nthe animal", "task": "mt"},
]


def _write_jsonl_bytes(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


def _write_hf(path: Path, rows: list[dict]) -> None:
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(path))


WRITERS = {
    "data.jsonl": lambda p, rows: p.write_text("".join(json.dumps(r) + "\n" for r in rows)),
    "data.json": lambda p, rows: p.write_text(json.dumps(rows)),
    "wrapped.json": lambda p, rows: p.write_text(json.dumps({"version": 1, "train": rows})),
    "data.csv": _write_csv,
    "data.parquet": _write_parquet,
    "data_dir": _write_hf,
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_format_round_trips(tmp_path, name):
    # Prepare
    path = tmp_path / name
    WRITERS[name](path, ROWS)

    # Execute
    result = load_samples(path)

    # Assert
    assert result.rejects == []
    assert [(s.id, s.instruction, s.input, s.response) for s in result.samples] == \
        [(r["id"], r["instruction"], r["input"], r["output"]) for r in ROWS]
    assert [s.metadata for s in result.samples] == [{"task": r["task"]} for r in ROWS]
    assert {s.source for s in result.samples} == {name}


def test_hf_dataset_dict_uses_train_split_and_names_splits_otherwise(tmp_path):
    # Prepare
    import datasets

    rows = [{"question": "Q", "answer": "A"}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "with"))
    datasets.DatasetDict({"dev": datasets.Dataset.from_list(rows),
                          "test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "without"))

    # Execute
    result = load_samples(tmp_path / "with")
    with pytest.raises(DataFileError) as info:
        load_samples(tmp_path / "without")

    # Assert
    assert [(s.id, s.instruction) for s in result.samples] == [("with:1", "Q")]
    assert "dev, test" in str(info.value)


@pytest.mark.parametrize(
    ("row", "instruction", "response"),
    [
        ({"instruction": "I", "output": "O"}, "I", "O"),
        ({"messages": [{"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]}, "U", "A"),
        ({"conversations": [{"from": "human", "value": "H"}, {"from": "gpt", "value": "G"}]}, "H", "G"),
        ({"question": "Q", "answer": "A"}, "Q", "A"),
        ({"prompt": "P", "completion": "C"}, "P", "C"),
        ({"instruction": "I", "response": "R", "metadata": {"k": 1}}, "I", "R"),
    ],
)
def test_every_schema_is_auto_detected_from_a_file(tmp_path, row, instruction, response):
    # Prepare
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")

    # Execute
    (sample,) = load_samples(path).samples

    # Assert
    assert (sample.id, sample.instruction, sample.response) == ("rows:1", instruction, response)


def test_layout_is_detected_from_first_matching_row_even_after_bad_rows(tmp_path):
    # Prepare: line 1 lacks the answer, so only line 2 reveals question-answer
    path = _write_jsonl_bytes(tmp_path / "late.jsonl", [b'{"question": "Q0"}', b'{"question": "Q", "answer": "A"}',
                                                        b'"text"'])

    # Execute
    result = load_samples(path, on_error="skip")

    # Assert
    assert [(s.id, s.instruction) for s in result.samples] == [("late:2", "Q")]
    assert [(r.line, r.field) for r in result.rejects] == [(1, "answer"), (3, "")]


def test_column_mapping_on_unknown_layout_and_bad_mapping_key(tmp_path):
    # Prepare
    path = tmp_path / "custom.parquet"
    _write_parquet(path, [{"uid": 7, "ask": "A?", "reply": "B.", "clean": True}])

    # Execute
    (sample,) = load_samples(path, columns={"id": "uid", "instruction": "ask", "response": "reply"}).samples
    with pytest.raises(ValueError, match="'answer' is not a Sample field"):
        load_samples(path, columns={"instruction": "ask", "answer": "reply"})
    with pytest.raises(DataFileError, match="cannot detect the row layout"):
        load_samples(path)

    # Assert
    assert (sample.id, sample.instruction, sample.response, sample.metadata) == ("7", "A?", "B.", {"clean": True})


BROKEN = [
    b'{"id": "a", "instruction": "Say hi", "response": "hi"}',  # 1 good
    b'{"id": "b", "instruction": "x", "response": "y"',  # 2 malformed JSON
    b'{"id": "c", "instruction": "x"}',  # 3 missing response
    b'{"id": "d", "instruction": "x", "response": 42}',  # 4 wrong type (number not converted)
    b'{"id": "e", "instruction": "x", "response": "  \\n "}',  # 5 whitespace-only response
    b'{"id": "f", "instruction": "caf\xe9", "response": "r"}',  # 6 invalid UTF-8 (latin-1 byte)
    b'{"id": "a", "instruction": "again", "response": "dup"}',  # 7 duplicate id of line 1
    b'["not", "an", "object"]',  # 8 not an object
    b"   ",  # 9 blank: skipped
    b'{"id": "g", "instruction": "", "response": "r"}',  # 10 empty instruction
    b'{"id": "h", "instruction": "x", "input": 5, "response": "r"}',  # 11 wrong type input
    b'{"id": "i", "instruction": "Keep", "response": "me", "clean": false, "task": "t"}',  # 12 good
    b'{"id": 13, "instruction": "Int id", "response": "ok"}',  # 13 good, id "13"
]
EXPECTED = [
    (2, "", "malformed JSON"),
    (3, "response", "missing required field 'response'"),
    (4, "response", "wrong type: expected a string, got int 42"),
    (5, "response", "empty or whitespace-only response"),
    (6, "", "invalid UTF-8"),
    (7, "id", "duplicate id 'a' (first seen at line 1)"),
    (8, "", "row is not an object (got list)"),
    (10, "instruction", "empty or whitespace-only instruction"),
    (11, "input", "wrong type"),
]


def _check_rejects(rejects: list[Reject], path: Path) -> None:
    assert [(r.line, r.field) for r in rejects] == [(line, field) for line, field, _ in EXPECTED]
    for reject, (_, _, reason) in zip(rejects, EXPECTED, strict=True):
        assert reason in reject.reason
        assert reject.file == str(path)
        assert reject.raw


def test_broken_jsonl_raises_with_every_bad_line(tmp_path):
    # Prepare
    path = _write_jsonl_bytes(tmp_path / "broken.jsonl", BROKEN)

    # Execute
    with pytest.raises(DataError) as info:
        load_samples(path)

    # Assert
    _check_rejects(info.value.rejects, path)
    assert f"{path}:6" in str(info.value) and f"{path}:11: field 'input'" in str(info.value)


def test_broken_jsonl_skip_mode_keeps_good_rows_and_logs(tmp_path, caplog):
    # Prepare
    path = _write_jsonl_bytes(tmp_path / "broken.jsonl", BROKEN)

    # Execute
    with caplog.at_level(logging.WARNING):
        result = load_samples(path, on_error="skip", source="site-a")

    # Assert
    assert [s.id for s in result.samples] == ["a", "i", "13"]
    assert result.samples[1].metadata == {"clean": False, "task": "t"}
    assert {s.source for s in result.samples} == {"site-a"}
    _check_rejects(result.rejects, path)
    assert "skipped 9 bad row(s)" in caplog.text


def test_write_rejects_is_readable_jsonl(tmp_path):
    # Prepare
    path = _write_jsonl_bytes(tmp_path / "broken.jsonl", BROKEN)
    rejects = load_samples(path, on_error="skip").rejects

    # Execute
    write_rejects(tmp_path / "out" / "rejects.jsonl", rejects)

    # Assert
    lines = (tmp_path / "out" / "rejects.jsonl").read_text(encoding="utf-8").splitlines()
    assert [Reject(**json.loads(line)) for line in lines] == rejects


def test_write_samples_round_trips_native_layout(tmp_path):
    # Prepare
    samples = [Sample("x1", "I", "R", input="ctx", source="gsm8k", metadata={"clean": True, "n": [1, 2]}),
               Sample("x2", "I2", "R2")]

    # Execute
    written = write_samples(tmp_path / "samples.jsonl", samples)
    loaded = load_samples(tmp_path / "samples.jsonl").samples

    # Assert
    assert written == 2
    assert loaded == [samples[0], Sample("x2", "I2", "R2", source="samples.jsonl")]


def test_csv_lines_count_header_and_multiline_fields(tmp_path):
    # Prepare: line 1 header, 2 good, 3-5 one quoted record, 6 empty response, 7 bad UTF-8, 8 short row
    path = tmp_path / "rows.csv"
    path.write_bytes(b'instruction,response\n'
                     b'a,b\n'
                     b'"multi","first\nsecond\nthird"\n'
                     b'c,\n'
                     b'd\xff,e\n'
                     b'only-one-field\n'
                     b'f,g\n')

    # Execute
    result = load_samples(path, on_error="skip")

    # Assert
    assert [s.id for s in result.samples] == ["rows:2", "rows:3", "rows:9"]
    assert result.samples[1].response == "first\nsecond\nthird"
    assert [(r.line, r.field) for r in result.rejects] == [(6, "response"), (7, ""), (8, "")]
    assert "invalid UTF-8" in result.rejects[1].reason and "1 fields" in result.rejects[2].reason


def test_invalid_json_file_names_file_line_and_column(tmp_path):
    # Prepare
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"instruction": "I", "response": "R"},\n  {"instruction": }\n]\n')

    # Execute
    with pytest.raises(DataFileError) as info:
        load_samples(path)

    # Assert
    assert str(path) in str(info.value) and "line 3 column" in str(info.value)


def test_file_level_errors_name_the_file(tmp_path):
    # Prepare
    unknown = tmp_path / "data.txt"
    unknown.write_text("x")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    all_bad = _write_jsonl_bytes(tmp_path / "allbad.jsonl", [b'{"instruction": "x", "response": ""}'])
    unknown_layout = _write_jsonl_bytes(tmp_path / "layout.jsonl", [b'{"instruction": "x"}', b'{"q": 1}'])

    # Execute / Assert
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_samples(tmp_path / "missing.jsonl")
    with pytest.raises(DataFileError, match=r"data\.txt.*\.jsonl.*parquet"):
        load_samples(unknown)
    with pytest.raises(DataFileError, match="empty.jsonl: no valid samples"):
        load_samples(empty)
    with pytest.raises(DataFileError, match="allbad.jsonl: no valid samples"):
        load_samples(all_bad, on_error="skip")
    with pytest.raises(DataFileError, match=r"layout.jsonl: cannot detect the row layout \(the row at line 1"):
        load_samples(unknown_layout, on_error="skip")
    with pytest.raises(ValueError, match="format = 'xml'"):
        load_samples(empty, format="xml")


def test_max_samples_keeps_first_valid(tmp_path):
    # Prepare
    path = _write_jsonl_bytes(tmp_path / "broken.jsonl", BROKEN)

    # Execute
    result = load_samples(path, on_error="skip", max_samples=2)

    # Assert
    assert [s.id for s in result.samples] == ["a", "i"]


def test_load_from_config_path_override(tmp_path):
    # Prepare
    path = tmp_path / "qa.csv"
    _write_csv(path, [{"q": "Q1", "a": "A1"}, {"q": "Q2", "a": ""}])
    cfg = DataConfig(path=str(tmp_path / "elsewhere.csv"), schema="columns",
                     columns={"instruction": "q", "response": "a"}, on_error="skip")

    # Execute
    result = load_from_config(cfg, path=path)

    # Assert
    assert [(s.id, s.instruction, s.response) for s in result.samples] == [("qa:2", "Q1", "A1")]
    assert [(r.line, r.field) for r in result.rejects] == [(3, "a")]


def test_data_digest_follows_the_content_not_the_path(tmp_path):
    # Prepare: the same bytes at two paths, and a copy with one row removed
    rows = "".join(json.dumps(r) + "\n" for r in ROWS)
    a, b, fewer = tmp_path / "a.jsonl", tmp_path / "sub" / "b.jsonl", tmp_path / "fewer.jsonl"
    b.parent.mkdir()
    a.write_text(rows, encoding="utf-8")
    b.write_text(rows, encoding="utf-8")
    fewer.write_text(rows.split("\n", 1)[1], encoding="utf-8")

    # Execute / Assert: the path is not part of the digest (cache keys hold it separately)
    assert data_digest(a) == data_digest(b) == hashlib.sha256(rows.encode()).hexdigest()
    assert data_digest(fewer) != data_digest(a)
    with pytest.raises(FileNotFoundError):
        data_digest(tmp_path / "missing.jsonl")


def test_data_digest_of_a_datasets_directory_covers_every_file_name_and_content(tmp_path):
    # Prepare
    _write_hf(tmp_path / "one", ROWS)
    _write_hf(tmp_path / "two", ROWS)
    _write_hf(tmp_path / "fewer", ROWS[:2])
    digest = data_digest(tmp_path / "one")

    # Execute / Assert
    assert data_digest(tmp_path / "two") == digest  # same files, other folder
    assert data_digest(tmp_path / "fewer") != digest
    (tmp_path / "two" / "extra.txt").write_text("", encoding="utf-8")
    added = data_digest(tmp_path / "two")
    assert added != digest  # an added (even empty) file
    (tmp_path / "two" / "extra.txt").rename(tmp_path / "two" / "other.txt")
    assert data_digest(tmp_path / "two") not in (digest, added)  # a renamed file
    (tmp_path / "two" / "other.txt").unlink()
    assert data_digest(tmp_path / "two") == digest


@pytest.mark.skipif(not GSM8K.exists(), reason="shared GSM8K file not present")
@pytest.mark.parametrize("kwargs", [{}, {"schema": "columns",
                                         "columns": {"instruction": "question", "response": "answer"}}])
def test_real_gsm8k_loads(kwargs):
    # Execute
    result = load_samples(GSM8K, **kwargs)

    # Assert
    assert len(result.samples) == 7473 and result.rejects == []
    assert result.samples[0].instruction.startswith("Natalia sold clips")
    assert result.samples[0].response.endswith("#### 72")
    assert len({s.id for s in result.samples}) == 7473
