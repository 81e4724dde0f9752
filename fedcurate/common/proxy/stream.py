"""Read a corpus as a stream of Sample chunks, with a cursor that lets a later run start where one stopped.

    for chunk in iter_chunks("corpus.jsonl", DataConfig(), chunk_size=4096):
        ...                                    # chunk.samples, chunk.rejects, chunk.cursor, chunk.layout
    # later, in a new process: iter_chunks(..., cursor=saved_cursor, layout=saved_layout, seen=ids_done)

The rows, layouts and rejects are the loader's (`fedcurate.common.data.loaders` readers and
`formats.row_to_sample`), but nothing holds more than one chunk: JSONL is read line by line from a
byte offset (a resumed run seeks there), Parquet, CSV and `datasets` directories row by row through
the loader's streaming readers (a resumed run skips the rows already read). A JSON array file is
parsed whole by the loader: use JSONL or Parquet for corpora larger than memory.

Duplicate ids are rejected as the loader does (the first occurrence wins), which needs the ids seen so
far: the one thing that grows with the corpus, kept as 64-bit hashes (`IdSet`, about 10 bytes per sample).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from fedcurate.common.config import DataConfig
from fedcurate.common.data import formats
from fedcurate.common.data.loaders import RAW_CHARS, READERS, DataFileError, detect_format
from fedcurate.common.data.sample import Reject, Sample

logger = logging.getLogger(__name__)


class IdSet:
    """The ids seen so far in about 10 bytes each: 64-bit hashes (blake2b) in a sorted numpy array, plus a
    Python set of recent ones merged in whenever it reaches a quarter of the array. Two distinct ids
    share a hash with probability about n^2 / 2^65 (3e-8 for a million ids); the later one would then
    be rejected as a duplicate: counted and written to the rejects, never silently dropped.
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._sorted = np.zeros(0, dtype=np.uint64)
        self._recent: set[int] = set()
        for id_ in ids:
            self.add(id_)

    @staticmethod
    def _key(id_: str) -> int:
        return int.from_bytes(hashlib.blake2b(id_.encode("utf-8"), digest_size=8).digest(), "little")

    def __contains__(self, id_: object) -> bool:
        if not isinstance(id_, str):
            return False
        key = self._key(id_)
        if key in self._recent:
            return True
        i = int(np.searchsorted(self._sorted, np.uint64(key)))
        return i < len(self._sorted) and int(self._sorted[i]) == key

    def add(self, id_: str) -> None:
        self._recent.add(self._key(id_))
        if len(self._recent) >= max(65536, len(self._sorted) // 4):
            fresh = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
            self._sorted = np.union1d(self._sorted, fresh)
            self._recent.clear()

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)


@dataclass(frozen=True)
class Cursor:
    """How far a stream has read: `records` items of the reader (JSONL: physical lines), `offset` bytes (JSONL)."""

    records: int = 0
    offset: int = 0


@dataclass
class Chunk:
    """Valid samples and rejected rows of one stretch of the input, and the cursor just after it."""

    samples: list[Sample] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    cursor: Cursor = field(default_factory=Cursor)
    layout: str | None = None
    last: bool = False  # True for the final chunk of the input (or of max_samples)


def _jsonl_items(path: Path, start: Cursor) -> Iterator[tuple[tuple[int, Any] | Reject | None, Cursor]]:
    """(item, cursor after it) per physical line from `start`; a blank line's item is None."""
    line, offset = start.records, start.offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        for data in fh:
            line, offset = line + 1, offset + len(data)
            yield _parse_line(path, line, data), Cursor(line, offset)


def _parse_line(path: Path, line: int, data: bytes) -> tuple[int, Any] | Reject | None:
    try:
        text = data.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as err:
        return Reject(str(path), line, "", f"invalid UTF-8 at byte {err.start} of the line ({err.reason})",
                      data.decode("utf-8", errors="replace")[:RAW_CHARS])
    if not text.strip():
        return None
    try:
        return line, json.loads(text)
    except json.JSONDecodeError as err:
        return Reject(str(path), line, "", f"malformed JSON at column {err.colno}: {err.msg}",
                      text.rstrip("\r\n")[:RAW_CHARS])


def _reader_items(path: Path, fmt: str, start: Cursor) -> Iterator[tuple[tuple[int, Any] | Reject | None, Cursor]]:
    for k, item in enumerate(islice(READERS[fmt](path), start.records, None), start.records + 1):
        yield item, Cursor(k, 0)


def iter_chunks(path: str | Path, data_cfg: DataConfig, chunk_size: int, *, cursor: Cursor | None = None,
                layout: str | None = None, seen: IdSet | None = None, done: int = 0) -> Iterator[Chunk]:
    """Chunks of up to `chunk_size` valid samples from `cursor` on.

    `layout` is the row layout found earlier (None: detect it, or take `data_cfg.schema`), `seen` the
    ids already read (updated in place), `done` the valid samples already read (for data.max-samples).
    A chunk never ends while rows wait for layout detection.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: data file not found")
    fmt = detect_format(path) if data_cfg.format == "auto" else data_cfg.format
    columns = formats.validate_columns(dict(data_cfg.columns))
    cursor = cursor or Cursor()
    items = _jsonl_items(path, cursor) if fmt == "jsonl" else _reader_items(path, fmt, cursor)
    layout = layout or (None if data_cfg.schema == "auto" else data_cfg.schema)
    seen = IdSet() if seen is None else seen
    limit = data_cfg.max_samples
    chunk, pending = Chunk(cursor=cursor, layout=layout), []
    for item, where in items:
        chunk.cursor = where
        if isinstance(item, Reject):
            chunk.rejects.append(item)
        elif item is not None and not isinstance(item[1], dict):
            chunk.rejects.append(Reject(str(path), item[0], "", f"row is not an object (got "
                                        f"{type(item[1]).__name__})", _raw(item[1])))
        elif item is not None:
            pending.append(item)
            chunk.layout = chunk.layout or _detect(path, item[1], columns)
            if chunk.layout:
                _convert(path, pending, chunk, columns, seen)
                pending.clear()
        full = len(chunk.samples) >= chunk_size
        at_limit = bool(limit) and done + len(chunk.samples) >= limit
        if (full or at_limit) and not pending:
            done += len(chunk.samples)
            chunk.last = at_limit
            yield chunk
            if at_limit:
                return
            chunk = Chunk(cursor=where, layout=chunk.layout)
    if pending:
        line, row = pending[0]
        raise DataFileError(f"{path}: cannot detect the row layout (the row at line {line} has keys {sorted(row)}); "
                            f"known layouts: {formats.describe_schemas()}")
    chunk.last = True
    yield chunk


def _detect(path: Path, row: dict[str, Any], columns: dict[str, str]) -> str | None:
    layout = formats.detect_schema(row.keys(), columns)
    if layout:
        logger.info("%s: detected row layout %r", path, layout)
    return layout


def _convert(path: Path, rows: list[tuple[int, Any]], chunk: Chunk, columns: dict[str, str], seen: IdSet) -> None:
    """Rows -> samples (or rejects) into `chunk`, in order; duplicate ids are rejected."""
    assert chunk.layout is not None
    for line, row in rows:
        try:
            sample = formats.row_to_sample(row, chunk.layout, columns, default_id=f"{path.stem}:{line}",
                                           file_name=path.name)
        except formats.RowError as err:
            chunk.rejects.append(Reject(str(path), line, err.field, err.reason, _raw(row)))
            continue
        if sample.id in seen:
            chunk.rejects.append(Reject(str(path), line, columns.get("id", "id"),
                                        f"duplicate id {sample.id!r} (seen earlier in the file)", _raw(row)))
            continue
        seen.add(sample.id)
        chunk.samples.append(sample)


def _raw(row: Any) -> str:
    return json.dumps(row, ensure_ascii=False, default=str)[:RAW_CHARS]
