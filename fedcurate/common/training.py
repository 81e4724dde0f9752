"""Full-parameter fine-tuning of a causal LM on instruction samples, as one readable function.

    losses = train_causal_lm(model, tok, samples, template="alpaca", max_length=128, epochs=3,
                             batch_size=16, learning_rate=3e-3, seed=0)

Used to make a reference model (e.g. the demo pretrains the tiny model on a clean anchor set).
The loss is on the response tokens only (labels from `encode_example`); AdamW with a linear
warm-up then linear decay to zero; batches are drawn from a seeded shuffle, reshuffled each epoch.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedcurate.common.data.sample import Sample
from fedcurate.common.models.templates import collate, encode_example

logger = logging.getLogger(__name__)

MAX_GRAD_NORM = 1.0  # clip the global gradient norm, as HF Trainer does by default


def train_causal_lm(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, samples: Sequence[Sample], *,
    template: str, max_length: int, epochs: float, batch_size: int, learning_rate: float, seed: int,
    weight_decay: float = 0.0, warmup_ratio: float = 0.05,
) -> list[float]:
    """Train `model` in place on `samples`; return the loss of every optimiser step.

    `epochs` may be fractional (0.5 = half the batches of one pass). Samples whose response is
    empty after truncation are skipped (and counted in the log). The model is left in eval mode.
    """
    encoded = [e for e in (encode_example(tokenizer, s, template, max_length) for s in samples)
               if e.response_len > 0]
    if len(encoded) < len(samples):
        logger.warning("skipped %d samples with an empty response", len(samples) - len(encoded))
    steps_per_epoch = math.ceil(len(encoded) / batch_size)
    total_steps = math.ceil(epochs * steps_per_epoch)
    if total_steps == 0:
        return []
    warmup_steps = math.ceil(warmup_ratio * total_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: linear_warmup_decay(step, warmup_steps, total_steps)
    )
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    order: list[int] = []
    losses: list[float] = []
    model.train()
    bar = tqdm(range(total_steps), desc="train", unit="step", disable=not sys.stderr.isatty())
    for _ in bar:
        if not order:  # a new epoch: a fresh seeded permutation (its last batch may be smaller)
            order = torch.randperm(len(encoded), generator=generator).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in idx], tokenizer.pad_token_id).items()}
        loss = model(**batch).loss  # mean over the batch's labelled (response) tokens
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    logger.info("trained %d steps; loss %.3f -> %.3f (mean of first/last 10)", total_steps,
                sum(losses[:10]) / len(losses[:10]), sum(losses[-10:]) / len(losses[-10:]))
    return losses


def linear_warmup_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: 0 -> 1 over `warmup_steps`, then 1 -> 0 linearly at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
