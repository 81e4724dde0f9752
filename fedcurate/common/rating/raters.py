"""Raters (a judge prompt, or SelectIT) and rating a whole dataset with several of them, resumably.

    rater = build_rater(RaterConfig(name="ds2-llama", prompt="ds2", model="/models/llama-3.1-8b"))
    ratings = rater.rate(samples)                                   # one Rating per sample, same order
    result = rate_dataset(samples, cfg.rating, "run/cache")         # every rater, plus their combination
    result.columns["ds2-llama"], result.columns["ds2-llama_reason"], result.columns["rating"]

`rate_dataset` keeps one score column per rater (with `<name>_reason`, "" when valid) and combines the
valid ones into `rating` (`weighted-mean` with the raters' `weight`s normalised to sum 1 — SelectIT's
model level when the weights are parameter counts — or `median`, `min`, `max`). Each rater's results
are cached under `cache_dir/<name>-<settings hash>/`, keyed by the sample's content hash, one
atomically written file per finished chunk: an interrupted run resumes where it stopped. Failures
from the backend (network, out of memory) are not cached, so a re-run retries them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from fedcurate.common import io
from fedcurate.common.config import RaterConfig, RatingConfig
from fedcurate.common.data.sample import Sample
from fedcurate.common.rating import backends as _backends  # noqa: F401  (registers the backends)
from fedcurate.common.rating.base import BACKENDS, RATERS, Backend, Rater, Rating
from fedcurate.common.rating.prompts import SHIPPED, TemplateError, load_template, selectit_prompts
from fedcurate.common.rating.selectit import rating_candidates, sentence_score, token_score

logger = logging.getLogger(__name__)
RETRYABLE = ("backend error",)  # failure categories not cached: a re-run asks again
COMBINED = "rating"


def build_backend(rcfg: RaterConfig, cache_dir: str | Path | None = None) -> Backend:
    """The backend named by `rcfg.backend`; backends with an HTTP cache get `cache_dir/requests`."""
    cls = BACKENDS.get(rcfg.backend)
    if cache_dir is not None and "cache_dir" in inspect.signature(cls).parameters:
        return cls(rcfg, cache_dir=Path(cache_dir) / "requests")
    return cls(rcfg)


@RATERS.register("prompt")
class PromptRater:
    """A judge prompt through `backend.generate`, parsed into the template's score range."""

    def __init__(self, rcfg: RaterConfig, backend: Backend | None = None,
                 cache_dir: str | Path | None = None) -> None:
        self.name = rcfg.name
        self.config = rcfg
        self.template = load_template(rcfg.prompt or "ds2")  # a bad template fails here, before any rating
        self.backend = backend if backend is not None else build_backend(rcfg, cache_dir)

    def settings(self) -> dict[str, Any]:
        """Everything that changes this rater's output (the cache key)."""
        t, c = self.template, self.config
        return {"kind": "prompt", "backend": c.backend, "model": c.model, "dtype": c.dtype, "template": t.text,
                "range": [t.low, t.high], "parser": t.parser, "pick": t.pick,
                "max_new_tokens": c.max_new_tokens, "temperature": c.temperature}

    def rate(self, samples: Sequence[Sample]) -> list[Rating]:
        return _isolated(self.name, samples, self._rate_batch)

    def _rate_batch(self, samples: Sequence[Sample]) -> list[Rating]:
        prompts = [self.template.render(s) for s in samples]
        gens = self.backend.generate(prompts, max_new_tokens=self.config.max_new_tokens,
                                     temperature=self.config.temperature)
        _check_count(self.name, gens, prompts)
        return [self.template.parse_generation(g) for g in gens]


@RATERS.register("selectit")
class SelectITRater:
    """SelectIT token + sentence level: rating-token probabilities over `selectit_prompts` prompts."""

    def __init__(self, rcfg: RaterConfig, backend: Backend | None = None, cache_dir: str | Path | None = None,
                 normalization: str = "paper") -> None:
        self.name = rcfg.name
        self.config = rcfg
        self.normalization = normalization
        self.prompts = selectit_prompts(rcfg.selectit_prompts, rcfg.selectit_levels, _selectit_file(rcfg.prompt))
        self.candidates = rating_candidates(rcfg.selectit_levels)
        self.backend = backend if backend is not None else build_backend(rcfg, cache_dir)

    def settings(self) -> dict[str, Any]:
        c = self.config
        return {"kind": "selectit", "backend": c.backend, "model": c.model, "dtype": c.dtype,
                "prompts": [p.text for p in self.prompts], "levels": c.selectit_levels,
                "alpha": c.selectit_alpha, "normalization": self.normalization}

    def rate(self, samples: Sequence[Sample]) -> list[Rating]:
        return _isolated(self.name, samples, self._rate_batch)

    def _rate_batch(self, samples: Sequence[Sample]) -> list[Rating]:
        m = len(self.prompts)
        prompts = [p.render(s) for s in samples for p in self.prompts]  # sample-major: rows i*m .. i*m+m-1
        probs = self.backend.candidate_probs(prompts, self.candidates)
        _check_count(self.name, probs, prompts)
        return [self._rate_one(probs[i * m:(i + 1) * m]) for i in range(len(samples))]

    def _rate_one(self, per_prompt: Sequence[Any]) -> Rating:
        for j, tp in enumerate(per_prompt):
            if tp.error:
                return Rating.failure(f"backend error: prompt {j + 1}: {tp.error}")
        try:
            scores = [token_score(tp.probs, self.normalization) for tp in per_prompt]
        except ValueError as err:
            return Rating.failure(f"bad probabilities: {err}")
        extra = {"token_scores": scores, "probs": [list(tp.probs) for tp in per_prompt],
                 "mass": [tp.mass for tp in per_prompt]}
        return Rating(sentence_score(scores, self.config.selectit_alpha), extra=extra)


def build_rater(rcfg: RaterConfig, backend: Backend | None = None, cache_dir: str | Path | None = None) -> Rater:
    """The rater of kind `rcfg.kind`, with `backend` (built from `rcfg` when None)."""
    return RATERS.get(rcfg.kind)(rcfg, backend=backend, cache_dir=cache_dir)


@dataclass
class RatingResult:
    """Columns (`<name>`, `<name>_reason` per rater, then `rating`, `rating_reason`) and per-rater stats."""

    columns: dict[str, list[Any]] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)


def rate_dataset(samples: Sequence[Sample], cfg: RatingConfig, cache_dir: str | Path,
                 raters: Sequence[Rater] | None = None, chunk_size: int | None = None) -> RatingResult:
    """Rate `samples` with every rater of `cfg` (or the given `raters`, one per `cfg.raters` entry)."""
    if not cfg.raters:
        raise ValueError("rating.raters is empty: add at least one [[rating.raters]] table")
    for rcfg in cfg.raters:
        if rcfg.name in ("id", COMBINED) or rcfg.name.endswith("_reason"):
            raise ValueError(f"rating.raters: name {rcfg.name!r} is reserved for an output column")
    if raters is None:  # built here, so closed here (a started vLLM server stops)
        built = [build_rater(r, cache_dir=cache_dir) for r in cfg.raters]
        try:
            return rate_dataset(samples, cfg, cache_dir, built, chunk_size)
        finally:
            for rater in built:
                getattr(getattr(rater, "backend", None), "close", lambda: None)()
    if [r.name for r in raters] != [r.name for r in cfg.raters]:
        raise ValueError(f"raters {[r.name for r in raters]} do not match rating.raters {[r.name for r in cfg.raters]}")
    result = RatingResult()
    hashes = [content_hash(s) for s in samples]
    for rater, rcfg in zip(raters, cfg.raters, strict=True):
        chunk = chunk_size or max(rcfg.batch_size, rcfg.concurrency) * 4
        ratings, stats = _rate_cached(rater, samples, hashes, Path(cache_dir), chunk)
        result.columns[rater.name] = [r.score for r in ratings]
        result.columns[f"{rater.name}_reason"] = [r.reason for r in ratings]
        result.stats[rater.name] = stats
    names = [r.name for r in cfg.raters]
    scores, reasons = combine([result.columns[n] for n in names], [result.columns[f"{n}_reason"] for n in names],
                              names, [r.weight for r in cfg.raters], cfg.combine)
    result.columns[COMBINED], result.columns[f"{COMBINED}_reason"] = scores, reasons
    return result


def combine(values: Sequence[Sequence[float]], reasons: Sequence[Sequence[str]], names: Sequence[str],
            weights: Sequence[float], how: str) -> tuple[list[float], list[str]]:
    """Per sample, combine the valid raters' scores; NaN with every rater's reason if none is valid."""
    out: list[float] = []
    why: list[str] = []
    for i in range(len(values[0]) if values else 0):
        valid = [(col[i], w) for col, w in zip(values, weights, strict=True) if not math.isnan(col[i])]
        if how == "weighted-mean" and sum(w for _, w in valid) <= 0:
            valid = []
        if not valid:
            out.append(math.nan)
            why.append("no valid rating: " + "; ".join(f"{n}: {r[i] or 'zero weight'}"
                                                       for n, r in zip(names, reasons, strict=True)))
            continue
        xs = [v for v, _ in valid]
        if how == "weighted-mean":
            out.append(sum(v * w for v, w in valid) / sum(w for _, w in valid))
        elif how == "median":
            out.append(float(statistics.median(xs)))
        elif how in ("min", "max"):
            out.append(min(xs) if how == "min" else max(xs))
        else:
            raise ValueError(f"rating.combine = {how!r}; allowed: weighted-mean, median, min, max")
        why.append("")
    return out, why


def content_hash(sample: Sample) -> str:
    """What a rating depends on: instruction, input and response (not the id)."""
    payload = json.dumps([sample.instruction, sample.input, sample.response], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def reason_category(reason: str) -> str:
    """The failure category: the reason's text before its first colon."""
    return reason.split(":", 1)[0].strip()


def _rate_cached(rater: Rater, samples: Sequence[Sample], hashes: Sequence[str], cache_root: Path,
                 chunk: int) -> tuple[list[Rating], dict[str, Any]]:
    settings = getattr(rater, "settings", lambda: {"name": rater.name})()
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_root / f"{rater.name}-{key}"
    done = _load_chunks(folder)
    todo = list(dict.fromkeys(h for h in hashes if h not in done))  # unique, in first-seen order
    first = {h: i for i, h in reversed(list(enumerate(hashes)))}
    logger.info("rater %s: %d cached, %d to rate (%s)", rater.name, len(hashes) - len(todo), len(todo), folder)
    t0 = time.perf_counter()
    bar = tqdm(range(0, len(todo), chunk), desc=f"rate {rater.name}", unit="chunk", disable=not sys.stderr.isatty())
    for start in bar:
        part = todo[start:start + chunk]
        ratings = rater.rate([samples[first[h]] for h in part])
        _check_count(rater.name, ratings, part)
        fresh = dict(zip(part, ratings, strict=True))
        done.update(fresh)
        keep = [(h, r) for h, r in fresh.items() if reason_category(r.reason) not in RETRYABLE]
        if keep:
            name = hashlib.sha256("".join(h for h, _ in keep).encode()).hexdigest()[:16]
            io.write_jsonl(folder / f"chunk-{name}.jsonl", (_row(h, r) for h, r in keep))
    seconds = time.perf_counter() - t0
    todo_set = set(todo)
    ratings = [done[h] for h in hashes]
    failures: dict[str, int] = {}
    for r in ratings:
        if r.reason:
            failures[reason_category(r.reason)] = failures.get(reason_category(r.reason), 0) + 1
    stats = {"rated": sum(not r.reason for r in ratings), "failed": sum(bool(r.reason) for r in ratings),
             "failures_by_reason": failures, "from_cache": sum(h not in todo_set for h in hashes),
             "seconds": round(seconds, 3)}
    return ratings, stats


def _row(h: str, r: Rating) -> dict[str, Any]:
    return {"hash": h, "score": r.score, "reason": r.reason, "raw": r.raw, "extra": r.extra}


_LOADED: dict[Path, tuple[set[str], dict[str, Rating]]] = {}  # folder -> (chunk files read, ratings)


def _load_chunks(folder: Path) -> dict[str, Rating]:
    """Every cached rating in `folder`. Chunk files never change once written, so files already read
    in this process are skipped (the `rating` scorer calls this once per pipeline batch)."""
    names = {p.name for p in folder.glob("chunk-*.jsonl")}
    seen, done = _LOADED.get(folder, (set(), {}))
    if not seen <= names:  # a chunk was deleted (cache cleared): start over
        seen, done = set(), {}
    for name in sorted(names - seen):
        for line in (folder / name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            score = math.nan if row["score"] is None else float(row["score"])
            done[row["hash"]] = Rating(score, row["reason"], row.get("raw", ""), row.get("extra") or {})
    _LOADED[folder] = (seen | names, done)
    return dict(done)


def _selectit_file(prompt: str) -> str | None:
    """SelectIT's prompt setting: the shipped prompts (`selectit`, or the unset default) or a file path."""
    if prompt in ("selectit", ""):
        return None
    if prompt in SHIPPED:
        raise TemplateError(f"prompt = {prompt!r} is a judge template; a selectit rater takes 'selectit' "
                            "(the shipped rating prompts) or a file with one rating prompt per line")
    return prompt


def _isolated(name: str, samples: Sequence[Sample],
              call: Callable[[Sequence[Sample]], list[Rating]]) -> list[Rating]:
    """`call(samples)`; if the backend raises, retry sample by sample so the error costs one rating only.

    ValueError and OSError are set-up problems (rating tokens that are not single tokens, a missing
    model, an unreachable server) that would fail every sample alike, so they propagate.
    """
    try:
        out = call(samples)
    except (ValueError, OSError):
        raise
    except Exception as err:  # noqa: BLE001 - one sample's failure must not cost the others
        if len(samples) == 1:
            logger.warning("rater %s: sample failed: %s: %s", name, type(err).__name__, err)
            return [Rating.failure(f"backend error: {type(err).__name__}: {err}")]
        logger.warning("rater %s: batch of %d failed (%s); rating its samples one by one", name, len(samples), err)
        return [r for s in samples for r in _isolated(name, [s], call)]
    _check_count(name, out, samples)
    return out


def _check_count(name: str, got: Sequence[Any], want: Sequence[Any]) -> None:
    if len(got) != len(want):
        raise RuntimeError(f"rater {name!r}: {len(got)} results for {len(want)} inputs")
