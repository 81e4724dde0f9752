"""The site's side of every step of a run, free of Flower: a payload in, a payload out, files in between.

    reply = handle("prepare", cfg, SiteLocation("site-0", "data.jsonl", Path("runs/x/sites/site-0")), Payload())

The ClientApp (`client/client_app.py`) and the in-process `LocalTransport` both call `handle`, so a
federated run and a centralized run execute the same code. Steps (the orchestrator sends them in order):

    prepare            load and validate the data               -> counts of samples, rejects by kind
    curate/counts      DS2: raw ratings, embeddings, HOC counts  -> consensus counts (K^3 integers)
    curate/apply       DS2 with the global T and p               -> numbers flagged / changed
    warmup/<r>         LoRA steps from the global adapter        -> adapter + Adam moments, examples
    dynamics           every scorer (CLUES with the broadcast    -> per scorer: count, sum, sum of squares,
                       checkpoints and anchor gradients)            min, max of the oriented scores
    threshold/range    the composite score                      -> its min and max
    threshold/hist/<i> histogram on the server's grid           -> bin counts
    select             keep what clears the threshold           -> kept / dropped by reason
    train/<r>          LoRA steps on the kept samples            -> adapter + Adam moments, examples

Everything a step computes is written under `<site_dir>/<phase>/`; its reply is stored there too
(`reply.json`, written last, with a key of the request), so a repeated request is answered from disk:
a restarted run resumes, and a SuperNode that starts a fresh process per message keeps nothing in memory.
The key covers the step, the settings, the payload and the sha256 of the site files the step reads (the
data file; the held-out set for evaluate), so a changed file is never answered from a stored reply. A step
after prepare refuses to run on prepare outputs made from other data (`StaleDataError`).
Only the replies leave the site: counts, moments, histograms and adapter tensors, never rows or text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fedcurate.client.site import (
    SiteLocation,
    phase_dir,
    prepare,
    prepare_inputs,
    prepare_stale,
    site_data_path,
)
from fedcurate.common import io
from fedcurate.common.config import Config, to_flat
from fedcurate.common.data.loaders import DataFileError, data_digest, load_samples, write_samples
from fedcurate.common.data.sample import Sample
from fedcurate.common.failures import failed, failure_reason
from fedcurate.common.selection import orient, select
from fedcurate.server.threshold import interval_histogram, keep_mask, tie_quota
from fedcurate.server.transport import Payload

logger = logging.getLogger(__name__)

DS2_FROM_CURATION = {"ds2", "ds2-raw"}  # federated DS2: these use the global T (curate phase)
REPLY_FILE = "reply.json"
ARRAYS_FILE = "reply.npz"

StepFn = Callable[[Config, SiteLocation, Payload, Path], Payload]


class StaleDataError(DataFileError):
    """The site's data changed since its prepare step: a later step would use the old samples. A fault of the
    site's data, not a bug (the ClientApp replies with the message, without a traceback)."""


def handle(step: str, cfg: Config, where: SiteLocation, payload: Payload) -> Payload:
    """Run `step` at this site (or return its stored reply for the same request)."""
    cfg = site_config(cfg, where.site_dir)
    name, out = step_name(step), step_dir(where.site_dir, step)
    digests = input_digests(name, cfg, where)
    if "data" in digests and name != "prepare":
        check_prepared(step, cfg, where, digests["data"])
    key = request_key(step, cfg, where, payload, digests)
    stored = load_reply(out, key)
    if stored is not None:
        logger.info("[%s] %s: answered from %s", where.site, step, out / REPLY_FILE)
        return stored
    if name not in STEPS:
        raise ValueError(f"unknown step {step!r}; steps are {', '.join(STEPS)}")
    start = time.perf_counter()
    reply = STEPS[name](cfg, where, payload, out)
    reply.values.update(site=where.site, seconds=round(time.perf_counter() - start, 3))
    save_reply(out, key, reply)
    return reply


def site_config(cfg: Config, site_dir: Path) -> Config:
    """The config as this site runs it: caches and checkpoints under the site's own directory."""
    return replace(cfg, run=replace(cfg.run, dir=str(site_dir)))


def step_name(step: str) -> str:
    """'warmup/2' -> 'warmup'; 'threshold/hist/0' -> 'threshold/hist'."""
    parts = step.split("/")
    return "/".join(p for p in parts if not p.isdigit())


def step_dir(site_dir: Path, step: str) -> Path:
    """<site_dir>/<phase>/<rest>: 'warmup/2' -> warmup/round-2, 'curate/counts' -> curate/counts."""
    phase, *rest = step.split("/")
    return Path(site_dir, phase, *[f"round-{p}" if p.isdigit() else p for p in rest])


def input_digests(name: str, cfg: Config, where: SiteLocation) -> dict[str, str]:
    """sha256 of the content of the site files step `name` depends on (`data_digest`): {"data": ...} (the
    data file, through prepare's outputs), or for evaluate {"test": ...} ("" when there is no test set)."""
    if name == "evaluate":
        path = site_test_path(cfg, where)
        return {"test": data_digest(path) if path and Path(path).exists() else ""}
    return {"data": data_digest(site_data_path(where.data_path, cfg))}


def check_prepared(step: str, cfg: Config, where: SiteLocation, digest: str) -> None:
    """Raise StaleDataError when this site's prepare outputs were made from other data than it has now."""
    if not phase_dir(where.site_dir, "prepare").exists():
        return  # prepare never ran here: a step that needs its samples says so itself
    stale = prepare_stale(where.site_dir, prepare_inputs(where.data_path, cfg, digest))
    if stale:
        raise StaleDataError(f"{stale}, so its samples are not this site's data now; {step} needs the prepare "
                             "step to run again first (start a new run, in another run directory)")


def request_key(step: str, cfg: Config, where: SiteLocation, payload: Payload, digests: dict[str, str]) -> str:
    """sha256 of everything a step's reply depends on: the step, the site's files (paths and the sha256 of
    their content, `input_digests`), the settings but run.*, and the payload."""
    h = hashlib.sha256()
    settings = {k: v for k, v in to_flat(cfg).items() if not k.startswith("run.")}
    h.update(json.dumps([step, where.data_path, where.test_path, digests, settings, payload.values],
                        sort_keys=True, default=str).encode())
    for k in sorted(payload.arrays):
        arr = np.ascontiguousarray(payload.arrays[k])
        h.update(k.encode() + str(arr.dtype).encode() + str(arr.shape).encode() + arr.tobytes())
    return h.hexdigest()


def load_reply(out: Path, key: str) -> Payload | None:
    path = out / REPLY_FILE
    if not path.exists():
        return None
    stored = json.loads(path.read_text(encoding="utf-8"))
    if stored.get("key") != key:
        return None
    arrays: dict[str, np.ndarray] = {}
    if stored.get("has_arrays"):
        with np.load(out / ARRAYS_FILE) as npz:
            arrays = {k: npz[k] for k in npz.files}
    return Payload(values={**stored["values"], "resumed": True}, arrays=arrays)


def save_reply(out: Path, key: str, reply: Payload) -> None:
    if reply.arrays:
        io.write_with(out / ARRAYS_FILE, lambda tmp: _savez(tmp, reply.arrays))
    io.write_json(out / REPLY_FILE, {"key": key, "has_arrays": bool(reply.arrays), "values": reply.values})


def _save_npy(tmp: Path, arr: np.ndarray) -> None:
    with open(tmp, "wb") as f:
        np.save(f, arr)


def _savez(tmp: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)


def site_samples(site_dir: Path) -> list[Sample]:
    """The samples `prepare` validated at this site."""
    path = Path(site_dir) / "prepare" / "samples.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the prepare step has not run at this site")
    return load_samples(path).samples


def labels_of(samples: Sequence[Sample]) -> np.ndarray | None:
    """Ground-truth `clean` flags (synthetic data), or None."""
    flags = [s.metadata.get("clean") for s in samples]
    if not flags or any(not isinstance(f, bool) for f in flags):
        return None
    return np.asarray(flags, dtype=bool)


# ---------------------------------------------------------------- prepare
def step_prepare(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    result = prepare(where.site, where.data_path, where.site_dir, cfg)
    values: dict[str, Any] = {"num-samples": result.num_samples, "num-rejects": result.num_rejects,
                              "rejects-by-reason": result.rejects_by_reason}
    samples = site_samples(where.site_dir)
    labels = labels_of(samples)
    if labels is not None:  # synthetic data only: ground truth for the benchmark's precision
        values["num-clean"] = int(labels.sum())
    values.update(_prepare_ratings_and_embeddings(cfg, samples, where.site_dir))
    return Payload(values)


def _prepare_ratings_and_embeddings(cfg: Config, samples: Sequence[Sample], site_dir: Path) -> dict[str, Any]:
    """Rate and embed now when a scorer will need it (both are cached on disk): failures show up in this
    phase's reply, before any federated computation. Replies with counts only: the rating histogram
    (rounded scores) and failures by reason."""
    from fedcurate.common.rating.run import rating_cache_dir

    scorers, out = set(cfg.scoring.scorers), {}
    ratings: np.ndarray | None = None
    if "rating" in scorers and cfg.rating.raters:
        from fedcurate.common.rating.raters import rate_dataset

        result = rate_dataset(samples, cfg.rating, rating_cache_dir(cfg, site_dir))
        ratings = np.asarray(result.columns["rating"], dtype=np.float64)
        out["rating-failures"] = dict(Counter(r.split(":")[0] for r in result.columns["rating_reason"] if r))
    elif DS2_FROM_CURATION & scorers:
        ratings, _ = _ratings_and_embeddings(cfg, site_dir)
    if ratings is not None and not cfg.privacy.secure_aggregation:  # a site's own histogram: not under SecAgg
        finite = ratings[np.isfinite(ratings)]
        out["rating-histogram"] = np.bincount(np.clip(np.round(finite), 0, None).astype(np.int64)).tolist()
        out["num-unrated"] = int(ratings.size - finite.size)
    if (DS2_FROM_CURATION | {"longtail"}) & scorers:
        from fedcurate.common.curation.embeddings import embed_samples

        out["embedding-dim"] = int(embed_samples(samples, cfg.curation, Path(site_dir) / "cache" / "embeddings").shape[1])
    return out


# ---------------------------------------------------------------- curate (DS2)
def _ratings_and_embeddings(cfg: Config, site_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from fedcurate.common.curation.embeddings import embed_samples
    from fedcurate.common.curation.run import raw_ratings

    samples = site_samples(site_dir)
    cache = Path(site_dir) / "cache"
    raw = raw_ratings(samples, cfg, None, cache)
    emb = embed_samples(samples, cfg.curation, cache / "embeddings")
    return raw, emb


def step_curate_counts(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    from fedcurate.common.curation.ds2 import site_counts

    raw, emb = _ratings_and_embeddings(cfg, where.site_dir)
    counts = site_counts(emb, raw, cfg.curation, progress=False)
    return Payload({"rows": int(counts.rows), "num-classes": counts.num_classes,
                    "num-rated": int(np.isfinite(raw).sum())}, {"third": counts.third.astype(np.int64).ravel()})


def step_curate_apply(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    from fedcurate.common.curation.ds2 import curate

    raw, emb = _ratings_and_embeddings(cfg, where.site_dir)
    result = curate(emb, raw, payload.arrays["T"], payload.arrays["p"], cfg.curation, progress=False)
    io.write_with(out / "curation.npz", lambda tmp: _savez(tmp, {
        "raw": result.raw, "curated": result.curated, "longtail": result.longtail}))
    changed = np.isfinite(result.raw) & (result.curated != result.raw)
    return Payload({"flagged": int(result.detection.flagged.sum()), "changed": int(changed.sum())})


# ---------------------------------------------------------------- warm-up and training (LoRA rounds)
def _lora_round(cfg: Config, samples: Sequence[Sample], payload: Payload) -> Payload:
    from fedcurate.common.federated_lora import local_update

    v = payload.values
    if not samples:
        return Payload({"num-examples": 0})
    update = local_update(cfg, samples, dict(payload.arrays), start_step=int(v["start-step"]),
                          steps=int(v["steps"]), total_steps=int(v["total-steps"]), seed=int(v["seed"]))
    losses = [float(x) for x in update.losses]
    state = dict(update.state)
    if cfg.privacy.train_noise_multiplier > 0:  # site-level DP: only the adapter leaves, to be clipped and noised
        state = {k: a for k, a in state.items() if k.startswith(DP_SHARED_PREFIX)}
        losses = []
    return Payload({"num-examples": update.num_examples, "lr-mean": float(update.lr_mean),
                    "loss-first": losses[0] if losses else float("nan"),
                    "loss-last": losses[-1] if losses else float("nan")}, state)


DP_SHARED_PREFIX = "weight/"  # under DP training the Adam moments stay at the site (reset every round)


def step_warmup(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    return _lora_round(cfg, site_samples(where.site_dir), payload)


def step_train(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    path = Path(where.site_dir) / "select" / "selected.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the select step has not run at this site")
    return _lora_round(cfg, load_samples(path).samples, payload)


# ---------------------------------------------------------------- dynamics: every scorer
def write_broadcast_checkpoints(cfg: Config, payload: Payload, root: Path) -> None:
    """Store the server's checkpoints (`ckpt<i>/<state key>`) and anchor gradients (`grad<i>/<name>`)."""
    import torch

    from fedcurate.common.dynamics.checkpoints import save_anchor_gradients
    from fedcurate.common.federated_lora import write_checkpoint

    steps, grads = [], []
    for i, info in enumerate(payload.values["checkpoints"]):
        state = {k.split("/", 1)[1]: v for k, v in payload.arrays.items() if k.startswith(f"ckpt{i}/")}
        write_checkpoint(root, int(info["step"]), state, cfg, lr_mean=float(info["lr_mean"]))
        steps.append(int(info["step"]))
        grads.append({k.split("/", 1)[1]: torch.from_numpy(np.array(v))
                      for k, v in payload.arrays.items() if k.startswith(f"grad{i}/")})
    save_anchor_gradients(root, steps, grads)


def step_dynamics(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    from fedcurate.common.pipeline import score_dataset

    samples = site_samples(where.site_dir)
    if payload.values.get("checkpoints"):
        root = out / "checkpoints"
        write_broadcast_checkpoints(cfg, payload, root)
        write_samples(root / "train.jsonl", samples)  # DataInf's Hessian uses the site's own samples
        cfg = replace(cfg, dynamics=replace(cfg.dynamics, checkpoints_dir=str(root)))
    columns: dict[str, dict[str, Any]] = {}
    for name in cfg.scoring.scorers:
        if name in DS2_FROM_CURATION:
            values = _ds2_column(name, cfg, where.site_dir)
            higher = True
        else:
            col = score_dataset(name, samples, cfg, out / "scores")
            values, higher = col.values, col.higher_is_better
        columns[name] = {"values": [float(v) for v in values], "reasons": [failure_reason(v) for v in values],
                         "higher_is_better": bool(higher)}
    write_columns(out, columns)
    return Payload({"moments": {n: moments(orient(c["values"], c["higher_is_better"])) for n, c in columns.items()},
                    "failures": {n: sum(1 for r in c["reasons"] if r) for n, c in columns.items()}})


def _ds2_column(name: str, cfg: Config, site_dir: Path) -> list[float]:
    from fedcurate.common.scorers import SCORERS

    path = Path(site_dir) / "curate" / "apply" / "curation.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: scorer {name!r} needs the curate phase")
    with np.load(path) as z:
        combined = SCORERS.get(name)(cfg).combine(z["raw"], z["curated"], z["longtail"])
    return [failed("no raw rating") if np.isnan(v) else float(v) for v in combined]


def moments(oriented: np.ndarray) -> list[float]:
    """[count, sum, sum of squares, min, max] of the finite values (min/max NaN when there are none)."""
    v = oriented[np.isfinite(oriented)]
    if not v.size:
        return [0.0, 0.0, 0.0, float("nan"), float("nan")]
    return [float(v.size), float(v.sum()), float(np.square(v).sum()), float(v.min()), float(v.max())]


def write_columns(out: Path, columns: dict[str, dict[str, Any]]) -> None:
    """columns.parquet (values may be +-inf or NaN) and columns.json (orientation)."""
    table = {}
    for name, c in columns.items():
        table[name], table[f"{name}_reason"] = c["values"], c["reasons"]
    io.write_with(out / "columns.parquet", lambda tmp: pq.write_table(pa.table(table), tmp))
    io.write_json(out / "columns.json", {n: {"higher_is_better": c["higher_is_better"]} for n, c in columns.items()})


def site_columns(site_dir: Path) -> dict[str, dict[str, Any]]:
    """{scorer: {"values", "reasons", "higher_is_better"}} of the dynamics step."""
    folder = Path(site_dir) / "dynamics"
    if not (folder / "columns.json").exists():
        raise FileNotFoundError(f"{folder / 'columns.json'} not found: the dynamics step has not run at this site")
    meta = json.loads((folder / "columns.json").read_text(encoding="utf-8"))
    table = pq.read_table(folder / "columns.parquet").to_pydict()
    return {n: {"values": [np.nan if v is None else v for v in table[n]], "reasons": table[f"{n}_reason"],
                "higher_is_better": m["higher_is_better"]} for n, m in meta.items()}


def composite_scores(columns: dict[str, dict[str, Any]], spec: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """The composite score (higher is better) and, where it is NaN, why.

    spec {"primary": name}: that scorer's oriented score. spec {"scorers", "weights", "means", "stds"}:
    sum of weight * (oriented score - global mean) / global std; a failure of any weighted scorer fails it.
    """
    if "primary" in spec:
        c = columns[spec["primary"]]
        return orient(c["values"], c["higher_is_better"]), list(c["reasons"])
    total: np.ndarray | None = None
    reasons: list[str] | None = None
    for name, w, mu, sd in zip(spec["scorers"], spec["weights"], spec["means"], spec["stds"], strict=True):
        if w == 0:
            continue
        c = columns[name]
        z = (orient(c["values"], c["higher_is_better"]) - mu) / (sd if sd > 0 else 1.0)
        total = w * z if total is None else total + w * z
        reasons = list(c["reasons"]) if reasons is None else [a or (f"{name}: {b}" if b else "")
                                                              for a, b in zip(reasons, c["reasons"], strict=True)]
    assert total is not None and reasons is not None, "the server never sends all-zero weights"
    return total, reasons


# ---------------------------------------------------------------- threshold
def step_threshold_range(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    score, reasons = composite_scores(site_columns(where.site_dir), payload.values["composite"])
    io.write_with(out / "composite.npy", lambda tmp: _save_npy(tmp, score))
    io.write_json(out / "composite-reasons.json", reasons)
    m = moments(score)
    sigma = payload.values.get("dp-sigma")
    if sigma:  # DP: a noisy sample count only; no extreme scores (the grid comes from privacy.score-range)
        noisy = noisy_counts(np.array([score.size]), float(sigma), _secret_rng())
        return Payload({"num-finite": int(noisy[0]), "num-nan": 0})
    return Payload({"min": m[3], "max": m[4], "num-finite": int(m[0]), "num-nan": int(np.isnan(score).sum())})


def _secret_rng() -> np.random.Generator:
    """Noise the server cannot reproduce: seeded from the OS, never from the shared config."""
    return np.random.default_rng()


def noisy_counts(counts: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    from fedcurate.common.privacy import noisy_counts as add_noise

    return np.asarray(add_noise(np.asarray(counts), sigma, rng, clip_negative=False), dtype=np.int64)


def _site_composite(site_dir: Path) -> tuple[np.ndarray, list[str]]:
    folder = Path(site_dir) / "threshold" / "range"
    if not (folder / "composite.npy").exists():
        raise FileNotFoundError(f"{folder / 'composite.npy'} not found: the threshold/range step has not run here")
    reasons = json.loads((folder / "composite-reasons.json").read_text(encoding="utf-8"))
    return np.load(folder / "composite.npy"), reasons


def step_threshold_hist(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    score, _ = _site_composite(where.site_dir)
    hist = interval_histogram(score, payload.arrays["edges"], bool(payload.values.get("closed", True)))
    counts = hist.pop("counts")
    sigma = payload.values.get("dp-sigma")
    if sigma:  # DP: every bin and the outside counts noisy; no inside min/max (they are exact scores)
        rng = _secret_rng()
        counts = noisy_counts(counts, float(sigma), rng)
        outside = noisy_counts(np.array([hist["num-above"], hist["num-below"], hist["num-nan"]]), float(sigma), rng)
        hist = {"num-above": int(outside[0]), "num-below": int(outside[1]), "num-nan": int(outside[2])}
    return Payload(hist, {"counts": counts})


# ---------------------------------------------------------------- select
def step_select(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    samples = site_samples(where.site_dir)
    score, reasons = _site_composite(where.site_dir)
    threshold = payload.values.get("threshold")
    if threshold is None:  # local scope: this site applies the selection rule to its own scores
        selection = select(score, cfg.selection, reasons)
        keep, drop = selection.keep, list(selection.reasons)
        threshold = selection.threshold
    else:
        ties = payload.values.get("tie-fraction")
        keep = keep_mask(score, float(threshold)) if ties is None else tie_quota(score, float(threshold), ties)
        drop = ["" if k else (f"failed: {r}" if r else "below the global threshold")
                for k, r in zip(keep, reasons, strict=True)]
    columns = site_columns(where.site_dir)
    table: dict[str, Any] = {"id": [s.id for s in samples], "score": score.tolist(),
                             **{n: c["values"] for n, c in columns.items()},
                             "selected": keep.tolist(), "drop_reason": drop}
    labels = labels_of(samples)
    if labels is not None:
        table["clean"] = labels.tolist()
    io.write_with(out / "scores.parquet", lambda tmp: pq.write_table(pa.table(table), tmp))
    io.write_jsonl(out / "selected.jsonl", ({**s.to_dict(), "score": float(score[i])}
                                            for i, s in enumerate(samples) if keep[i]))
    by_reason = dict(sorted(Counter(r for r in drop if r).items(), key=lambda kv: (-kv[1], kv[0])))
    stats: dict[str, Any] = {"site": where.site, "num-samples": len(samples), "kept": int(keep.sum()),
                             "dropped": int((~keep).sum()), "dropped-by-reason": by_reason,
                             "threshold": None if threshold is None else float(threshold)}
    if labels is not None:
        stats["num-clean-kept"] = int(labels[keep].sum())
        stats["num-clean"] = int(labels.sum())
    io.write_json(out / "stats.json", stats)
    return Payload(stats)


# ---------------------------------------------------------------- evaluate
def step_evaluate(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    """The broadcast adapter on this site's own held-out set; only the figures leave the site."""
    from fedcurate.common.evaluation import evaluate_path
    from fedcurate.common.federated_lora import write_adapter

    path = site_test_path(cfg, where)
    if not path or (not where.test_path and not Path(path).exists()):  # a given test-path must exist
        where_from = path or "no node config test-path, no evaluation.site-test-path"
        return Payload({"num-samples": 0, "skipped": f"no test set at this site ({where_from})"})
    samples = load_samples(path).samples
    if cfg.evaluation.max_samples:
        samples = samples[: cfg.evaluation.max_samples]
    adapter = write_adapter(out / "adapter", dict(payload.arrays), cfg)
    result = evaluate_path(str(adapter), samples, cfg, exact_match=cfg.evaluation.exact_match)
    return Payload({"num-samples": result.num_samples, "loss": result.loss,
                    "token-accuracy": result.token_accuracy, "exact-match": result.exact_match})


def site_test_path(cfg: Config, where: SiteLocation) -> str:
    """The site's held-out set: node config test-path, else evaluation.site-test-path for this site ("" if none)."""
    return where.test_path or cfg.evaluation.site_test_path.replace("{site}", where.site)


STEPS: dict[str, StepFn] = {
    "prepare": step_prepare,
    "curate/counts": step_curate_counts,
    "curate/apply": step_curate_apply,
    "warmup": step_warmup,
    "dynamics": step_dynamics,
    "threshold/range": step_threshold_range,
    "threshold/hist": step_threshold_hist,
    "select": step_select,
    "train": step_train,
    "evaluate": step_evaluate,
}

