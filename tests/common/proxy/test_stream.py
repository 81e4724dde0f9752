"""Streaming the corpus in chunks: the loader's samples and rejects, and a cursor that resumes exactly."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedcurate.common.config import DataConfig
from fedcurate.common.data.loaders import DataFileError, load_samples, write_samples
from fedcurate.common.proxy.stream import IdSet, iter_chunks
from fedcurate.simulations.synthetic import generate_clean


def messy_jsonl(path):
    """Alpaca rows with a blank line, malformed JSON, a non-object row, a missing field and a duplicate id."""
    rows = [json.dumps({"id": f"r{k}", "instruction": f"Say {k}", "output": str(k)}) for k in range(10)]
    rows[3] = "{not json"
    rows[5] = json.dumps([1, 2])
    rows[6] = json.dumps({"id": "r6", "instruction": "no answer"})
    rows[8] = json.dumps({"id": "r1", "instruction": "again", "output": "x"})
    path.write_text("\n".join(rows[:4] + [""] + rows[4:]) + "\n")
    return path


def test_chunks_hold_the_loaders_samples_and_rejects(tmp_path):
    # Prepare
    path = messy_jsonl(tmp_path / "d.jsonl")
    expected = load_samples(path, on_error="skip")
    # Execute
    chunks = list(iter_chunks(path, DataConfig(), chunk_size=2))
    # Assert
    assert [s for c in chunks for s in c.samples] == expected.samples
    got = [(r.line, r.field, r.reason.split(" (")[0]) for c in chunks for r in c.rejects]
    assert got == [(r.line, r.field, r.reason.split(" (")[0]) for r in expected.rejects]  # same rows, same causes
    assert len(got) == 4
    assert all(len(c.samples) <= 2 for c in chunks) and chunks[-1].last and not chunks[0].last


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_resumed_stream_continues_exactly_after_the_cursor(tmp_path, fmt):
    # Prepare
    samples = generate_clean(50, 0)
    path = tmp_path / f"d.{fmt}"
    if fmt == "jsonl":
        write_samples(path, samples)
    else:
        pq.write_table(pa.Table.from_pylist([{"id": s.id, "instruction": s.instruction, "output": s.response}
                                             for s in samples]), path)
    full = list(iter_chunks(path, DataConfig(), chunk_size=7))
    stop = full[2]
    # Execute: a new stream from the third chunk's cursor, with what a resumed run would know
    seen = {s.id for c in full[:3] for s in c.samples}
    rest = list(iter_chunks(path, DataConfig(), chunk_size=7, cursor=stop.cursor, layout=stop.layout, seen=seen,
                            done=21))
    # Assert
    assert [s.id for c in rest for s in c.samples] == [s.id for c in full[3:] for s in c.samples]
    assert [s.id for c in full for s in c.samples] == [s.id for s in samples]


def test_a_resumed_stream_still_rejects_ids_seen_before_the_cursor(tmp_path):
    # Prepare
    path = messy_jsonl(tmp_path / "d.jsonl")
    first = next(iter(iter_chunks(path, DataConfig(), chunk_size=2)))
    # Execute
    rest = list(iter_chunks(path, DataConfig(), chunk_size=2, cursor=first.cursor, layout=first.layout,
                            seen={s.id for s in first.samples}))
    # Assert: "r1" was read in the first chunk, so its second occurrence is still a duplicate
    assert "r1" not in [s.id for c in rest for s in c.samples]
    assert any("duplicate id 'r1'" in r.reason for c in rest for r in c.rejects)


def test_max_samples_stops_the_stream(tmp_path):
    # Prepare
    path = tmp_path / "d.jsonl"
    write_samples(path, generate_clean(30, 0))
    # Execute
    chunks = list(iter_chunks(path, DataConfig(max_samples=11), chunk_size=4))
    # Assert
    assert [len(c.samples) for c in chunks] == [4, 4, 3] and chunks[-1].last


def test_undetectable_layout_is_an_error(tmp_path):
    # Prepare
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"foo": 1}) + "\n")
    # Execute / Assert
    with pytest.raises(DataFileError, match="cannot detect the row layout"):
        list(iter_chunks(path, DataConfig(), chunk_size=4))


def test_id_set_remembers_every_id_across_merges():
    # Prepare: more ids than the recent set holds, so hashes move into the sorted array
    ids = [f"id-{k}" for k in range(70_000)]
    # Execute
    seen = IdSet(ids)
    # Assert
    assert len(seen) == 70_000 and len(seen._sorted) >= 65_536
    assert all(i in seen for i in ids[::7]) and ids[-1] in seen and ids[0] in seen
    assert not any(f"other-{k}" in seen for k in range(2000))
