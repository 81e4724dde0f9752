"""LoRA fine-tuning of a causal LM with evenly spaced, resumable checkpoints (as CLUES scoring needs).

    run = train_lora(model, tok, samples, cfg.training, Path("runs/x/dynamics"), template="alpaca",
                     max_length=512)
    run.checkpoints        # [.../checkpoint-65, .../checkpoint-130, ...]: adapter + Adam state + LRs
    run.losses, run.learning_rates   # one per optimiser step

One readable loop: peft LoRA on `target_modules`, loss = mean NLL over the micro-batch's response tokens,
AdamW on the LoRA parameters only, linear warm-up then linear / cosine / constant, gradient clipping at
1.0 (the HF Trainer default), gradient accumulation. `accelerate` runs it on one CPU, one GPU or several
GPUs (launch with `accelerate launch`; each process takes every world-size-th micro-batch); with
`mixed_precision` bf16/fp16 the base model may be bf16/fp16 while peft keeps the adapter in fp32.
Note that accelerate allows one mixed-precision setting per process.

Batches come from a seeded permutation per epoch, a pure function of (seed, epoch), so a run that finds
checkpoints of the same plan and data in `out_dir` continues after the last one and ends exactly where
an uninterrupted run would (the CPU RNG, used by LoRA dropout, is restored too). Checkpoints of another
plan or other data in `out_dir` are an error, never silently mixed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from peft import LoraConfig, TaskType, get_peft_model
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedcurate.common.config import TrainingConfig
from fedcurate.common.data.sample import Sample
from fedcurate.common.dynamics.checkpoints import (
    list_checkpoints,
    load_state,
    lora_parameters,
    read_info,
    save_checkpoint,
)
from fedcurate.common.dynamics.gradients import response_logits, token_nll
from fedcurate.common.models.templates import Encoded, collate, encode_example
from fedcurate.common.training import MAX_GRAD_NORM, linear_warmup_decay

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainPlan:
    """How many optimiser steps a run makes and after which ones it saves a checkpoint."""

    num_samples: int
    micro_batches_per_epoch: int
    total_steps: int
    checkpoint_steps: list[int]
    world_size: int = 1


@dataclass
class LoraRun:
    """The outcome of `train_lora`: checkpoint directories, per-step logs, the trained PeftModel."""

    checkpoints: list[Path]
    losses: list[float]
    learning_rates: list[float]
    model: Any = field(repr=False, default=None)


def plan_training(num_samples: int, cfg: TrainingConfig, world_size: int = 1) -> TrainPlan:
    """Steps = max_steps, else ceil(epochs * micro-batches / (accumulation * world)); C checkpoints evenly."""
    per_epoch = math.ceil(num_samples / cfg.batch_size)
    total = cfg.max_steps or math.ceil(cfg.epochs * per_epoch / (cfg.gradient_accumulation * world_size))
    steps = sorted({round(k * total / cfg.checkpoints) for k in range(1, cfg.checkpoints + 1)} - {0})
    if total and len(steps) < cfg.checkpoints:
        logger.warning("only %d optimiser steps: %d checkpoints instead of %d", total, len(steps), cfg.checkpoints)
    return TrainPlan(num_samples, per_epoch, total, steps, world_size)


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, scheduler: str) -> float:
    """Learning-rate multiplier of 0-based optimiser step `step`: warm-up, then the chosen decay."""
    if scheduler == "linear" or step < warmup_steps:
        return linear_warmup_decay(step, warmup_steps, total_steps)
    if scheduler == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if scheduler == "constant":
        return 1.0
    raise ValueError(f"training.scheduler = {scheduler!r}: allowed values are 'linear', 'cosine', 'constant'")


def lora_config(cfg: TrainingConfig) -> LoraConfig:
    """The peft LoRA settings of [training]."""
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), task_type=TaskType.CAUSAL_LM)


def micro_batch(plan: TrainPlan, seed: int, index: int, batch_size: int) -> list[int]:
    """Sample indices of global micro-batch `index`; epoch e uses the permutation seeded by (seed, e)."""
    epoch, pos = divmod(index, plan.micro_batches_per_epoch)
    order = _permutation(plan.num_samples, seed, epoch)
    return list(order[pos * batch_size:(pos + 1) * batch_size])


@functools.lru_cache(maxsize=2)  # a run reads one epoch's order at a time
def _permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    return tuple(np.random.default_rng([seed, epoch]).permutation(n).tolist())


def train_lora(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, samples: Sequence[Sample],
               cfg: TrainingConfig, out_dir: Path, *, template: str, max_length: int) -> LoraRun:
    """Wrap `model` (modified in place) with a LoRA adapter, train it, save checkpoints under `out_dir`."""
    encoded = [e for e in (encode_example(tokenizer, s, template, max_length) for s in samples) if e.response_len]
    if not encoded:
        raise ValueError("no sample with a non-empty response to train on")
    if len(encoded) < len(samples):
        logger.warning("skipped %d samples with an empty response", len(samples) - len(encoded))
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision,
                              cpu=next(model.parameters()).device.type == "cpu")
    plan = plan_training(len(encoded), cfg, accelerator.num_processes)
    fingerprint = _fingerprint(encoded, cfg, plan, model)
    torch.manual_seed(cfg.seed)  # LoRA A's initialisation, then dropout
    peft_model = get_peft_model(model, lora_config(cfg))
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    wrapped, wrapped_opt = accelerator.prepare(peft_model, optimizer)
    start, losses, lrs = _resume(Path(out_dir), peft_model, optimizer, plan, fingerprint)
    warmup = math.ceil(cfg.warmup_ratio * plan.total_steps)
    pad_id = tokenizer.pad_token_id
    wrapped.train()
    bar = tqdm(range(start, plan.total_steps), desc="train LoRA", unit="step",
               disable=not sys.stderr.isatty() or not accelerator.is_main_process)
    for step in bar:
        lr = cfg.learning_rate * lr_multiplier(step, warmup, plan.total_steps, cfg.scheduler)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = 0.0
        for j in range(cfg.gradient_accumulation):
            index = (step * cfg.gradient_accumulation + j) * plan.world_size + accelerator.process_index
            batch = collate([encoded[i] for i in micro_batch(plan, cfg.seed, index, cfg.batch_size)], pad_id)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            last = j == cfg.gradient_accumulation - 1
            with accelerator.no_sync(wrapped) if not last else nullcontext(), accelerator.autocast():
                nll, mask = token_nll(*response_logits(wrapped, batch))
                loss = nll.sum() / mask.sum()  # mean over this micro-batch's response tokens
                accelerator.backward(loss / cfg.gradient_accumulation)
            step_loss += loss.item() / cfg.gradient_accumulation
        accelerator.clip_grad_norm_(params, MAX_GRAD_NORM)
        wrapped_opt.step()
        wrapped_opt.zero_grad(set_to_none=True)
        losses.append(step_loss)
        lrs.append(lr)
        bar.set_postfix(loss=f"{step_loss:.3f}")
        if step + 1 in plan.checkpoint_steps:
            _checkpoint(accelerator, Path(out_dir), step + 1, peft_model, optimizer, tokenizer,
                        plan, fingerprint, losses, lrs)
    peft_model.eval()
    checkpoints = [p for p in list_checkpoints(Path(out_dir)) if read_info(p)["step"] in plan.checkpoint_steps]
    if losses:
        logger.info("LoRA: %d steps, loss %.3f -> %.3f, %d checkpoints in %s", len(losses), losses[0],
                    losses[-1], len(checkpoints), out_dir)
    return LoraRun(checkpoints, losses, lrs, peft_model)


def _checkpoint(accelerator: Accelerator, out_dir: Path, step: int, model: Any, optimizer: torch.optim.Optimizer,
                tokenizer: PreTrainedTokenizerBase, plan: TrainPlan, fingerprint: str, losses: list[float],
                lrs: list[float]) -> None:
    """Save on the main process: eta_c = mean LR of the steps since the previous checkpoint."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        previous = max([s for s in plan.checkpoint_steps if s < step], default=0)
        info = {"lr_mean": float(np.mean(lrs[previous:step])), "lr_steps": [previous + 1, step],
                "plan": asdict(plan), "fingerprint": fingerprint, "learning_rates": lrs, "losses": losses}
        path = save_checkpoint(out_dir, step, model, optimizer, tokenizer, info)
        logger.info("saved %s (eta_c %.3g)", path, info["lr_mean"])
    accelerator.wait_for_everyone()


def _resume(out_dir: Path, model: Any, optimizer: torch.optim.Optimizer, plan: TrainPlan,
            fingerprint: str) -> tuple[int, list[float], list[float]]:
    """Load the last checkpoint of this plan and data: (next step, loss log, LR log); else start at 0."""
    found = list_checkpoints(out_dir)
    if not found:
        return 0, [], []
    info = read_info(found[-1])
    if info.get("fingerprint") != fingerprint or info["step"] not in plan.checkpoint_steps:
        raise ValueError(f"{out_dir} holds checkpoints of another run (other data, model or [training] "
                         f"settings); remove it or choose another directory")
    state = load_state(found[-1])
    step = int(info["step"])
    with torch.no_grad():
        for name, param in lora_parameters(model).items():
            param.copy_(state[f"weight/{name}"])
            optimizer.state[param] = {
                "step": torch.tensor(float(step)),
                "exp_avg": state[f"exp_avg/{name}"].to(param.device, param.dtype),
                "exp_avg_sq": state[f"exp_avg_sq/{name}"].to(param.device, param.dtype)}
    torch.set_rng_state(state["rng/cpu"])
    if "rng/cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["rng/cuda"])
    logger.info("resuming LoRA training after step %d of %d from %s", step, plan.total_steps, found[-1])
    return step, list(info["losses"]), list(info["learning_rates"])


def _fingerprint(encoded: Sequence[Encoded], cfg: TrainingConfig, plan: TrainPlan, model: PreTrainedModel) -> str:
    """Hash of the training data, settings and base model identity (name and first weights)."""
    h = hashlib.sha256()
    h.update(json.dumps([asdict(cfg), asdict(plan), str(getattr(model.config, "_name_or_path", ""))],
                        sort_keys=True).encode())
    for e in encoded:
        h.update(np.asarray(e.input_ids, dtype=np.int64).tobytes())
        h.update(np.asarray(e.labels, dtype=np.int64).tobytes())
    first = next(model.parameters()).detach().flatten()[:1024].float().cpu().numpy()
    h.update(first.tobytes())
    return h.hexdigest()
