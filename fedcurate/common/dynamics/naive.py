"""The straightforward CLUES computation, as the reference code does it: batch size 1, one backward pass per
sample, the gradient as one explicit vector, explicit Adam preconditioning, an explicit dot product.

It is the ground truth the fast path (clues.py) is tested against and the baseline of
`fedcurate bench dynamics`; it is not meant for real data (slow, and no batching).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fedcurate.common.dynamics.checkpoints import Checkpoint, apply_checkpoint
from fedcurate.common.dynamics.clues import DEFAULT_OPTIONS, ScoreOptions
from fedcurate.common.dynamics.gradients import lora_layers, sample_losses
from fedcurate.common.dynamics.scoring import DynamicsModel, Samples, encode_set
from fedcurate.common.failures import failed
from fedcurate.common.models.templates import Encoded


def flat_gradient(dm: DynamicsModel, enc: Encoded, names: Sequence[str]) -> torch.Tensor:
    """One sample's loss gradient over the named parameters, concatenated in `names` order."""
    params = dict(dm.model.named_parameters())
    dm.model.zero_grad(set_to_none=True)
    device = params[names[0]].device
    ids = torch.tensor([enc.input_ids], device=device)
    labels = torch.tensor([enc.labels], device=device)
    loss = sample_losses(dm.model(input_ids=ids).logits, labels)[0]
    loss.backward()
    flat = torch.cat([params[n].grad.detach().float().flatten() for n in names])
    dm.model.zero_grad(set_to_none=True)
    return flat


def precondition(g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, betas: tuple[float, float],
                 eps: float) -> torch.Tensor:
    """m' / sqrt(v' + eps) with m' = b1 m + (1 - b1) g, v' = b2 v + (1 - b2) g^2."""
    b1, b2 = betas
    return (b1 * m + (1 - b1) * g) / torch.sqrt(b2 * v + (1 - b2) * g * g + eps)


def naive_scores(dm: DynamicsModel, samples: Samples, anchor: Samples,
                 checkpoints: Sequence[Checkpoint], options: ScoreOptions = DEFAULT_OPTIONS) -> list[float]:
    """CLUES scores by the batch-size-1 loop; same definition and output as `clues_scores`."""
    names = [layer.name for layer in lora_layers(dm.model, options.modules)]
    encoded = encode_set(dm, samples).items
    anchor_enc = [e for e in encode_set(dm, anchor).items if e is not None]
    totals = [0.0] * len(samples)
    for ckpt in checkpoints:
        apply_checkpoint(dm.model, ckpt)
        gbar = sum(flat_gradient(dm, e, names) for e in anchor_enc) / len(anchor_enc)
        m = torch.cat([ckpt.exp_avg[n].flatten() for n in names]).to(gbar.device)
        v = torch.cat([ckpt.exp_avg_sq[n].flatten() for n in names]).to(gbar.device)
        for i, enc in enumerate(encoded):
            if enc is None:
                continue
            g = flat_gradient(dm, enc, names)
            if options.preconditioning == "adam":
                g = precondition(g, m, v, ckpt.betas, ckpt.eps)
            value = float(g @ gbar)
            if options.similarity == "cosine":
                value /= float(g.norm() * gbar.norm())
            totals[i] += ckpt.lr_mean * value / len(checkpoints)
    return [failed("no response token to score") if e is None else totals[i] for i, e in enumerate(encoded)]


def max_relative_error(fast: Sequence[float], reference: Sequence[float]) -> float:
    """max_i |fast_i - ref_i| / max_i |ref_i| over valid entries (NaN positions must agree)."""
    pairs = [(f, r) for f, r in zip(fast, reference, strict=True) if not (math.isnan(f) and math.isnan(r))]
    scale = max(abs(r) for _, r in pairs)
    return max(abs(f - r) for f, r in pairs) / scale
