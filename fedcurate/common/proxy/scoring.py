"""`fedcurate proxy score`: score a corpus of any size with a trained proxy head, in bounded memory, resumably.

    fedcurate proxy score --config C --head runs/proxy/head --input corpus.jsonl --out runs/scores.parquet --threshold 3

The corpus streams in chunks of `chunk_size` valid samples (`stream.py`); each chunk is embedded with
the encoder named in head.json, scored, and written as a part file. Outputs, for OUT = scores.parquet:
    OUT                   id, score (float64, unclipped), int_score (int8: rounded half up, clipped to
                          0..5), and with a threshold `kept` (int_score >= threshold); one row group per chunk
    scores.kept.jsonl     with a threshold: the samples clearing it (native layout, `proxy_score` and
                          `proxy_int_score` added to metadata), input order
    scores.rejects.jsonl  rows the loader rejects (data.on-error = "skip"; "raise" stops at the first bad chunk)
    scores.stats.json     counts, int_score histogram, throughput, and the run's fingerprint
    OUT.parts/            while running: `manifest.json` plus one part per finished chunk

Resume: a part's files are written atomically first, then the manifest (atomically) records the part
and the input cursor after it. A killed run, started again with the same input, head and settings,
continues after the last recorded part: no id is scored twice or skipped. The parts are merged into
the outputs, then removed; a finished run started again returns its stats. Any change of input file,
head or settings starts over.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from fedcurate.common import io
from fedcurate.common.config import Config, CurationConfig
from fedcurate.common.curation.embeddings import embed_texts, sample_text
from fedcurate.common.data.sample import DataError, Sample
from fedcurate.common.proxy.head import MAX_SCORE, HeadMeta, int_scores, load_head, predict
from fedcurate.common.proxy.stream import Chunk, Cursor, IdSet, iter_chunks

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1
LOG_EVERY_S = 60.0


def output_paths(out_path: str | Path) -> dict[str, Path]:
    """Where `proxy_score` writes, for an output Parquet path."""
    out = Path(out_path)
    stem = out.name[:-len(out.suffix)] if out.suffix else out.name
    return {"scores": out, "kept": out.with_name(f"{stem}.kept.jsonl"),
            "rejects": out.with_name(f"{stem}.rejects.jsonl"), "stats": out.with_name(f"{stem}.stats.json"),
            "parts": out.with_name(f"{out.name}.parts")}


def proxy_score(cfg: Config, head_path: str | Path, input_path: str | Path | None, out_path: str | Path,
                threshold: float | None = None, *, chunk_size: int = 4096, progress: bool = True) -> dict[str, Any]:
    """Score every sample of `input_path` (default data.path) with the head; returns the stats written."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size = {chunk_size}: must be >= 1")
    if not (input_path or cfg.data.path):
        raise ValueError("no input data: set data.path in the config or pass an input path")
    source = Path(input_path or cfg.data.path)
    if not source.exists():
        raise FileNotFoundError(f"{source}: data file not found")
    paths = output_paths(out_path)
    head, meta = load_head(head_path)
    encoder = _encoder_config(cfg.curation, meta)
    fingerprint = _fingerprint(cfg, source, Path(head_path), encoder, chunk_size, threshold)
    finished = _finished(paths, fingerprint)
    if finished is not None:
        shutil.rmtree(paths["parts"], ignore_errors=True)  # left if a run died between its stats and cleanup
        logger.info("%s: already complete for this input, head and settings", paths["scores"])
        return finished
    manifest = _open_manifest(paths["parts"], fingerprint)
    scored_before = manifest["totals"]["rows"]
    t0 = time.perf_counter()
    if not manifest["eof"]:
        _score_chunks(cfg, source, paths["parts"], manifest, head, encoder, threshold, chunk_size, progress)
    seconds = time.perf_counter() - t0
    stats = _merge(paths, manifest, threshold)
    new = stats["scored"] - scored_before
    stats.update({"fingerprint": fingerprint, "complete": True, "resumed_after_parts": manifest["resumed_after"],
                  "seconds_this_run": round(seconds, 3),
                  "samples_per_s_this_run": round(new / seconds, 2) if seconds > 0 and new else None})
    io.write_json(paths["stats"], stats)
    shutil.rmtree(paths["parts"], ignore_errors=True)
    logger.info("proxy score: %d scored, %s kept, %d rejected rows -> %s", stats["scored"], stats["kept"],
                stats["rejected_rows"], paths["scores"])
    return stats


def _score_chunks(cfg: Config, source: Path, parts: Path, manifest: dict[str, Any], head: Any,
                  encoder: CurationConfig, threshold: float | None, chunk_size: int, progress: bool) -> None:
    """Stream the input from the manifest's cursor, writing one part per chunk."""
    start = manifest["totals"]["rows"]
    chunks = iter_chunks(source, cfg.data, chunk_size, cursor=Cursor(**manifest["cursor"]), layout=manifest["layout"],
                         seen=_seen_ids(parts, manifest), done=start)
    t0 = last_log = time.perf_counter()
    with tqdm(desc="proxy score", unit="sample", initial=start, disable=not (progress and sys.stderr.isatty())) as bar:
        for chunk in chunks:
            if chunk.rejects and cfg.data.on_error == "raise":
                raise DataError(chunk.rejects)
            _write_part(parts, manifest, chunk, head, encoder, threshold)
            _release_freed_memory()
            bar.update(len(chunk.samples))
            if time.perf_counter() - last_log > LOG_EVERY_S:  # a trace in logs when there is no progress bar
                last_log = time.perf_counter()
                logger.info("proxy score: %d samples scored (%.1f/s this run)", manifest["totals"]["rows"],
                            (manifest["totals"]["rows"] - start) / (last_log - t0))


def _release_freed_memory() -> None:
    """Give memory freed by the last chunk back to the OS (glibc's malloc_trim; a no-op elsewhere).

    Without it, glibc keeps fragmented free heap pages and the resident size creeps up with every
    chunk (measured: +12 MB over 200k streamed samples from parsing alone), although live memory is flat.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _encoder_config(curation: CurationConfig, meta: HeadMeta) -> CurationConfig:
    """The head's encoder (what it was trained on), with the configured batch size."""
    wanted = (meta.encoder, meta.pooling, meta.max_tokens)
    if wanted != (curation.embedding_model, curation.pooling, curation.max_tokens):
        logger.warning("the head was trained on encoder %s (pooling %s, max %d tokens); using it, not the "
                       "configured %s", *wanted, curation.embedding_model)
    return dataclasses.replace(curation, embedding_model=meta.encoder, pooling=meta.pooling,
                               max_tokens=meta.max_tokens)


def _fingerprint(cfg: Config, source: Path, head_path: Path, encoder: CurationConfig, chunk_size: int,
                 threshold: float | None) -> dict[str, Any]:
    """Everything a part depends on: a resumed run must match it exactly."""
    folder = head_path.parent if head_path.name == "head.json" else head_path
    digest = hashlib.sha256()
    for name in ("head.json", "weights.npz"):
        digest.update((folder / name).read_bytes())
    stat = source.stat()
    data = cfg.data
    return {"version": FORMAT_VERSION, "input": str(source.resolve()), "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "format": data.format, "schema": data.schema,
            "columns": dict(sorted(data.columns.items())), "on_error": data.on_error,
            "max_samples": data.max_samples, "head_sha256": digest.hexdigest(),
            "encoder": [encoder.embedding_model, encoder.pooling, encoder.max_tokens, encoder.embedding_batch_size],
            "chunk_size": chunk_size, "threshold": threshold}


def _finished(paths: dict[str, Path], fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    if not (paths["stats"].exists() and paths["scores"].exists()):
        return None
    stats = json.loads(paths["stats"].read_text(encoding="utf-8"))
    return stats if stats.get("complete") and stats.get("fingerprint") == fingerprint else None


def _open_manifest(parts: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The manifest of an interrupted run with this fingerprint, or a fresh one (stale parts removed)."""
    path = parts / "manifest.json"
    if path.exists():
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("fingerprint") == fingerprint:
            manifest["resumed_after"] = manifest["parts"]
            logger.info("%s: resuming after %d finished part(s), %d samples", parts, manifest["parts"],
                        manifest["totals"]["rows"])
            return manifest
        logger.warning("%s: left by a run with another input, head or settings; starting over", parts)
    if parts.exists():
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    totals = {"rows": 0, "kept": 0, "rejects": 0, "score_sum": 0.0, "hist": [0] * (MAX_SCORE + 1)}
    return {"fingerprint": fingerprint, "cursor": dataclasses.asdict(Cursor()), "layout": None, "eof": False,
            "parts": 0, "totals": totals, "resumed_after": 0}


def _seen_ids(parts: Path, manifest: dict[str, Any]) -> IdSet:
    """Ids of the finished parts (so a duplicate id after a resume is still rejected)."""
    seen = IdSet()
    for k in range(manifest["parts"]):
        for id_ in pq.read_table(parts / f"{_part(k)}.parquet", columns=["id"]).column("id").to_pylist():
            seen.add(id_)
    return seen


def _schema(threshold: float | None) -> pa.Schema:
    fields = [pa.field("id", pa.string()), pa.field("score", pa.float64()), pa.field("int_score", pa.int8())]
    return pa.schema(fields + ([pa.field("kept", pa.bool_())] if threshold is not None else []))


def _write_part(parts: Path, manifest: dict[str, Any], chunk: Chunk, head: Any, encoder: CurationConfig,
                threshold: float | None) -> None:
    """Score one chunk, write its files, then record it in the manifest (the commit point).

    Every file of the part is written, empty or not, so files left by a killed run are all replaced.
    The manifest holds running totals, not a list of parts, so it stays small for any corpus size.
    """
    name = _part(manifest["parts"])
    samples = chunk.samples
    scores = (predict(head, embed_texts([sample_text(s) for s in samples], encoder, None, progress=False))
              if samples else np.zeros(0))
    ints = int_scores(scores)
    columns: dict[str, Any] = {"id": [s.id for s in samples], "score": scores, "int_score": ints}
    kept = ints >= threshold if threshold is not None else np.zeros(len(samples), dtype=bool)
    if threshold is not None:
        columns["kept"] = kept
    table = pa.table(columns, schema=_schema(threshold))
    io.write_with(parts / f"{name}.parquet", lambda tmp: pq.write_table(table, tmp))
    if threshold is not None:
        io.write_jsonl(parts / f"{name}.kept.jsonl",
                       (_kept_row(s, float(v), int(i)) for s, v, i, k in zip(samples, scores, ints, kept, strict=True)
                        if k))
    io.write_jsonl(parts / f"{name}.rejects.jsonl", (r.to_dict() for r in chunk.rejects))
    totals = manifest["totals"]
    hist = np.bincount(ints.astype(np.int64), minlength=MAX_SCORE + 1)
    totals.update(rows=totals["rows"] + len(samples), kept=totals["kept"] + int(kept.sum()),
                  rejects=totals["rejects"] + len(chunk.rejects), score_sum=totals["score_sum"] + float(scores.sum()),
                  hist=[int(a + b) for a, b in zip(totals["hist"], hist, strict=True)])
    manifest.update(parts=manifest["parts"] + 1, cursor=dataclasses.asdict(chunk.cursor), layout=chunk.layout,
                    eof=chunk.last)
    io.write_json(parts / "manifest.json", manifest)


def _part(k: int) -> str:
    return f"part-{k:06d}"


def _kept_row(sample: Sample, score: float, int_score: int) -> dict[str, Any]:
    row = sample.to_dict()
    row["metadata"] = {**sample.metadata, "proxy_score": score, "proxy_int_score": int_score}
    return row


def _merge(paths: dict[str, Path], manifest: dict[str, Any], threshold: float | None) -> dict[str, Any]:
    """Concatenate the parts into the outputs (each written atomically); return the counts."""
    parts, names = paths["parts"], [_part(k) for k in range(manifest["parts"])]
    schema = _schema(threshold)

    def write_scores(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as writer:
            for name in names:
                table = pq.read_table(parts / f"{name}.parquet", schema=schema)
                if table.num_rows:
                    writer.write_table(table)

    io.write_with(paths["scores"], write_scores)
    if threshold is not None:
        _concat([parts / f"{n}.kept.jsonl" for n in names], paths["kept"])
    _concat([parts / f"{n}.rejects.jsonl" for n in names], paths["rejects"])
    totals = manifest["totals"]
    rows = totals["rows"]
    return {"scored": rows, "kept": totals["kept"] if threshold is not None else None, "threshold": threshold,
            "rejected_rows": totals["rejects"], "mean_score": totals["score_sum"] / rows if rows else None,
            "int_score_histogram": totals["hist"], "parts": len(names),
            "outputs": {k: str(v) for k, v in paths.items() if k != "parts"}}


def _concat(files: list[Path], target: Path) -> None:
    """Byte-concatenate the existing `files` into `target`, atomically (an empty file when none exist)."""
    with io.atomic_open(target, "wb") as out:
        for path in files:
            if path.exists():
                with open(path, "rb") as fh:
                    shutil.copyfileobj(fh, out)
