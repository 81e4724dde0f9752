"""Load instruction data from JSONL/JSON/Parquet/CSV/`datasets` directories into validated `Sample`s.

    result = load_samples("train.jsonl")                          # format and layout detected
    result = load_samples("gsm8k.parquet", columns={"instruction": "question", "response": "answer"},
                          on_error="skip")                        # good rows + result.rejects
    write_rejects("run/rejects.jsonl", result.rejects)
    digest = data_digest("train.jsonl")                           # sha256 of the content (cache keys)

Every bad row becomes a `Reject(file, line, field, reason, raw)`: `line` is the 1-based physical line for
JSONL and CSV (the CSV header is line 1; a quoted multi-line record is named by its first line) and the
record index + 1 for JSON, Parquet and `datasets`. The whole file is read before `on_error="raise"` raises
`DataError`, so every bad row is listed at once. Row layouts live in `formats.py`; the layout is detected
per file from the first row whose keys match one (rows before it wait, then are judged with it).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcurate.common.config import DataConfig
from fedcurate.common.data import formats
from fedcurate.common.data.sample import DataError, Reject, Sample
from fedcurate.common.io import write_jsonl

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "json", "parquet", "csv", "hf-disk")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet",
              ".csv": "csv"}
HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
JSON_KEYS = ("data", "train", "examples")  # where a JSON object file may hold its list of records
RAW_CHARS = 300  # how much of a bad row a Reject keeps

Item = tuple[int, Any] | Reject  # (line, parsed row) or a row that failed before parsing


class DataFileError(ValueError):
    """A whole input file is unusable (unknown format, unparsable JSON, no valid samples, ...)."""


@dataclass
class LoadResult:
    """The valid samples, in file order, and every rejected row."""

    samples: list[Sample]
    rejects: list[Reject]


def load_samples(path: str | Path, *, format: str = "auto", schema: str = "auto",
                 columns: dict[str, str] | None = None, on_error: str = "raise",
                 max_samples: int = 0, source: str | None = None) -> LoadResult:
    """Read one file (or `datasets` directory) into Samples; see the module docstring for the rules.

    `max_samples` > 0 stops reading after that many valid samples. Raises FileNotFoundError for a
    missing path, DataError (every reject) when `on_error="raise"` and a row is bad, DataFileError when
    the file as a whole is unusable or yields no valid sample (also in skip mode), ValueError for bad
    arguments.
    """
    path = Path(path)
    mapping = _check_args(format, schema, columns, on_error, max_samples)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "data file not found", str(path))
    fmt = detect_format(path) if format == "auto" else format
    samples, rejects = _collect(READERS[fmt](path), path, schema, mapping, source, max_samples)
    if rejects and on_error == "raise":
        raise DataError(rejects)
    if not samples:
        shown = "".join(f"\n  {r}" for r in rejects[:5])
        raise DataFileError(f"{path}: no valid samples ({len(rejects)} row(s) rejected){shown}")
    if rejects:
        logger.warning("%s: skipped %d bad row(s), kept %d (first: %s)", path, len(rejects), len(samples),
                       rejects[0])
    logger.info("%s: loaded %d samples (%s)", path, len(samples), fmt)
    return LoadResult(samples=samples, rejects=rejects)


def load_from_config(data_cfg: DataConfig, path: str | Path | None = None) -> LoadResult:
    """`load_samples` with the [data] section's settings; `path` (e.g. `--input`) overrides data.path."""
    target = path or data_cfg.path
    if not target:
        raise ValueError("no input data: set data.path in the config or pass an input path")
    return load_samples(target, format=data_cfg.format, schema=data_cfg.schema, columns=dict(data_cfg.columns),
                        on_error=data_cfg.on_error, max_samples=data_cfg.max_samples)


def data_digest(path: str | Path) -> str:
    """sha256 (hex) of a data source's content, read in chunks: what `load_samples` would read, not where.

    A file: the sha256 of its bytes (what `sha256sum` prints). A directory (`datasets` save_to_disk): the
    sha256 over its files, recursively, in sorted order of their relative POSIX paths, of each path,
    a NUL, and the sha256 of the file's bytes; so a renamed, added, removed or edited file changes it.
    The path itself is not part of the digest. Raises FileNotFoundError for a missing path.
    """
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        files = sorted((p.relative_to(path).as_posix(), p) for p in _files_under(path))
        for name, file in files:
            h.update(name.encode("utf-8", "surrogateescape") + b"\0" + bytes.fromhex(_file_sha256(file)))
        return h.hexdigest()
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "data file not found", str(path))
    return _file_sha256(path)


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()  # reads in fixed-size chunks


def _files_under(root: Path) -> Iterator[Path]:
    def fail(err: OSError) -> None:  # an unreadable folder must not silently drop out of the digest
        raise err

    for folder, _, names in os.walk(root, onerror=fail):  # symlinked files followed, symlinked folders not
        yield from (Path(folder, n) for n in names if Path(folder, n).is_file())


def write_rejects(path: str | Path, rejects: list[Reject]) -> None:
    """One `Reject.to_dict()` per line, atomically; text UTF-8 cannot carry (a lone surrogate in `raw`, or in a
    file name decoded with surrogateescape) is written as a backslash escape, so every reject is writable."""
    write_jsonl(path, ({k: _encodable(v) for k, v in r.to_dict().items()} for r in rejects))


def write_samples(path: str | Path, samples: Iterable[Sample]) -> int:
    """Samples as JSONL in the native layout (read back by `load_samples`), atomically; returns the count."""
    return write_jsonl(path, (s.to_dict() for s in samples))


def detect_format(path: Path) -> str:
    """The format `auto` picks: by extension, or `hf-disk` for a `save_to_disk` directory."""
    if path.is_dir():
        if any((path / marker).exists() for marker in HF_MARKERS):
            return "hf-disk"
        raise DataFileError(f"{path}: a directory but not a `datasets` save_to_disk directory "
                            f"(none of {', '.join(HF_MARKERS)} found)")
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise DataFileError(f"{path}: unknown file extension {path.suffix!r}; allowed: "
                            f"{', '.join(f'{e} ({f})' for e, f in EXTENSIONS.items())}, or a `datasets` "
                            f"directory; or set the format explicitly (one of {', '.join(FORMATS)})")
    return fmt


def _check_args(format: str, schema: str, columns: dict[str, str] | None, on_error: str,
                max_samples: int) -> dict[str, str]:
    problems = []
    if format != "auto" and format not in FORMATS:
        problems.append(f"format = {format!r}: allowed values are auto, {', '.join(FORMATS)}")
    if schema != "auto" and schema not in formats.SCHEMAS:
        problems.append(f"schema = {schema!r}: allowed values are auto, {', '.join(formats.SCHEMAS)}")
    if on_error not in ("raise", "skip"):
        problems.append(f"on_error = {on_error!r}: allowed values are 'raise', 'skip'")
    if max_samples < 0:
        problems.append(f"max_samples = {max_samples}: must be >= 0")
    try:
        mapping = formats.validate_columns(columns)
    except ValueError as err:
        problems.append(str(err))
        mapping = {}
    missing = [f for f in ("instruction", "response") if f not in mapping]
    if schema == "columns" and missing:
        problems.append(f"schema = 'columns' needs columns for {', '.join(missing)}")
    if problems:
        raise ValueError("; ".join(problems))
    return mapping


def _collect(items: Iterable[Item], path: Path, schema: str, columns: dict[str, str], source: str | None,
             max_samples: int) -> tuple[list[Sample], list[Reject]]:
    """Turn parsed rows into Samples, in file order; reject duplicate ids (by first-seen line)."""
    samples: list[Sample] = []
    rejects: list[Reject] = []
    first_line: dict[str, int] = {}
    for line, row, layout in _with_schema(items, path, schema, columns, rejects):
        try:
            sample = formats.row_to_sample(row, layout, columns, default_id=f"{path.stem}:{line}",
                                           file_name=path.name, source=source)
        except formats.RowError as err:
            rejects.append(Reject(str(path), line, err.field, err.reason, _raw(row)))
            continue
        first = first_line.setdefault(sample.id, line)
        if first != line:
            rejects.append(Reject(str(path), line, columns.get("id", "id"),
                                  f"duplicate id {sample.id!r} (first seen at line {first})", _raw(row)))
            continue
        samples.append(sample)
        if max_samples and len(samples) >= max_samples:
            break
    rejects.sort(key=lambda r: r.line)  # rows held back for layout detection are judged late
    return samples, rejects


def _with_schema(items: Iterable[Item], path: Path, schema: str, columns: dict[str, str],
                 rejects: list[Reject]) -> Iterator[tuple[int, dict[str, Any], str]]:
    """Object rows with their layout; with "auto", rows wait until one row's keys reveal the layout."""
    pending: list[tuple[int, dict[str, Any]]] = []
    layout = None if schema == "auto" else schema
    for item in items:
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        line, row = item
        if not isinstance(row, dict):
            rejects.append(Reject(str(path), line, "", f"row is not an object (got {type(row).__name__})",
                                  _raw(row)))
            continue
        if layout is None and (layout := formats.detect_schema(row.keys(), columns)):
            logger.info("%s: detected row layout %r", path, layout)
        pending.append((line, row))
        if layout:
            yield from ((held_line, held, layout) for held_line, held in pending)
            pending.clear()
    if pending:
        line, row = pending[0]
        raise DataFileError(f"{path}: cannot detect the row layout (the row at line {line} has keys "
                            f"{sorted(row)}); known layouts: {formats.describe_schemas()}")


def _raw(row: Any) -> str:
    try:
        text = row if isinstance(row, str) else json.dumps(row, ensure_ascii=False, default=str)
    except RecursionError:  # a value nested near the interpreter's limit still parses, but not re-encodes
        text = f"<{type(row).__name__} nested too deeply to show>"
    return text[:RAW_CHARS]


def _encodable(value: Any) -> Any:
    return value.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(value, str) else value


def _loads(text: str) -> Any:
    """json.loads; valid JSON that Python will not parse raises _Unparsable naming why (bad syntax still
    raises json.JSONDecodeError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise _Unparsable("nested too deeply to parse") from None
    except json.JSONDecodeError:
        raise
    except ValueError:  # int literals are capped at sys.get_int_max_str_digits() (a CVE-2020-10735 guard)
        raise _Unparsable(f"an integer literal longer than {sys.get_int_max_str_digits()} digits") from None


class _Unparsable(ValueError):
    """Valid JSON syntax that json.loads refuses (a huge integer literal, deep nesting)."""


def _decode(path: Path, line: int, data: bytes) -> str | Reject:
    """One physical line as text, or a Reject naming the first invalid byte."""
    try:
        return data.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as err:
        return Reject(str(path), line, "", f"invalid UTF-8 at byte {err.start} of the line ({err.reason})",
                      _raw(data.decode("utf-8", errors="replace")))


def read_jsonl(path: Path) -> Iterator[Item]:
    """One JSON value per physical line; blank lines are skipped; each bad line is one Reject."""
    with open(path, "rb") as fh:
        for line, data in enumerate(fh, 1):
            text = _decode(path, line, data)
            if isinstance(text, Reject):
                yield text
            elif text.strip():
                try:
                    yield line, _loads(text)
                except json.JSONDecodeError as err:
                    yield Reject(str(path), line, "", f"malformed JSON at column {err.colno}: {err.msg}",
                                 _raw(text.rstrip("\r\n")))
                except _Unparsable as err:
                    yield Reject(str(path), line, "", f"unparsable JSON: {err}", _raw(text.rstrip("\r\n")))


def read_json(path: Path) -> Iterator[Item]:
    """A list of records, or an object holding one list under "data", "train" or "examples"."""
    data = path.read_bytes()
    try:
        doc = _loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataFileError(f"{path}:{line}: invalid UTF-8 ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise DataFileError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except _Unparsable as err:
        raise DataFileError(f"{path}: unparsable JSON: {err}") from None
    if isinstance(doc, dict):
        lists = [k for k in JSON_KEYS if isinstance(doc.get(k), list)]
        if len(lists) != 1:
            raise DataFileError(f"{path}: expected a list of records, or an object with one list under "
                                f"{' / '.join(JSON_KEYS)}; got an object with keys {sorted(doc)[:10]}")
        doc = doc[lists[0]]
    if not isinstance(doc, list):
        raise DataFileError(f"{path}: expected a list of records, got {type(doc).__name__}")
    yield from enumerate(doc, 1)


def read_csv(path: Path) -> Iterator[Item]:
    """Header row + records (csv module); a record's line is the physical line it starts on."""
    bad_lines: dict[int, Reject] = {}

    def lines() -> Iterator[str]:  # decode line by line so one bad byte costs one record, not the file
        with open(path, "rb") as fh:
            for n, data in enumerate(fh, 1):
                text = _decode(path, n, data)
                if isinstance(text, Reject):
                    bad_lines[n] = text
                    text = data.decode("utf-8", errors="replace")
                yield text

    reader = csv.reader(lines())
    try:
        header = next(reader, None)
        if header is None or bad_lines:
            raise DataFileError(f"{path}: {'empty file' if header is None else 'invalid UTF-8 in the header'}")
        if len(set(header)) != len(header):
            raise DataFileError(f"{path}:1: duplicate column names in the header {header}")
        start = reader.line_num + 1
        for record in reader:
            line, start = start, reader.line_num + 1
            bad = [bad_lines[n] for n in range(line, start) if n in bad_lines]
            if bad:
                yield Reject(str(path), line, "", bad[0].reason, _raw(",".join(record)))
            elif len(record) != len(header):
                if record:  # csv yields [] for a blank line: not a row
                    yield Reject(str(path), line, "", f"row has {len(record)} fields, the header has "
                                 f"{len(header)}", _raw(",".join(record)))
            else:
                yield line, dict(zip(header, record, strict=True))
    except csv.Error as err:
        raise DataFileError(f"{path}:{reader.line_num}: malformed CSV: {err}") from None


def read_parquet(path: Path) -> Iterator[Item]:
    """Parquet rows in batches (constant memory); line = record index + 1."""
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=4096)
    except Exception as err:  # pyarrow raises several types for a corrupt or non-Parquet file
        raise DataFileError(f"{path}: cannot read as Parquet: {err}") from None
    index = 0
    for batch in batches:
        for row in batch.to_pylist():
            index += 1
            yield index, row


def read_hf_disk(path: Path) -> Iterator[Item]:
    """A `datasets` save_to_disk directory; a DatasetDict contributes its "train" split."""
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DataFileError(f"{path}: a DatasetDict without a 'train' split; splits: {', '.join(ds)}")
        ds = ds["train"]
    index = 0
    for table in ds.with_format("arrow").iter(batch_size=4096):
        for row in table.to_pylist():
            index += 1
            yield index, row


READERS = {"jsonl": read_jsonl, "json": read_json, "parquet": read_parquet, "csv": read_csv,
           "hf-disk": read_hf_disk}
