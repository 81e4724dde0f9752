"""DataInf (Kwon et al., ICLR 2024, "DataInf: Efficiently Estimating Data Influence in LoRA-tuned LLMs").

Closed-form influence of a training sample z on the anchor loss, block by block. A block l is one
adapted linear layer: the LoRA A and B of, e.g., `layers.3.self_attn.q_proj` together (the paper's
"layer" for LoRA). With the n training samples' gradients g_il, the mean anchor gradient v_l and

    lambda_l = scale * mean_i mean_j g_ilj^2                      (notes sec. 1.6; scale 0.1 as the reference)
    hvp_l    = 1/lambda_l * [ v_l - 1/n sum_i (<v_l, g_il> / (lambda_l + ||g_il||^2)) g_il ]
             ~ (G_l + lambda_l I)^-1 v_l, G_l the mean of g_il g_il^T (Sherman-Morrison per sample),
    IF(z)    = - sum_l <hvp_l, g_zl>.

A negative IF means up-weighting z lowers the anchor loss (z helps), so the score returned is
-IF = sum_l <hvp_l, g_zl>, higher is better. The model is the last checkpoint (the trained adapter),
as in the CLUES reference. hvp needs sums over the whole training set: two streaming passes (lambda,
then the Sherman-Morrison sum) with O(parameters) memory, no stored per-sample gradient; the sum's
per-sample weights c_il g_il are folded into the output gradients, so no per-sample gradient is built.
The score itself is then a plain inner product, computed from activations like CLUES' SGD variant.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import torch

from fedcurate.common.dynamics.checkpoints import Checkpoint, apply_checkpoint
from fedcurate.common.dynamics.clues import ScoreOptions, anchor_gradient, clues_scores
from fedcurate.common.dynamics.gradients import (
    BatchGrads,
    LoraLayer,
    capture,
    grad_sq_norm,
    inner_with,
    lora_layers,
    summed_grad,
)
from fedcurate.common.dynamics.scoring import DynamicsModel, Grads, Samples, batches, encode_set, progress_bar


def block_name(param_name: str) -> str:
    """`...q_proj.lora_A.default.weight` -> `...q_proj` (the adapted layer)."""
    return param_name.split(".lora_", 1)[0]


def _blocks(layers: Sequence[LoraLayer]) -> dict[str, list[LoraLayer]]:
    out: dict[str, list[LoraLayer]] = defaultdict(list)
    for layer in layers:
        out[block_name(layer.name)].append(layer)
    return dict(out)


def _block_stats(cap: BatchGrads, layers: Sequence[LoraLayer], target: Grads | None = None,
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per block, for each sample of a captured batch: ||g_il||^2, and <target_l, g_il> if a target is given."""
    sq: dict[str, torch.Tensor] = {}
    inner: dict[str, torch.Tensor] = {}
    for block, members in _blocks(layers).items():
        pairs = [(cap.inputs[m.name].float(), cap.out_grads[m.name].float(), m.name) for m in members]
        sq[block] = sum(grad_sq_norm(a, g) for a, g, _ in pairs)
        if target is not None:
            inner[block] = sum(inner_with(a, g, target[name]) for a, g, name in pairs)
    return sq, inner


def datainf_hvp(dm: DynamicsModel, train: Samples, ckpt: Checkpoint, lambda_scale: float,
                anchor: Samples, modules: Sequence[str] = ()) -> Grads:
    """hvp_l for every selected LoRA parameter, from the training set `train` at checkpoint `ckpt`."""
    layers = lora_layers(dm.model, modules)
    apply_checkpoint(dm.model, ckpt)
    v = anchor_gradient(dm, anchor, layers)
    enc = encode_set(dm, train)
    encoded, keys = enc.items, enc.keys
    order = list(batches(encoded, keys, dm.batch_size))
    sizes = {b: sum(m.module.weight.numel() for m in ms) for b, ms in _blocks(layers).items()}
    total_sq = dict.fromkeys(sizes, 0.0)
    n = 0
    for idx in progress_bar(order, "DataInf lambda"):
        sq, _ = _block_stats(capture(dm.model, layers, [encoded[i] for i in idx], dm.pad_id), layers)
        for b in sizes:
            total_sq[b] += float(sq[b].double().sum())
        n += len(idx)
    if n == 0:
        raise ValueError("DataInf: no training sample has a response token")
    lam = {b: lambda_scale * total_sq[b] / (n * sizes[b]) for b in sizes}
    acc = {m.name: torch.zeros_like(v[m.name]) for m in layers}
    for idx in progress_bar(order, "DataInf hvp"):
        cap = capture(dm.model, layers, [encoded[i] for i in idx], dm.pad_id)
        sq, inner = _block_stats(cap, layers, v)
        for b, members in _blocks(layers).items():
            coef = (inner[b] / (lam[b] + sq[b])).view(-1, 1, 1)  # c_il, per sample
            for m in members:
                a, g = cap.pop(m.name)
                acc[m.name] += summed_grad(a, g * coef)  # sum_i c_il g_il without building g_il
    return {m.name: (v[m.name] - acc[m.name] / n) / lam[block_name(m.name)] for m in layers}


def datainf_scores(dm: DynamicsModel, samples: Samples, ckpt: Checkpoint, hvp: Grads,
                   modules: Sequence[str] = ()) -> list[float]:
    """-IF(z) = sum_l <hvp_l, g_zl> for each sample (higher = more helpful); failed() if unscorable."""
    unit = replace(ckpt, lr_mean=1.0)  # a single model: no learning-rate weight
    return clues_scores(dm, samples, [unit], [hvp], ScoreOptions("sgd", "inner", tuple(modules)))
