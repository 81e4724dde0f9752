"""LESS-style scores (Xia et al., ICML 2024, "LESS: Selecting Influential Data for Targeted Instruction Tuning").

    S(z) = 1/C * sum_c eta_c * mean_{a in anchor} cos( P Gamma_c(g_c(z)), P g_c(a) )
         = 1/C * sum_c eta_c * < P Gamma_c(g_c(z)) / ||P Gamma_c(g_c(z))||, t_c >,
    t_c  = mean_{a in anchor} P g_c(a) / ||P g_c(a)||

Gamma_c is the Adam preconditioning of checkpoint c (as CLUES), anchor gradients are plain (as LESS's
validation gradients), and P is a d x D random projection (d = `dynamics.projection-dim`). Averaging the
cosine over individual anchor samples is LESS's rule (before its max over tasks: the anchor is one task).

P has i.i.d. Rademacher entries +-1/sqrt(d), as TRAK's projector that LESS uses. It is never stored
whole: the rows that multiply LoRA parameter `name` are made in chunks of `chunk_rows`, each from a
generator seeded by (seed, name, chunk index), so P is the same in every process and for every batch.
Chunks are kept in memory up to `cache_bytes` in total and regenerated beyond that (large models).
Per-sample gradients are built one layer of one batch at a time, projected and freed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch

from fedcurate.common.dynamics.checkpoints import Checkpoint, apply_checkpoint
from fedcurate.common.dynamics.gradients import (
    LoraLayer,
    adam_direction,
    capture,
    lora_layers,
    per_sample_grad,
)
from fedcurate.common.dynamics.scoring import DynamicsModel, Samples, batches, encode_set, progress_bar
from fedcurate.common.failures import failed
from fedcurate.common.models.templates import Encoded

CACHE_BYTES = 512 * 2**20


class RademacherProjection:
    """x -> x P^T for blocks of x keyed by parameter name; P's entries are +-1/sqrt(dim)."""

    def __init__(self, dim: int, seed: int, chunk_rows: int = 4096, cache_bytes: int = CACHE_BYTES) -> None:
        self.dim, self.seed, self.chunk_rows, self.cache_bytes = dim, seed, chunk_rows, cache_bytes
        self._cache: dict[tuple[str, int], torch.Tensor] = {}
        self._cached_bytes = 0

    def _chunk(self, name: str, k: int, rows: int, device: torch.device) -> torch.Tensor:
        key = (name, k)
        if key in self._cache:
            return self._cache[key].to(device)
        digest = hashlib.sha256(f"{self.seed}:{name}:{k}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        signs = torch.randint(0, 2, (rows, self.dim), generator=gen, dtype=torch.int8)
        block = signs.float().mul_(2.0).sub_(1.0).div_(math.sqrt(self.dim))
        if self._cached_bytes + block.numel() * 4 <= self.cache_bytes:
            self._cache[key] = block
            self._cached_bytes += block.numel() * 4
        return block.to(device)

    def matrix(self, name: str, rows: int) -> torch.Tensor:
        """(rows, dim): the block of P^T that multiplies parameter `name` (for checks; memory rows x dim)."""
        return torch.cat([self._chunk(name, k, min(self.chunk_rows, rows - start), torch.device("cpu"))
                          for k, start in enumerate(range(0, rows, self.chunk_rows))])

    def project(self, name: str, flat: torch.Tensor) -> torch.Tensor:
        """(batch, D_name) -> (batch, dim)."""
        out = torch.zeros(flat.shape[0], self.dim, dtype=torch.float32, device=flat.device)
        for k, start in enumerate(range(0, flat.shape[1], self.chunk_rows)):
            part = flat[:, start:start + self.chunk_rows]
            out += part @ self._chunk(name, k, part.shape[1], flat.device)
        return out


def project_batch(dm: DynamicsModel, layers: Sequence[LoraLayer], batch: Sequence[Encoded],
                  proj: RademacherProjection, ckpt: Checkpoint | None) -> torch.Tensor:
    """(batch, dim): P Gamma(g) per sample (plain P g when `ckpt` is None)."""
    cap = capture(dm.model, layers, batch, dm.pad_id)
    out = torch.zeros(len(batch), proj.dim)
    for layer in layers:
        grad = per_sample_grad(*cap.pop(layer.name))
        if ckpt is not None:
            m, v = (s[layer.name].to(grad.device) for s in (ckpt.exp_avg, ckpt.exp_avg_sq))
            grad = adam_direction(grad, m, v, ckpt.betas, ckpt.eps)
        out += proj.project(layer.name, grad.flatten(1)).cpu()
        del grad
    return out


def less_targets(dm: DynamicsModel, anchor: Samples, checkpoints: Sequence[Checkpoint],
                 proj: RademacherProjection, modules: Sequence[str] = ()) -> list[torch.Tensor]:
    """t_c for every checkpoint: the mean of the anchor samples' normalised projected gradients."""
    layers = lora_layers(dm.model, modules)
    enc = encode_set(dm, anchor)
    encoded, keys = enc.items, enc.keys
    targets = []
    for ckpt in checkpoints:
        apply_checkpoint(dm.model, ckpt)
        total, count = torch.zeros(proj.dim, dtype=torch.float64), 0
        for idx in progress_bar(list(batches(encoded, keys, dm.batch_size)), "LESS anchor"):
            pg = project_batch(dm, layers, [encoded[i] for i in idx], proj, None).double()
            total += (pg / pg.norm(dim=1, keepdim=True).clamp_min(1e-300)).sum(dim=0)
            count += len(idx)
        if count == 0:
            raise ValueError("no anchor sample has a response token to score")
        targets.append(total / count)
    return targets


def less_scores(dm: DynamicsModel, samples: Samples, checkpoints: Sequence[Checkpoint],
                targets: Sequence[torch.Tensor], proj: RademacherProjection,
                modules: Sequence[str] = ()) -> list[float]:
    """S(z) for every sample, same order; failed() for a sample with no response token."""
    layers = lora_layers(dm.model, modules)
    enc = encode_set(dm, samples)
    encoded, keys = enc.items, enc.keys
    totals = torch.zeros(len(samples), dtype=torch.float64)
    for ckpt, target in zip(checkpoints, targets, strict=True):
        apply_checkpoint(dm.model, ckpt)
        for idx in progress_bar(list(batches(encoded, keys, dm.batch_size)), f"LESS step {ckpt.step}"):
            pg = project_batch(dm, layers, [encoded[i] for i in idx], proj, ckpt).double()
            cos = (pg @ target) / pg.norm(dim=1).clamp_min(1e-300)
            totals[idx] += ckpt.lr_mean * cos / len(checkpoints)
    return [failed("no response token to score") if e is None else float(totals[i]) for i, e in enumerate(encoded)]
