"""Requests to one OpenAI-compatible server: bounded concurrency, timeouts, retries, on-disk cache.

Shared by the `openai` and `vllm` backends. Transport is the official `openai` client (its own retries
are off: this module retries, so that every attempt is counted and logged). Each request either yields
the value its `extract` function reads from the response JSON, or a failure reason; one bad request
never stops or shifts the others.

Retried (exponential backoff with jitter, honouring `Retry-After`): HTTP 408/409/429/5xx, timeouts and
connection errors. Not retried: other 4xx (the request itself is wrong) and malformed bodies (a 2xx whose
JSON does not have the expected shape): those fail at once with the reason.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import openai
from tqdm.auto import tqdm

from fedcurate.common.rating.backends.request_cache import RequestCache, request_key

logger = logging.getLogger(__name__)

T = TypeVar("T")
ENDPOINTS = ("completions", "chat")


class RequestFailed(Exception):
    """A request that produced no usable answer; the message is the per-sample reason."""


@dataclass(frozen=True)
class Request:
    """One request: `body` holds standard OpenAI fields, `extra` vendor extensions (e.g. vLLM's)."""

    endpoint: str  # "completions" (/v1/completions) or "chat" (/v1/chat/completions)
    body: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one request gave: `value`, or `error` (non-empty) when it failed."""

    value: T | None = None
    error: str = ""
    cached: bool = False


class HTTPClient:
    """A thread pool of at most `concurrency` requests in flight to `base_url` (e.g. http://host:8000/v1)."""

    def __init__(self, base_url: str, api_key: str, model: str, *, timeout_s: float, max_retries: int,
                 concurrency: int, cache: RequestCache, backoff_s: float = 0.5, backoff_cap_s: float = 30.0) -> None:
        self.base_url = base_url
        self.model = model
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.cache = cache
        self.backoff_s = backoff_s
        self.backoff_cap_s = backoff_cap_s
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "cache_hits": 0, "failures": 0}
        self._stats_lock = threading.Lock()
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)

    def close(self) -> None:
        self._client.close()

    def run(self, requests: Sequence[Request], extract: Callable[[dict[str, Any]], T],
            desc: str = "requests") -> list[Outcome[T]]:
        """Answer every request (cache first, then the server), same order as `requests`."""
        outcomes: list[Outcome[T] | None] = [None] * len(requests)
        todo: list[tuple[int, str]] = []
        for i, req in enumerate(requests):
            key = request_key(self.model, req.endpoint, {**req.body, **req.extra})
            hit = self.cache.get(key)
            if hit is not None:
                outcome = _extract(extract, hit, cached=True)
                if not outcome.error:
                    outcomes[i] = outcome
                    continue
            todo.append((i, key))
        self._count("cache_hits", len(requests) - len(todo))
        if todo:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool, \
                    tqdm(total=len(todo), desc=desc, disable=None, leave=False) as bar:
                futures = {pool.submit(self._answer, requests[i], key, extract): i for i, key in todo}
                for fut in as_completed(futures):  # every worker catches its own errors, so result() never raises
                    outcomes[futures[fut]] = fut.result()
                    bar.update()
        failed = sum(1 for o in outcomes if o is not None and o.error)
        self._count("failures", failed)
        if failed:
            logger.warning("%s: %d of %d request(s) failed", self.base_url, failed, len(requests))
        return [o for o in outcomes if o is not None]

    def _answer(self, req: Request, key: str, extract: Callable[[dict[str, Any]], T]) -> Outcome[T]:
        try:
            response = self._call(req)
        except RequestFailed as err:
            return Outcome(error=str(err))
        outcome = _extract(extract, response, cached=False)
        if not outcome.error:
            self.cache.put(key, response)  # durable before the next request: a kill loses nothing answered
        return outcome

    def _call(self, req: Request) -> dict[str, Any]:
        """The response JSON of `req`, retrying transient failures; raises RequestFailed."""
        reason = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._count("retries")
            self._count("requests")
            try:
                return self._send(req)
            except openai.APITimeoutError:
                reason, wait = f"timeout after {self._client.timeout}s", None
            except openai.APIConnectionError as err:
                reason, wait = f"connection error: {err.__cause__ or err}", None
            except openai.APIStatusError as err:
                reason = f"HTTP {err.status_code}: {_short(err.response.text)}"
                if not _retryable(err.status_code):
                    raise RequestFailed(reason) from None
                wait = _retry_after(err.response.headers.get("retry-after"))
            except openai.OpenAIError as err:  # anything else the client rejects: this request only
                raise RequestFailed(f"request error: {type(err).__name__}: {_short(str(err))}") from None
            if attempt < self.max_retries:
                time.sleep(self._delay(attempt, wait))
        raise RequestFailed(f"{reason} (gave up after {self.max_retries + 1} attempt(s))")

    def _send(self, req: Request) -> dict[str, Any]:
        if req.endpoint == "completions":
            raw = self._client.completions.with_raw_response.create(**req.body, extra_body=req.extra or None)
        elif req.endpoint == "chat":
            raw = self._client.chat.completions.with_raw_response.create(**req.body, extra_body=req.extra or None)
        else:
            raise ValueError(f"endpoint {req.endpoint!r}: allowed values are {', '.join(ENDPOINTS)}")
        text = raw.http_response.text
        try:
            body = json.loads(text)
        except ValueError:
            raise RequestFailed(f"malformed response body (not JSON): {_short(text)}") from None
        if not isinstance(body, dict):
            raise RequestFailed(f"malformed response body (not a JSON object): {_short(text)}")
        return body

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter; a server's Retry-After wins when longer."""
        delay = random.uniform(0.0, min(self.backoff_cap_s, self.backoff_s * 2**attempt))
        return min(self.backoff_cap_s, max(delay, retry_after or 0.0))

    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[name] += n


def _extract(extract: Callable[[dict[str, Any]], T], response: dict[str, Any], cached: bool) -> Outcome[T]:
    try:
        return Outcome(value=extract(response), cached=cached)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        return Outcome(error=f"malformed response: {err.__class__.__name__}: {_short(str(err))}", cached=cached)


def _retryable(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def _retry_after(header: str | None) -> float | None:
    try:
        return float(header) if header else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
