"""On-disk cache of answered LLM requests, so an interrupted rating run resumes without paying twice.

One append-only JSONL file per model: each line is `{"key": ..., "response": {...}}`, written and
fsynced as soon as the answer arrives. The key hashes (model, endpoint, full request body), so any change
of prompt text or request parameter is a miss. Only well-formed answers are stored: failures are asked
again on the next run. A line cut short by a kill is skipped on load (and logged), never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def request_key(model: str, endpoint: str, body: dict[str, Any]) -> str:
    """A stable hash of what was asked: model, endpoint and the request body as sent."""
    blob = json.dumps([model, endpoint, body], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class RequestCache:
    """Answers by request key, loaded from and appended to `<cache_dir>/<model slug>.jsonl`.

    `cache_dir=None` disables caching (every request goes to the server). Thread-safe; several
    processes may append to one file (each record is one `write` of one line in append mode).
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None, model: str) -> None:
        self.path: Path | None = None
        self._answers: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if cache_dir:
            self.path = Path(cache_dir) / f"{_slug(model)}.jsonl"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._load()

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._answers.get(key)

    def put(self, key: str, response: dict[str, Any]) -> None:
        """Remember `response` and make it durable before returning."""
        line = (json.dumps({"key": key, "response": response}, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self._answers[key] = response
            if self.path is None:
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def _load(self) -> None:
        assert self.path is not None
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        bad = 0
        for raw in data.splitlines():
            try:
                record = json.loads(raw)
                self._answers[record["key"]] = record["response"]
            except (ValueError, KeyError, TypeError):
                bad += 1
        if data and not data.endswith(b"\n"):  # cut short by a kill: start the next record on a new line
            with open(self.path, "ab") as fh:
                fh.write(b"\n")
        if bad:
            logger.warning("%s: skipped %d unreadable cache line(s) (an interrupted write)", self.path, bad)
        logger.info("%s: %d cached answer(s)", self.path, len(self._answers))


def _slug(model: str) -> str:
    """A file name for `model`: readable tail plus a short hash (paths and ids may share a tail)."""
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", model.rstrip("/").split("/")[-1])[:60] or "model"
    return f"{tail}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"
