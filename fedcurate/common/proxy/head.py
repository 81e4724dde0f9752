"""The proxy quality head (FineWeb-Edu style): a linear regression on frozen sentence embeddings.

FineWeb-Edu rates a sample of the corpus with an LLM (0-5, additive prompt), then fits a linear
regression head on frozen encoder embeddings with a mean-squared-error loss, and keeps documents whose
`int_score` = round(clip(score, 0, 5)) is at least 3. The same here, on this project's encoder
(`curation.embedding-model`, default MiniLM, 384-d, L2-normalised):

    head = train_head(x_train, y_train, monitor=(x_m, y_m)).head   # torch.nn.Linear(dim, 1)
    scores = predict(head, x)                                 # float, not clipped
    ints = int_scores(scores)                                 # round half up, then clip to 0..5
    metrics = evaluate(scores, y, threshold=3.0)              # MSE, F1 at the threshold, 6 x 6 confusion
    save_head("run/head", head, meta); head, meta = load_head("run/head")

Federation: `head_state(head)` is a plain {"weight": (1, dim), "bias": (1,)} dict of float32 numpy
arrays; `fedavg_heads(states, weights)` averages them (weights normalised to sum 1), and
`train_head(..., init=state)` continues from a global head, as a FedAvg round does. A saved head is
`weights.npz` (that dict, no pickle) and `head.json` (encoder, dimension, threshold), each written
atomically.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedcurate.common.io import write_json, write_with

logger = logging.getLogger(__name__)

MAX_SCORE = 5  # ratings and int_score live on 0..MAX_SCORE
WEIGHTS_FILE = "weights.npz"
META_FILE = "head.json"
STATE_KEYS = ("weight", "bias")


@dataclass(frozen=True)
class HeadMeta:
    """What a saved head needs besides its weights: the encoder it reads, its input size, its threshold."""

    encoder: str
    pooling: str
    max_tokens: int
    dim: int
    threshold: float = 3.0  # a sample clears the head when int_score >= threshold
    kind: str = "linear-regression"
    max_score: int = MAX_SCORE
    rating_column: str = "rating"
    format_version: int = 1


def new_head(dim: int) -> torch.nn.Linear:
    """A linear head with zero weights and bias (deterministic, so every site starts alike)."""
    head = torch.nn.Linear(dim, 1)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    return head


@dataclass
class TrainResult:
    """A trained head and how training went."""

    head: torch.nn.Linear
    train_loss: list[float]  # mean MSE over each epoch's batches
    monitor_mse: list[float]  # with a monitor set: its MSE before training (index 0) and after each epoch
    best_epoch: int  # the epoch whose weights were kept (0 = the starting head); the last without a monitor


def train_head(x: np.ndarray, y: np.ndarray, *, epochs: int = 30, lr: float = 0.1, batch_size: int = 64,
               weight_decay: float = 0.0, seed: int = 0, init: Mapping[str, np.ndarray] | None = None,
               monitor: tuple[np.ndarray, np.ndarray] | None = None) -> TrainResult:
    """Fit a linear head to ratings `y` (shape [n], 0..5) on embeddings `x` ([n, dim]) with MSE and Adam.

    Without `init` the weights start at zero and the bias at mean(y) (the constant predictor); with
    `init` (a `head_state` dict) training continues from that head, as in a FedAvg round. The learning
    rate decays linearly to 0. With a `monitor` set (x, y), the weights of the epoch with the lowest
    monitor MSE are kept, the starting head included, so a small training set cannot make the head
    worse than where it started. Shuffling is seeded: the same inputs give the same head.
    """
    x, y = _check_xy(x, y)
    head = new_head(x.shape[1])
    if init is not None:
        load_state_into(head, init)
    else:
        with torch.no_grad():
            head.bias.fill_(float(y.mean()))
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max(1, epochs * math.ceil(len(y) / batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 - k / steps)  # linear decay to 0
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    watch = [_mse(head, monitor)] if monitor is not None else []
    best = (0, head_state(head))
    for epoch in range(1, epochs + 1):
        order, total = torch.randperm(len(yt), generator=gen), 0.0
        for start in range(0, len(yt), batch_size):
            rows = order[start:start + batch_size]
            loss = torch.nn.functional.mse_loss(head(xt[rows]).squeeze(1), yt[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(rows)
        losses.append(total / len(yt))
        if monitor is not None:
            watch.append(_mse(head, monitor))
            if watch[-1] < watch[best[0]]:
                best = (epoch, head_state(head))
    if monitor is not None:
        load_state_into(head, best[1])
    return TrainResult(head.eval(), losses, watch, best[0] if monitor is not None else epochs)


def _mse(head: torch.nn.Linear, data: tuple[np.ndarray, np.ndarray]) -> float:
    x, y = data
    return float(np.mean((predict(head, x) - np.asarray(y, dtype=np.float64)) ** 2))


def _check_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.float32)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"embeddings must be [n, dim] and ratings [n]; got {x.shape} and {y.shape}")
    if len(y) == 0:
        raise ValueError("no training samples: every rating is missing or NaN")
    if not np.isfinite(y).all() or y.min() < 0 or y.max() > MAX_SCORE:
        raise ValueError(f"ratings must be finite and within 0..{MAX_SCORE}; got min {np.nanmin(y)}, "
                         f"max {np.nanmax(y)} (rescale other scales before training the head)")
    return x, y


@torch.no_grad()
def predict(head: torch.nn.Module, x: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """Raw scores (float64, not clipped) for embeddings `x` [n, dim], in row order."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = [head(torch.from_numpy(x[s:s + batch_size])).squeeze(1).double().numpy()
           for s in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros(0)


def int_scores(scores: np.ndarray) -> np.ndarray:
    """int_score: rounded half up (2.5 -> 3; FineWeb-Edu's Python `round` gives 2), clipped to 0..5, as int8."""
    return np.clip(np.floor(np.asarray(scores, dtype=np.float64) + 0.5), 0, MAX_SCORE).astype(np.int8)


def evaluate(pred: np.ndarray, y: np.ndarray, threshold: float = 3.0) -> dict[str, Any]:
    """MSE of the raw scores, and at int_score >= threshold (both sides rounded): precision, recall, F1.

    `confusion[i][j]` counts samples whose rounded rating is i and rounded prediction is j (0..5).
    Precision (recall) is NaN when nothing is predicted (truly) positive; F1 is NaN when both are.
    """
    pred, y = np.asarray(pred, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if pred.shape != y.shape or pred.ndim != 1:
        raise ValueError(f"predictions {pred.shape} and ratings {y.shape} must be 1-d and of one length")
    p_int, y_int = int_scores(pred), int_scores(y)
    confusion = np.zeros((MAX_SCORE + 1, MAX_SCORE + 1), dtype=np.int64)
    np.add.at(confusion, (y_int, p_int), 1)
    pos_pred, pos_true = p_int >= threshold, y_int >= threshold
    tp = int((pos_pred & pos_true).sum())
    fp, fn = int((pos_pred & ~pos_true).sum()), int((~pos_pred & pos_true).sum())
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    if tp:
        f1 = 2 * precision * recall / (precision + recall)
    else:
        f1 = math.nan if (tp + fp == 0 and tp + fn == 0) else 0.0
    return {"n": int(len(y)), "mse": float(np.mean((pred - y) ** 2)) if len(y) else math.nan,
            "threshold": threshold, "precision": precision, "recall": recall, "f1": f1,
            "tp": tp, "fp": fp, "fn": fn, "tn": int(len(y) - tp - fp - fn),
            "accuracy_int": float((p_int == y_int).mean()) if len(y) else math.nan,
            "confusion": confusion.tolist()}


def head_state(head: torch.nn.Linear) -> dict[str, np.ndarray]:
    """The head's parameters as float32 numpy arrays: {"weight": (1, dim), "bias": (1,)}."""
    return {"weight": head.weight.detach().cpu().numpy().astype(np.float32).copy(),
            "bias": head.bias.detach().cpu().numpy().astype(np.float32).copy()}


def load_state_into(head: torch.nn.Linear, state: Mapping[str, np.ndarray]) -> None:
    """Copy a `head_state` dict into `head`; a missing key or a shape mismatch is an error."""
    if set(state) != set(STATE_KEYS):
        raise ValueError(f"head state keys {sorted(state)}; expected {list(STATE_KEYS)}")
    with torch.no_grad():
        for name in STATE_KEYS:
            target = getattr(head, name)
            value = torch.as_tensor(np.asarray(state[name], dtype=np.float32))
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"head state {name!r} has shape {tuple(value.shape)}; the head needs "
                                 f"{tuple(target.shape)} (was it trained on another encoder?)")
            target.copy_(value)


def load_head_state(state: Mapping[str, np.ndarray]) -> torch.nn.Linear:
    """A head built from a `head_state` dict (its size taken from the weight's shape)."""
    weight = np.asarray(state["weight"])
    if weight.ndim != 2 or weight.shape[0] != 1:
        raise ValueError(f"head state 'weight' must have shape (1, dim), got {weight.shape}")
    head = new_head(weight.shape[1])
    load_state_into(head, state)
    return head.eval()


def fedavg_heads(states: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """FedAvg: sum_k w_k * state_k with the weights normalised to sum 1 (e.g. training examples per site)."""
    if not states or len(states) != len(weights):
        raise ValueError(f"need one weight per state: {len(states)} states, {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0; got {list(weights)}")
    w = w / w.sum()
    out: dict[str, np.ndarray] = {}
    for name in STATE_KEYS:
        shapes = {np.shape(s[name]) for s in states}
        if len(shapes) != 1:
            raise ValueError(f"head states disagree on the shape of {name!r}: {sorted(shapes)}")
        stacked = np.stack([np.asarray(s[name], dtype=np.float64) for s in states])
        out[name] = np.tensordot(w, stacked, axes=1).astype(np.float32)
    return out


def save_head(folder: str | Path, head: torch.nn.Linear, meta: HeadMeta) -> Path:
    """Write `weights.npz` and `head.json` under `folder` atomically; returns the folder."""
    folder = Path(folder)
    state = head_state(head)
    if state["weight"].shape[1] != meta.dim:
        raise ValueError(f"head has {state['weight'].shape[1]} inputs but meta.dim = {meta.dim}")

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **state)

    write_with(folder / WEIGHTS_FILE, writer)
    write_json(folder / META_FILE, dataclasses.asdict(meta))
    return folder


def load_head(folder: str | Path) -> tuple[torch.nn.Linear, HeadMeta]:
    """Read a head written by `save_head` (the folder, or its head.json)."""
    folder = Path(folder)
    if folder.name == META_FILE:
        folder = folder.parent
    meta_path, weights_path = folder / META_FILE, folder / WEIGHTS_FILE
    for path in (meta_path, weights_path):
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found (a proxy head folder holds {META_FILE} and {WEIGHTS_FILE}; "
                                    "make one with `fedcurate proxy train`)")
    raw = json.loads(meta_path.read_text(encoding="utf-8"))
    known = {f.name for f in dataclasses.fields(HeadMeta)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{meta_path}: unknown keys {unknown}; allowed: {sorted(known)}")
    meta = HeadMeta(**raw)
    with np.load(weights_path, allow_pickle=False) as data:
        state = {k: data[k] for k in data.files}
    head = load_head_state(state)
    if head.in_features != meta.dim:
        raise ValueError(f"{weights_path}: weights take {head.in_features} inputs, {meta_path} says dim {meta.dim}")
    return head, meta
