"""Merging of site LoRA adapters: CLUES one-shot merging, and the LoRA maths of FedAvg (`lora_average.py`).

    merged = merge_adapters([state_a, state_b], weights=[300, 100], method="ties", density=0.2,
                            seed=0, rank=8, scaling=lora_alpha / r)
    mean = merge_adapters([state_a, state_b], weights=[300, 100], method="svd")     # one FedAvg round

A state is a peft adapter state dict (`get_peft_model_state_dict`) of torch tensors or numpy arrays;
the result has the same type and keys. LoRA pairs are found by name: `<m>.lora_A[.<name>].weight`
(r x in) with `<m>.lora_B[...]` (out x r), and `lora_embedding_A`/`_B`. Site k changes module m by
dW_k = s * B_k @ A_k with s = lora_alpha / r (`scaling`); the merged factors satisfy
s_out * B' @ A' = merged dW (`out_scaling`, default `scaling`, so they load into the same LoraConfig).
Other tensors (modules_to_save, biases) are averaged with weights summing to 1 by every method.

| method      | merges                                                       | rank out   | weights   |
|-------------|--------------------------------------------------------------|------------|-----------|
| `linear`    | A and B averaged separately (FedIT); B'A' != mean dW         | r          | sum to 1  |
| `svd`       | mean dW, re-factored by truncated SVD (see `factor_product`) | `rank`     | sum to 1  |
| `stack`     | A rows / B columns concatenated: exactly mean dW             | sum of r_k | sum to 1  |
| `ties`      | TIES on the dW_k: trim each to its top-`density` magnitudes, | `rank`     | mean 1    |
|             | elect the sign of the sum, disjoint mean; then SVD           |            |           |
| `ties-peft` | peft's `ties`: TIES on the A's and on the B's separately     | r          | mean 1    |
| `dare`      | DARE on the dW_k: keep each entry with prob. `density`       | `rank`     | sum to 1  |
|             | (seeded), rescale by 1/density, weighted mean; then SVD      |            |           |

`rank` defaults to the largest input rank. TIES weights are rescaled to mean 1 (the disjoint mean already
averages), so uniform weights give plain TIES, as CLUES' `weights=[1.0] * 6`.

peft's `add_weighted_adapter` (0.21.2) differs: its `ties` applies TIES to the stacked A's and B's
separately with weights sqrt(w * s), losing the cross terms of B @ A (`ties-peft` reproduces it; our
`ties` is peft's `ties_svd`); its `linear` uses the same sqrt(w * s) factors, so with weights summing to
1 it yields K * s * mean(B) @ mean(A) for K equal sites, not our FedIT mean; its `svd` is our `svd` and
`cat` our `stack`. Its merged adapter has lora_alpha = r (scaling 1): use `out_scaling=1.0` to compare.

FedAvg of LoRA states (`lora_average.average_states`, p_k = n_k / sum n) names the methods by
`federation.exact`: "none" (FedIT, A and B averaged separately: mean(B) @ mean(A) != sum p_k B_k A_k) is
`linear`; "svd" is `svd`, shapes fixed, B' @ A' the best rank-r approximation of the mean dW
(Eckart-Young; exact when the sum of site ranks <= r or rank(mean dW) <= r, with K sites of rank r it
generally truncates). `stack` (FLoRA-style, Wang et al. 2024: exactly sum p_k B_k @ A_k, of rank sum r_k)
cannot serve FedAvg rounds, whose Adam moments need fixed shapes (nor is it a `federation.merge-method`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedcurate.common.registry import Registry

logger = logging.getLogger(__name__)

State = Mapping[str, Any]  # name -> torch.Tensor | np.ndarray
MERGERS: Registry[Callable[..., tuple[torch.Tensor, torch.Tensor]]] = Registry("merge method")
_B_OF_A = {"lora_A": "lora_B", "lora_embedding_A": "lora_embedding_B"}


def lora_pairs(keys: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """((A key, B key) pairs, other keys) of a state's keys; an A without its B (or vice versa) is an error."""
    keyset, pairs = set(keys), []
    for key in sorted(keyset):
        parts = key.split(".")
        for i, part in enumerate(parts):
            if part in _B_OF_A:
                b_key = ".".join(parts[:i] + [_B_OF_A[part]] + parts[i + 1:])
                if b_key not in keyset:
                    raise ValueError(f"LoRA factor {key!r} has no partner {b_key!r}")
                pairs.append((key, b_key))
    paired = {k for pair in pairs for k in pair}
    lone_b = sorted(k for k in keyset - paired if any(p in k.split(".") for p in _B_OF_A.values()))
    if lone_b:
        raise ValueError(f"LoRA factor(s) without their A: {', '.join(lone_b[:5])}")
    return pairs, sorted(keyset - paired)


def lora_delta(state: State, a_key: str, scaling: float = 1.0) -> torch.Tensor:
    """dW = scaling * B @ A of the pair whose A is `a_key` (float64)."""
    pairs = dict(lora_pairs(list(state))[0])
    return scaling * _t(state[pairs[a_key]]) @ _t(state[a_key])


def _t(x: Any) -> torch.Tensor:
    return (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))).detach().to(torch.float64)


def normalized(weights: Sequence[float], n: int, to: str = "sum") -> list[float]:
    """`weights` rescaled to sum to 1 (`to="sum"`) or to average 1 (`to="mean"`); must be >= 0, not all 0."""
    w = [float(x) for x in weights]
    if len(w) != n:
        raise ValueError(f"{len(w)} weights for {n} adapters")
    if not all(math.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w}")
    return [x * (n if to == "mean" else 1) / sum(w) for x in w]


def factor_product(bs: Sequence[torch.Tensor], as_: Sequence[torch.Tensor], coefs: Sequence[float],
                   rank: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(A', B') with B' @ A' the best rank-`rank` approximation (Eckart-Young, Frobenius and spectral
    norm) of M = sum_k coefs[k] * bs[k] @ as_[k]; exact when rank(M) <= rank, e.g. when sum r_k <= rank.

    Computed without forming M: QR of the stacked factors, SVD of the small core (O((out + in) R^2)
    for R = sum r_k). B' = U_r sqrt(S_r), A' = sqrt(S_r) V_r^T, except that an A row never gets shorter
    than the inputs' mean A-row norm (B' absorbs the difference; the product is unchanged): directions
    with S ~ 0 then stay trainable, where a zero row of A and column of B would never receive a
    gradient again. If M has fewer than `rank` directions the spare A rows are seeded random directions
    orthogonal to the others, with zero B columns (like a fresh LoRA initialisation).
    """
    b_cat = torch.cat([c * b for c, b in zip(coefs, bs, strict=True)], dim=1)
    qb, rb = torch.linalg.qr(b_cat)
    qa, ra = torch.linalg.qr(torch.cat(list(as_), dim=0).T)
    u, s, vh = torch.linalg.svd(rb @ ra.T, full_matrices=False)
    return _balanced(qb @ u, s, qa @ vh.T, rank, _row_norm(as_), seed)


def factor_dense(m: torch.Tensor, rank: int, floor: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(A', B') of the best rank-`rank` approximation of a dense matrix, balanced as in `factor_product`."""
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    return _balanced(u, s, vh.T, rank, floor, seed)


def _row_norm(as_: Sequence[torch.Tensor]) -> float:
    norm = float(torch.cat(list(as_), dim=0).norm(dim=1).mean())
    return norm if norm > 0 else 1.0


def _balanced(u: torch.Tensor, s: torch.Tensor, v: torch.Tensor, rank: int, floor: float,
              seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    k = min(rank, s.numel())
    d = torch.clamp(s[:k].sqrt(), min=floor)
    b = u[:, :k] * (s[:k] / d)
    a = d[:, None] * v[:, :k].T
    spare = min(rank, v.shape[0]) - k
    if spare > 0:  # fewer directions than the rank: fresh orthogonal A rows, zero B columns
        gen = torch.Generator().manual_seed(seed)
        g = torch.randn(v.shape[0], spare, generator=gen, dtype=v.dtype)
        g -= v[:, :k] @ (v[:, :k].T @ g)
        a = torch.cat([a, floor * torch.linalg.qr(g)[0].T])
        b = torch.cat([b, torch.zeros(b.shape[0], spare, dtype=b.dtype)], dim=1)
    if a.shape[0] < rank:  # rank above the input dimension: zero-pad
        a = torch.cat([a, torch.zeros(rank - a.shape[0], a.shape[1], dtype=a.dtype)])
        b = torch.cat([b, torch.zeros(b.shape[0], rank - b.shape[1], dtype=b.dtype)], dim=1)
    return a, b


@dataclass(frozen=True)
class _Settings:
    weights: list[float]  # summing to 1
    scaling: float
    out_scaling: float
    rank: int
    density: float
    seed: int


@MERGERS.register("linear")
def _linear(as_, bs, cfg: _Settings):
    root = math.sqrt(cfg.scaling / cfg.out_scaling)
    return (root * sum(w * a for w, a in zip(cfg.weights, as_, strict=True)),
            root * sum(w * b for w, b in zip(cfg.weights, bs, strict=True)))


@MERGERS.register("svd")
def _svd(as_, bs, cfg: _Settings):
    coefs = [w * cfg.scaling / cfg.out_scaling for w in cfg.weights]
    return factor_product(bs, as_, coefs, cfg.rank, cfg.seed)


@MERGERS.register("stack")
def _stack(as_, bs, cfg: _Settings):
    coefs = [w * cfg.scaling / cfg.out_scaling for w in cfg.weights]
    return torch.cat(list(as_), dim=0), torch.cat([c * b for c, b in zip(coefs, bs, strict=True)], dim=1)


def ties_merge(taus: Sequence[torch.Tensor], weights: Sequence[float], density: float) -> torch.Tensor:
    """TIES (Yadav et al. 2023): trim each task tensor to its top-`density` magnitudes, elect per entry the
    sign of the sum of the trimmed tensors (>= 0 -> +), average the weighted entries agreeing with it."""
    trimmed = []
    for tau in taus:
        keep = int(density * tau.numel())
        mask = torch.zeros(tau.numel(), dtype=torch.bool)
        mask[torch.topk(tau.abs().flatten(), keep).indices] = True
        trimmed.append(tau if density >= 1 else tau * mask.view_as(tau))
    stacked = torch.stack(trimmed)
    elected = torch.where(stacked.sum(0) >= 0, 1.0, -1.0).to(stacked.dtype)
    agree = stacked.sign() == elected
    w = torch.tensor(list(weights), dtype=stacked.dtype).view(-1, *([1] * (stacked.dim() - 1)))
    return (stacked * w * agree).sum(0) / agree.sum(0).clamp(min=1)


@MERGERS.register("ties")
def _ties(as_, bs, cfg: _Settings):
    taus = [cfg.scaling * b @ a for a, b in zip(as_, bs, strict=True)]
    mean_one = [w * len(taus) for w in cfg.weights]
    return factor_dense(ties_merge(taus, mean_one, cfg.density) / cfg.out_scaling, cfg.rank,
                        _row_norm(as_), cfg.seed)


@MERGERS.register("ties-peft")
def _ties_peft(as_, bs, cfg: _Settings):
    """peft 0.21.2 `_generalized_task_arithmetic_weighted_adapter` with combination_type="ties"."""
    from peft.utils.merge_utils import ties as peft_ties  # imported here: importing peft takes seconds
    ws = [w * len(as_) * cfg.scaling for w in cfg.weights]  # weights rescaled to mean 1, times s
    w_a = torch.tensor([math.copysign(math.sqrt(abs(w)), w) for w in ws], dtype=torch.float64)
    w_b = torch.tensor([math.sqrt(abs(w)) for w in ws], dtype=torch.float64)
    root = math.sqrt(cfg.out_scaling)
    return (peft_ties(list(as_), w_a, cfg.density) / root, peft_ties(list(bs), w_b, cfg.density) / root)


@MERGERS.register("dare")
def _dare(as_, bs, cfg: _Settings):
    gen = torch.Generator().manual_seed(cfg.seed)
    merged = 0
    for w, a, b in zip(cfg.weights, as_, bs, strict=True):
        tau = cfg.scaling * b @ a
        keep = torch.bernoulli(torch.full_like(tau, cfg.density), generator=gen)
        merged = merged + w * tau * keep / cfg.density
    return factor_dense(merged / cfg.out_scaling, cfg.rank, _row_norm(as_), cfg.seed)


def weighted_mean(states: Sequence[State], weights: Sequence[float], keys: Sequence[str] | None = None
                  ) -> dict[str, torch.Tensor]:
    """Plain weighted mean (weights rescaled to sum 1) of `keys` (default: all), float64."""
    w = normalized(weights, len(states))
    return {k: sum(wi * _t(s[k]) for wi, s in zip(w, states, strict=True))
            for k in (keys if keys is not None else list(states[0]))}


def merge_adapters(states: Sequence[State], weights: Sequence[float], method: str, *, density: float = 0.2,
                   seed: int = 0, rank: int | None = None, scaling: float = 1.0,
                   out_scaling: float | None = None) -> dict[str, Any]:
    """Merge site adapters with `method` (table above); returns a state like the inputs, in their dtype."""
    merge = MERGERS.get(method)
    if not states:
        raise ValueError("no adapters to merge")
    keys = set(states[0])
    for i, s in enumerate(states[1:], start=1):
        if set(s) != keys:
            raise ValueError(f"adapter {i} has other keys than adapter 0: {sorted(keys ^ set(s))[:5]}")
    if method in ("ties", "ties-peft", "dare") and not 0 < density <= 1:
        raise ValueError(f"density must lie in (0, 1] for {method}, got {density}")
    pairs, others = lora_pairs(list(keys))
    not_2d = [a for a, b in pairs if len(np.shape(states[0][a])) != 2 or len(np.shape(states[0][b])) != 2]
    if not_2d:
        raise ValueError(f"only 2-D LoRA factors (Linear, Embedding) can be merged; conv LoRA: {not_2d[:3]}")
    ranks = {int(np.shape(s[a])[0]) for s in states for a, _ in pairs}
    if method in ("linear", "ties-peft") and len(ranks) > 1:
        raise ValueError(f"{method} needs equal LoRA ranks, got {sorted(ranks)}; use svd or stack")
    cfg = _Settings(normalized(weights, len(states)), float(scaling),
                    float(scaling if out_scaling is None else out_scaling),
                    int(rank or max(ranks, default=1)), float(density), int(seed))
    out: dict[str, torch.Tensor] = weighted_mean(states, cfg.weights, others)
    for a_key, b_key in pairs:
        out[a_key], out[b_key] = merge([_t(s[a_key]) for s in states], [_t(s[b_key]) for s in states], cfg)
    return _like(out, states[0])


def _like(out: Mapping[str, torch.Tensor], ref: State) -> dict[str, Any]:
    """`out` converted to the container type and per-key dtype of `ref`."""
    if all(isinstance(v, torch.Tensor) for v in ref.values()):
        return {k: v.to(ref[k].dtype).contiguous() for k, v in out.items()}
    return {k: np.ascontiguousarray(v.numpy().astype(np.asarray(ref[k]).dtype)) for k, v in out.items()}
