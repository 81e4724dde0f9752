"""Fuzzing the data loaders: any file either loads or fails with DataFileError/DataError naming the file.

    .venv/bin/pytest tests/common/data/test_fuzz_loaders.py -q

Properties: arbitrary bytes, arbitrary lines and arbitrary JSON values never raise another exception type;
in skip mode every non-blank JSONL line (every JSON record) is either a sample or a reject naming the file
and a line in range; valid Alpaca rows survive load -> write_samples -> load unchanged; duplicate ids are
rejected naming the id column. The last tests pin bugs fuzzing found (huge integers, deep nesting, lone
surrogates, NaN/Infinity in extra columns): each is now a reject, never a crash or an unwritable sample.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from fedcurate.common.data.loaders import (
    DataFileError,
    LoadResult,
    load_samples,
    write_rejects,
    write_samples,
)
from fedcurate.common.data.sample import DataError, Reject

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LAYOUT_KEYS = ["id", "instruction", "input", "output", "response", "question", "answer", "prompt",
               "completion", "messages", "conversations", "source", "metadata"]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
# Rows that look like the known layouts, so that layout detection, field checks and duplicate ids all run.
row_like = st.dictionaries(st.sampled_from(LAYOUT_KEYS) | st.text(max_size=6),
                           json_values | st.sampled_from(["x", " ", "", "1"]), max_size=6)
good_row = st.fixed_dictionaries({"instruction": st.sampled_from(["Add 2+2.", "é"]), "output": st.just("4")},
                                  optional={"id": st.integers(0, 3) | st.sampled_from(["a", "b"])})
emoji = st.sampled_from(["🙂", "👩‍🔬", "🇫🇷", "𝔘", "ℵ", "\u200d", "é", "\u2028", "\r\n", "\t"])
any_text = st.lists(st.characters(exclude_categories=("Cs",)) | emoji, max_size=40).map("".join)
long_text = st.builds(lambda unit, n: unit * n, st.text(min_size=1, max_size=4), st.integers(1, 25_000))
field_text = (any_text | long_text).filter(lambda s: s.strip())


@contextmanager
def _tmp_dir() -> Iterator[Path]:
    """A fresh directory per hypothesis example (function-scoped fixtures are shared across examples)."""
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


def _load(path: Path, **kwargs: Any) -> LoadResult | DataError | DataFileError:
    """load_samples, with the two documented bad-input errors returned instead of raised (others propagate)."""
    try:
        return load_samples(path, **kwargs)
    except (DataError, DataFileError) as err:
        return err


def _check_reject(reject: Reject, path: Path, max_line: int) -> None:
    assert reject.file == str(path), reject
    assert 1 <= reject.line <= max_line, reject
    assert reject.reason, reject


def _is_blank(line: bytes, number: int) -> bool:
    """Blank as the loader defines it: valid UTF-8 whose str.strip() is empty (Unicode whitespace too)."""
    try:
        return not line.decode("utf-8-sig" if number == 1 else "utf-8").strip()
    except UnicodeDecodeError:
        return False


def _json_records(data: bytes) -> int:
    """How many records a .json file holds (a bare list, or the one list under data/train/examples)."""
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except ValueError:
        return 0
    if isinstance(doc, dict):
        doc = next((doc[k] for k in ("data", "train", "examples") if isinstance(doc.get(k), list)), None)
    return len(doc) if isinstance(doc, list) else 0


@FUZZ
@given(data=st.binary(max_size=400) | st.text(max_size=200).map(str.encode),
       ext=st.sampled_from(["jsonl", "json", "csv"]), on_error=st.sampled_from(["raise", "skip"]))
def test_arbitrary_bytes_load_or_fail_with_a_data_error(data, ext, on_error):
    """Any bytes under any extension: a result, DataError or DataFileError; never a partial result in raise mode."""
    with _tmp_dir() as tmp:
        # Prepare
        path = tmp / f"fuzz.{ext}"
        path.write_bytes(data)
        max_line = _json_records(data) if ext == "json" else data.count(b"\n") + 1

        # Execute
        out = _load(path, on_error=on_error)

        # Assert
        event(f"{ext}, {on_error}: {type(out).__name__}")
        if isinstance(out, DataFileError):
            assert str(path) in str(out)
        elif isinstance(out, DataError):
            assert out.rejects and on_error == "raise"
            for reject in out.rejects:
                _check_reject(reject, path, max_line)
        else:
            assert out.samples
            assert on_error == "skip" or not out.rejects
            for reject in out.rejects:
                _check_reject(reject, path, max_line)


line_bytes = (st.binary(max_size=30).map(lambda b: b.replace(b"\n", b""))
              | any_text.map(lambda s: s.replace("\n", " ").encode())
              | json_values.map(lambda v: json.dumps(v).encode())
              | row_like.map(lambda r: json.dumps(r, ensure_ascii=False).encode())
              | good_row.map(lambda r: json.dumps(r).encode())
              | st.just(b""))


@FUZZ
@given(lines=st.lists(line_bytes, min_size=1, max_size=12), crlf=st.booleans())
def test_jsonl_skip_mode_accounts_for_every_line(lines, crlf):
    """Skip mode: samples + rejects == non-blank lines, each reject names the file and its own line;
    raise mode raises DataError with exactly the same rejects (or a file error when skip mode has one)."""
    with _tmp_dir() as tmp:
        # Prepare
        path = tmp / "fuzz.jsonl"
        path.write_bytes(b"".join(line + (b"\r\n" if crlf else b"\n") for line in lines))
        non_blank = [n for n, line in enumerate(lines, 1) if not _is_blank(line, n)]

        # Execute
        skipped = _load(path, on_error="skip")
        raised = _load(path, on_error="raise")

        # Assert
        event(f"skip mode: {type(skipped).__name__}")
        assert not isinstance(skipped, DataError)
        if isinstance(skipped, DataFileError):  # no valid sample, or no row reveals the layout
            assert str(path) in str(skipped)
            assert isinstance(raised, DataFileError | DataError)
            for reject in getattr(raised, "rejects", []):
                _check_reject(reject, path, len(lines))
            return
        assert len(skipped.samples) + len(skipped.rejects) == len(non_blank)
        assert {r.line for r in skipped.rejects} <= set(non_blank)
        assert len({r.line for r in skipped.rejects}) == len(skipped.rejects)  # one reject per line
        for reject in skipped.rejects:
            _check_reject(reject, path, len(lines))
        if skipped.rejects:
            assert isinstance(raised, DataError) and raised.rejects == skipped.rejects
        else:
            assert isinstance(raised, LoadResult) and raised.samples == skipped.samples


@FUZZ
@given(records=st.lists(row_like | json_values | good_row, min_size=1, max_size=10),
       wrapper=st.sampled_from([None, "data", "train", "examples"]))
def test_json_skip_mode_accounts_for_every_record(records, wrapper):
    """A .json list (bare or under data/train/examples): samples + rejects == records, lines = index + 1."""
    with _tmp_dir() as tmp:
        # Prepare
        path = tmp / "fuzz.json"
        path.write_text(json.dumps(records if wrapper is None else {wrapper: records}), encoding="utf-8")

        # Execute
        out = _load(path, on_error="skip")

        # Assert
        event(f"skip mode: {type(out).__name__}")
        if isinstance(out, DataFileError):
            assert str(path) in str(out)
            return
        assert not isinstance(out, DataError)
        assert len(out.samples) + len(out.rejects) == len(records)
        for reject in out.rejects:
            _check_reject(reject, path, len(records))


csv_cells = any_text | st.sampled_from(["", " ", '"', '""', ",", "\n", "\r\n", "a\rb"])


@FUZZ
@given(header=st.lists(st.sampled_from(LAYOUT_KEYS) | st.text(max_size=5), min_size=1, max_size=5)
       | st.lists(st.sampled_from(["task", "id", "input"]), unique=True).map(lambda h: ["instruction", "output", *h]),
       data=st.data(), on_error=st.sampled_from(["raise", "skip"]))
def test_csv_records_of_any_shape_load_or_fail_cleanly(header, data, on_error):
    """CSV with duplicate/odd headers, ragged records and quoted newlines: result or a data error naming the file;
    in skip mode every non-blank record is a sample or a reject."""
    full = st.lists(csv_cells | st.just("ok"), min_size=len(header), max_size=len(header))
    rows = data.draw(st.lists(full | st.lists(csv_cells, max_size=6), max_size=8), label="rows")
    with _tmp_dir() as tmp:
        # Prepare
        path = tmp / "fuzz.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([header, *rows])
        lines = path.read_bytes().count(b"\n") + 1

        # Execute
        out = _load(path, on_error=on_error)

        # Assert
        event(f"{on_error}: {type(out).__name__}")
        if isinstance(out, DataFileError):
            assert str(path) in str(out)
        else:
            assert on_error == ("raise" if isinstance(out, DataError) else "skip") or not out.rejects
            for reject in out.rejects:
                _check_reject(reject, path, lines)
            if isinstance(out, LoadResult) and on_error == "skip":  # blank records ([]) are not rows
                assert len(out.samples) + len(out.rejects) == sum(1 for row in rows if row)


@st.composite
def alpaca_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Valid Alpaca rows: unique ids (or none), optional input, extra columns of JSON-safe values."""
    n = draw(st.integers(1, 6))
    ids = draw(st.lists(st.text(min_size=1, max_size=12).filter(str.strip), min_size=n, max_size=n, unique=True))
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"instruction": draw(field_text), "output": draw(field_text)}
        if draw(st.booleans()):
            row["id"] = f"id-{ids[i]}"  # the prefix keeps explicit ids apart from the default "<stem>:<line>"
        choice = draw(st.sampled_from(["absent", "empty", "null", "text"]))
        if choice != "absent":
            row["input"] = {"empty": "", "null": None, "text": draw(any_text)}[choice]
        extra = draw(st.dictionaries(st.sampled_from(["task", "lang", "extra_1", "notes"]),
                                     st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63)
                                                  | st.floats(allow_nan=False, allow_infinity=False) | any_text,
                                                  lambda c: st.lists(c, max_size=3)
                                                  | st.dictionaries(any_text, c, max_size=3), max_leaves=6),
                                     max_size=2))
        rows.append({**row, **extra})
    return rows


def _write_rows(path: Path, rows: list[dict[str, Any]], ascii_only: bool) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=ascii_only, indent=1), encoding="utf-8")
    else:
        columns = sorted({k for r in rows for k in r})
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows([{k: "" if r.get(k) is None else r.get(k, "") for k in columns} for r in rows])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rows=alpaca_rows(), ext=st.sampled_from(["jsonl", "json", "csv"]), ascii_only=st.booleans())
def test_valid_alpaca_rows_round_trip_through_write_samples(rows, ext, ascii_only):
    """Unicode (emoji, CRLF, U+2028), very long fields, extra columns: read exactly, and write_samples ->
    load_samples gives the same Samples back."""
    if ext == "csv":  # CSV carries strings only
        rows = [{k: v for k, v in r.items() if isinstance(v, str) or k in ("input",) and v is None} for r in rows]
    with _tmp_dir() as tmp:
        # Prepare
        path = tmp / f"rows.{ext}"
        _write_rows(path, rows, ascii_only)

        # Execute
        first = load_samples(path)
        write_samples(tmp / "native.jsonl", first.samples)
        again = load_samples(tmp / "native.jsonl")

        # Assert
        assert first.rejects == [] and again.rejects == []
        assert [(s.instruction, s.response, s.input) for s in first.samples] == \
            [(r["instruction"], r["output"], r.get("input") or "") for r in rows]
        assert [s.id for s in first.samples] == [r.get("id") or f"rows:{i}" for i, r in
                                                 zip(_row_lines(path, rows), rows, strict=True)]
        extras = [{k: v for k, v in r.items() if k not in ("id", "instruction", "input", "output")} for r in rows]
        if ext == "csv":
            extras = [{k: "" for k in sorted({k for e in extras for k in e})} | e for e in extras]
        assert [s.metadata for s in first.samples] == extras
        assert again.samples == first.samples


def _row_lines(path: Path, rows: list[dict[str, Any]]) -> list[int]:
    """The `line` each row gets: JSONL physical line, JSON index + 1, CSV first physical line of the record."""
    if path.suffix != ".csv":
        return list(range(1, len(rows) + 1))
    parts = path.read_bytes().decode("utf-8").split("\n")  # lines end at "\n" only (no universal newlines)
    reader = csv.reader([p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else []))
    next(reader)
    starts, start = [], reader.line_num + 1
    for _ in reader:
        starts.append(start)
        start = reader.line_num + 1
    return starts


@FUZZ
@given(ids=st.lists(st.text(min_size=1, max_size=6).filter(str.strip) | st.integers(0, 5), min_size=1, max_size=8),
       data=st.data(), id_column=st.sampled_from(["id", "uid"]))
def test_duplicate_ids_are_rejected_naming_the_id_column(ids, data, id_column):
    """Repeated ids (str(5) == "5" too): the first occurrence is kept, every later one is a reject whose field is
    the id column (the mapped one with data.columns) and whose reason names the first line."""
    # Prepare
    order = data.draw(st.lists(st.sampled_from(range(len(ids))), min_size=1, max_size=12))
    rows = [{id_column: ids[i], "instruction": f"q{n}", "output": f"a{n}"} for n, i in enumerate(order)]
    columns = {"id": id_column} if id_column != "id" else None
    first_line: dict[str, int] = {}
    expected = {}
    for line, row in enumerate(rows, 1):
        first = first_line.setdefault(str(row[id_column]), line)
        if first != line:
            expected[line] = first
    with _tmp_dir() as tmp:
        path = tmp / "dups.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

        # Execute
        skipped = load_samples(path, on_error="skip", columns=columns)
        raised = _load(path, columns=columns)

    # Assert
    assert [s.id for s in skipped.samples] == list(first_line)
    assert {r.line: r for r in skipped.rejects}.keys() == expected.keys()
    for reject in skipped.rejects:
        assert reject.field == id_column
        assert "duplicate id" in reject.reason and f"first seen at line {expected[reject.line]}" in reject.reason
    assert (isinstance(raised, DataError) and raised.rejects == skipped.rejects) if expected else \
        isinstance(raised, LoadResult)


# ---------------------------------------------------------------- regressions: bugs found by fuzzing, fixed
pathological = (st.integers(4301, 6000).map(lambda n: "9" * n)
                | st.integers(1000, 3000).map(lambda d: "[" * d + "]" * d)
                | st.integers(1000, 3000).map(lambda d: '{"a":' * d + "1" + "}" * d))


@settings(max_examples=10, deadline=None)
@given(value=pathological, ext=st.sampled_from(["jsonl", "json"]))
@example(value="9" * 5000, ext="jsonl")
@example(value="[" * 100_000 + "]" * 100_000, ext="jsonl")
def test_pathological_json_is_a_reject_not_a_crash(value, ext):
    """A huge integer literal or a deeply nested value on one line is one reject (JSONL) or a DataFileError (JSON)."""
    with _tmp_dir() as tmp:
        # Prepare
        path = tmp / f"bad.{ext}"
        good = '{"instruction": "a", "output": "b"}'
        path.write_text(f"{good}\n{value}\n" if ext == "jsonl" else f"[{good}, {value}]", encoding="utf-8")

        # Execute
        out = _load(path, on_error="skip")

    # Assert
    if ext == "jsonl":
        assert isinstance(out, LoadResult) and [r.line for r in out.rejects] == [2]
    else:
        assert isinstance(out, DataFileError | LoadResult)


@settings(max_examples=10, deadline=None)
@given(code=st.integers(0xD800, 0xDFFF), column=st.sampled_from(["instruction", "task"]))
@example(code=0xD800, column="instruction")
def test_lone_surrogate_escapes_do_not_break_the_writers(code, column):
    """What load_samples accepts (or rejects) can be written back by write_samples (and write_rejects)."""
    with _tmp_dir() as tmp:
        # Prepare
        path = tmp / "sur.jsonl"
        escaped = f"\\u{code:04x}"
        path.write_text('{"instruction": "ok", "output": "fine"}\n'
                        f'{{"instruction": "x{escaped}", "output": "y", "task": "t{escaped}"}}\n'
                        f'{{"{column}": "{escaped}"}}\n', encoding="utf-8")
        result = load_samples(path, on_error="skip")

        # Execute
        write_samples(tmp / "out.jsonl", result.samples)
        write_rejects(tmp / "rejects.jsonl", result.rejects)

        # Assert
        assert load_samples(tmp / "out.jsonl").samples == result.samples


@settings(max_examples=10, deadline=None)
@given(value=st.sampled_from(["NaN", "Infinity", "-Infinity"]))
@example(value="NaN")
@example(value="Infinity")
def test_non_finite_metadata_round_trips(value):
    """Metadata read from a row survives write_samples -> load_samples (or the row is rejected up front)."""
    with _tmp_dir() as tmp:
        # Prepare
        path = tmp / "nan.jsonl"
        path.write_text('{"instruction": "ok", "output": "fine"}\n'
                        f'{{"instruction": "a", "output": "b", "score": {value}}}\n', encoding="utf-8")
        first = load_samples(path, on_error="skip")

        # Execute
        write_samples(tmp / "out.jsonl", first.samples)
        again = load_samples(tmp / "out.jsonl")

        # Assert
        assert repr(again.samples) == repr(first.samples)  # repr: NaN != NaN
