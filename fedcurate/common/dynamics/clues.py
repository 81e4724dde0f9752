"""CLUES quality scores (Zhao et al., NeurIPS 2024): TracIn-CP with Adam preconditioning against an anchor set.

    S(z) = 1/C * sum_c eta_c * < Gamma_c(grad l(theta_c, z)), gbar_c >,    gbar_c = mean_{a in anchor} grad l(theta_c, a)

with Gamma_c(g) = m'/sqrt(v' + eps), m' = b1 m_c + (1 - b1) g, v' = b2 v_c + (1 - b2) g^2 from checkpoint c's
Adam state (`preconditioning="adam"`, the reference's `noproj_adam`), or Gamma = identity (`"sgd"`);
`similarity="cosine"` uses <Gamma(g), gbar> / (||Gamma(g)|| ||gbar||) instead (LESS-style); eta_c is the
mean learning rate since the previous checkpoint; the anchor gradients are always plain (as in the
reference). Only LoRA parameters whose name contains one of `modules` take part (all if empty).
A sample's loss is its mean response-token NLL. AdamW's decoupled weight decay is left out of Gamma:
it adds the same constant to every sample's score, so it changes neither rankings nor the threshold test.

Fast and exact: samples go through in batches (longest first, ties by id, so a sample's batch does not
depend on the order it was given in); the SGD variant takes inner products and norms from activations
and output gradients (gradients.py), the Adam variant builds one layer's per-sample gradients for one
batch at a time, preconditions, reduces and frees them. Memory does not grow with the number of samples.

Threshold rule (CLUES; predecessor paper sec. 3.3): tau = mean score of the anchor samples on the same
checkpoints (`anchor_threshold(score_anchor(...))`); samples with S >= tau are kept. The reference scores
its anchor files against a separate validation set; here the anchor set is both, so each anchor sample
is scored against the mean gradient of the others (leave-one-out, exact: gbar_-a = (n gbar - g_a)/(n-1)).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedcurate.common.dynamics.checkpoints import Checkpoint, apply_checkpoint
from fedcurate.common.dynamics.gradients import (
    LoraLayer,
    adam_direction,
    capture,
    grad_sq_norm,
    inner_with,
    lora_layers,
    per_sample_grad,
    summed_grad,
)
from fedcurate.common.dynamics.scoring import (
    DynamicsModel,
    Grads,
    Samples,
    batches,
    encode_set,
    progress_bar,
)
from fedcurate.common.failures import failed
from fedcurate.common.models.templates import Encoded

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreOptions:
    """[dynamics] choices: preconditioning adam|sgd, similarity inner|cosine, module filter."""

    preconditioning: str = "adam"
    similarity: str = "inner"
    modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.preconditioning not in ("adam", "sgd"):
            raise ValueError(f"preconditioning = {self.preconditioning!r}: allowed 'adam', 'sgd'")
        if self.similarity not in ("inner", "cosine"):
            raise ValueError(f"similarity = {self.similarity!r}: allowed 'inner', 'cosine'")


DEFAULT_OPTIONS = ScoreOptions()


def anchor_gradient(dm: DynamicsModel, anchor: Samples, layers: Sequence[LoraLayer]) -> Grads:
    """Mean plain gradient of the anchor samples at the model's current weights, per selected layer."""
    enc = encode_set(dm, anchor)
    encoded, keys = enc.items, enc.keys
    total = {layer.name: torch.zeros_like(layer.module.weight, dtype=torch.float32) for layer in layers}
    count = 0
    for idx in progress_bar(list(batches(encoded, keys, dm.batch_size)), "anchor gradient"):
        cap = capture(dm.model, layers, [encoded[i] for i in idx], dm.pad_id)
        for layer in layers:
            total[layer.name] += summed_grad(*cap.pop(layer.name))
        count += len(idx)
    if count == 0:
        raise ValueError("no anchor sample has a response token to score")
    return {name: t / count for name, t in total.items()}


def anchor_gradients(dm: DynamicsModel, anchor: Samples, checkpoints: Sequence[Checkpoint],
                     modules: Sequence[str] = ()) -> list[Grads]:
    """gbar_c for every checkpoint (what a server computes and broadcasts)."""
    layers = lora_layers(dm.model, modules)
    anchor = encode_set(dm, anchor)
    out = []
    for ckpt in checkpoints:
        apply_checkpoint(dm.model, ckpt)
        out.append(anchor_gradient(dm, anchor, layers))
    return out


@dataclass(frozen=True)
class LayerState:
    """What one checkpoint contributes to a layer's score, on the model's device."""

    target: torch.Tensor
    exp_avg: torch.Tensor | None = None
    exp_avg_sq: torch.Tensor | None = None


def layer_states(layers: Sequence[LoraLayer], target: Grads, ckpt: Checkpoint,
                 options: ScoreOptions) -> dict[str, LayerState]:
    """The anchor gradient (and Adam moments) of every selected layer, moved to its device once."""
    missing = [layer.name for layer in layers if layer.name not in target]
    if missing:
        raise ValueError(f"the anchor gradient lacks selected LoRA parameters, e.g. {missing[:3]} "
                         f"(computed with another module filter?)")
    out = {}
    for layer in layers:
        device = layer.module.weight.device
        moments = ((ckpt.exp_avg[layer.name].to(device), ckpt.exp_avg_sq[layer.name].to(device))
                   if options.preconditioning == "adam" else (None, None))
        out[layer.name] = LayerState(target[layer.name].to(device), *moments)
    return out


@dataclass
class Terms:
    """Per-sample sums over the selected layers for one batch and checkpoint (float64, model device).

    inner = <Gamma(g), gbar>, sq_norm = ||Gamma(g)||^2 (cosine only); for leave-one-out anchor scores also
    self_inner = <Gamma(g), g>, plain_inner = <g, gbar> and plain_sq = ||g||^2.
    """

    inner: torch.Tensor
    sq_norm: torch.Tensor
    self_inner: torch.Tensor
    plain_inner: torch.Tensor
    plain_sq: torch.Tensor


def _dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x * y).flatten(1).sum(dim=1)


def batch_terms(dm: DynamicsModel, layers: Sequence[LoraLayer], batch: Sequence[Encoded],
                states: dict[str, LayerState], ckpt: Checkpoint, options: ScoreOptions,
                with_self: bool = False) -> Terms:
    """The score terms of one batch: from activations for SGD, from per-layer per-sample gradients for Adam."""
    cap = capture(dm.model, layers, batch, dm.pad_id)
    device = layers[0].module.weight.device
    t = Terms(*(torch.zeros(len(batch), dtype=torch.float64, device=device) for _ in range(5)))
    cosine = options.similarity == "cosine"
    for layer in layers:
        a, g = cap.pop(layer.name)
        state = states[layer.name]
        if options.preconditioning == "sgd" and not with_self:  # linear in g: no gradient is built
            t.inner += inner_with(a, g, state.target)
            if cosine:
                t.sq_norm += grad_sq_norm(a, g)
            continue
        grad = per_sample_grad(a, g)
        gamma = (grad if options.preconditioning == "sgd"
                 else adam_direction(grad, state.exp_avg, state.exp_avg_sq, ckpt.betas, ckpt.eps))
        t.inner += _dot(gamma, state.target)
        if cosine:
            t.sq_norm += _dot(gamma, gamma)
        if with_self:
            t.self_inner += _dot(gamma, grad)
            t.plain_inner += _dot(grad, state.target)
            t.plain_sq += _dot(grad, grad)
        del a, g, grad, gamma
    return t


def _score_set(dm: DynamicsModel, samples: Samples, checkpoints: Sequence[Checkpoint],
               anchor_grads: Sequence[Grads], options: ScoreOptions, leave_one_out: bool) -> list[float]:
    if len(checkpoints) != len(anchor_grads) or not checkpoints:
        raise ValueError(f"need one anchor gradient per checkpoint, got {len(anchor_grads)} for "
                         f"{len(checkpoints)} checkpoint(s)")
    layers = lora_layers(dm.model, options.modules)
    enc = encode_set(dm, samples)
    encoded, keys = enc.items, enc.keys
    n = sum(e is not None for e in encoded)  # leave-one-out: the samples are the anchor set of gbar
    if leave_one_out and n < 2:
        raise ValueError("leave-one-out anchor scores need at least 2 scorable anchor samples")
    totals = torch.zeros(len(samples), dtype=torch.float64)
    zero_norm = torch.zeros(len(samples), dtype=torch.bool)
    for ckpt, target in zip(checkpoints, anchor_grads, strict=True):
        apply_checkpoint(dm.model, ckpt)
        states = layer_states(layers, target, ckpt, options)
        target_sq = sum(float(st.target.double().square().sum()) for st in states.values())
        for idx in progress_bar(list(batches(encoded, keys, dm.batch_size)), f"CLUES step {ckpt.step}"):
            t = batch_terms(dm, layers, [encoded[i] for i in idx], states, ckpt, options, leave_one_out)
            inner, t_norm = t.inner.cpu(), torch.full((len(idx),), math.sqrt(target_sq), dtype=torch.float64)
            if leave_one_out:  # gbar_-a = (n gbar - g_a) / (n - 1)
                inner = (n * inner - t.self_inner.cpu()) / (n - 1)
                t_norm = ((n * n * target_sq - 2 * n * t.plain_inner.cpu() + t.plain_sq.cpu()).clamp_min(0)
                          .sqrt() / (n - 1))
            if options.similarity == "cosine":
                denom = t.sq_norm.cpu().sqrt() * t_norm
                zero_norm[idx] |= denom == 0
                inner = inner / denom.clamp_min(1e-300)
            totals[idx] += ckpt.lr_mean * inner / len(checkpoints)
        del states
    return [failed("no response token to score") if e is None
            else failed("zero gradient: cosine undefined") if bool(zero_norm[i])
            else float(totals[i]) for i, e in enumerate(encoded)]


def clues_scores(dm: DynamicsModel, samples: Samples, checkpoints: Sequence[Checkpoint],
                 anchor_grads: Sequence[Grads], options: ScoreOptions = DEFAULT_OPTIONS) -> list[float]:
    """S(z) of every sample, same order; `failed(reason)` for a sample with no response token."""
    return _score_set(dm, samples, checkpoints, anchor_grads, options, leave_one_out=False)


def score_anchor(dm: DynamicsModel, anchor: Samples, checkpoints: Sequence[Checkpoint],
                 anchor_grads: Sequence[Grads], options: ScoreOptions = DEFAULT_OPTIONS,
                 leave_one_out: bool = True) -> list[float]:
    """The anchor samples' own scores on the same checkpoints, for the threshold.

    `anchor` must be the set `anchor_grads` was computed from. With `leave_one_out` each sample is
    scored against the mean gradient of the other anchor samples: the anchor set doubles as the
    reference's validation set here, and a sample's own gradient in the mean would inflate its
    score (and tau) by about <Gamma(g_a), g_a> / n.
    """
    return _score_set(dm, anchor, checkpoints, anchor_grads, options, leave_one_out)


def anchor_threshold(anchor_scores: Sequence[float] | np.ndarray) -> float:
    """CLUES global threshold: tau = mean score of the public anchor set, scored on the same checkpoints
    and anchor gradients as the sites' samples (notes: clues_selectit.md §1.4). Scores that are not finite
    (NaN: a failure; +-inf) are skipped, with a warning."""
    s = np.asarray(anchor_scores, dtype=np.float64).ravel()
    finite = s[np.isfinite(s)]
    if finite.size == 0:
        raise ValueError(f"no finite anchor score among {s.size}; the CLUES threshold is undefined")
    if finite.size < s.size:
        logger.warning("CLUES threshold: %d of %d anchor scores are not finite and were skipped",
                       s.size - finite.size, s.size)
    return float(finite.mean())
