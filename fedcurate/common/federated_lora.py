"""Flower-free building blocks of federated LoRA rounds: a site's local update, FedAvg of states, checkpoints.

    state = initial_state(cfg)                      # train_lora's LoRA initialisation, zero Adam moments
    upd = local_update(cfg, site_samples, state, start_step=0, steps=10, total_steps=30, seed=cfg.training.seed)
    state = average_states([u.state for u in updates], [u.num_examples for u in updates])
    path = write_checkpoint(root, 10, state, cfg, lr_mean=upd.lr_mean)   # root/checkpoint-10, as CLUES reads it
    write_adapter(run_dir / "adapter", state, cfg)  # load_model_and_tokenizer(str(dir)) gives base + adapter

A `State` maps the keys of a checkpoint's state.safetensors -- `weight/<name>`, `exp_avg/<name>`,
`exp_avg_sq/<name>`, <name> being the LoRA parameter's name in the PeftModel -- to float32 numpy arrays.

`local_update` continues one global optimiser count: global step g uses the learning rate of g in a
schedule of `total_steps` steps, Adam's bias correction counts from `start_step`, and the micro-batches of
step g are `lora_training.micro_batch` number g * accumulation + j of the site's data (a permutation per
epoch seeded by (seed, epoch)). So two calls of 3 steps, the second fed the first's state, equal one call of
6 steps, and with seed = training.seed, no LoRA dropout and the same samples, `train_lora` for 6 steps.
Dropout masks are drawn from the torch RNG seeded by (seed, start_step). The base model (wrapped with the
LoRA layers) is loaded once per process and configuration; every call first resets the LoRA weights.

Averaging: "weight/" keys go through the LoRA FedAvg maths of `strategies.merging.aggregate_lora` (exact
None = FedIT, A and B averaged separately; "svd" = the mean product re-factored; "stack" is refused, the
moments need fixed shapes), computed by `merge_adapters`; Adam moments are plain weighted means. After
"svd" the factors live in a new basis, so their averaged moments are only an approximation.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import get_peft_model
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from fedcurate.common import io
from fedcurate.common.config import Config
from fedcurate.common.data.sample import Sample
from fedcurate.common.dynamics.checkpoints import INFO_FILE, STATE_FILE, lora_parameters
from fedcurate.common.dynamics.gradients import response_logits, token_nll
from fedcurate.common.lora_training import TrainPlan, lora_config, lr_multiplier, micro_batch
from fedcurate.common.models.loading import load_model_and_tokenizer, resolve_device
from fedcurate.common.models.templates import Encoded, collate, encode_example
from fedcurate.common.training import MAX_GRAD_NORM
from fedcurate.strategies.merging import merge_adapters, normalized

logger = logging.getLogger(__name__)

State = dict[str, np.ndarray]
PARTS = ("weight", "exp_avg", "exp_avg_sq")
MOMENTS = ("exp_avg", "exp_avg_sq")
ADAM_BETAS = (0.9, 0.999)  # torch.optim.AdamW's defaults, written to checkpoint.json for scoring
ADAM_EPS = 1e-8
_EXACT_METHODS = {None: "linear", "svd": "svd"}  # as aggregate_lora; "stack" grows the rank, moments cannot follow
_CACHE: dict[tuple[Any, ...], tuple[Any, Any]] = {}  # at most one (PeftModel, tokenizer): models can be large


@dataclass(frozen=True)
class LocalUpdate:
    """What a site's local training returns."""

    state: State  # weights + Adam moments after local training
    num_examples: int  # samples with a non-empty response that were trained on
    losses: list[float]  # per optimiser step
    lr_mean: float  # mean learning rate over these steps (TracIn-CP eta)


def initial_state(cfg: Config) -> State:
    """The LoRA initialisation of `train_lora` (A seeded by training.seed, B = 0) with zero Adam moments."""
    model, _ = _fresh_model(cfg)
    return _state_of(lora_parameters(model), None)


def local_update(cfg: Config, samples: Sequence[Sample], state: State, *, start_step: int, steps: int,
                 total_steps: int, seed: int) -> LocalUpdate:
    """Train `steps` optimiser steps (global steps start_step .. start_step + steps - 1) from `state`."""
    if start_step < 0 or steps < 1 or start_step + steps > total_steps:
        raise ValueError(f"local_update: need 0 <= start_step and 1 <= steps with start_step + steps <= "
                         f"total_steps, got start_step={start_step}, steps={steps}, total_steps={total_steps}")
    t = cfg.training
    model, tokenizer = _model(cfg)
    encoded = _encode(tokenizer, samples, cfg)
    params = _load_weights(model, state, PARTS)
    optimizer = torch.optim.AdamW(list(params.values()), lr=t.learning_rate, betas=ADAM_BETAS, eps=ADAM_EPS,
                                  weight_decay=t.weight_decay)
    with torch.no_grad():
        for name, param in params.items():  # copies: Adam updates its state in place, `state` stays as given
            optimizer.state[param] = {"step": torch.tensor(float(start_step)), **{
                k: torch.tensor(np.asarray(state[f"{k}/{name}"]), dtype=param.dtype, device=param.device)
                for k in MOMENTS}}
    plan = TrainPlan(len(encoded), math.ceil(len(encoded) / t.batch_size), total_steps, [])
    losses, lrs = _train(model, optimizer, encoded, plan, cfg, tokenizer.pad_token_id,
                         range(start_step, start_step + steps), seed)
    logger.info("local update: steps %d..%d of %d on %d examples, loss %.3f -> %.3f", start_step + 1,
                start_step + steps, total_steps, len(encoded), losses[0], losses[-1])
    return LocalUpdate(_state_of(params, optimizer), len(encoded), losses, float(np.mean(lrs)))


def _train(model: Any, optimizer: torch.optim.Optimizer, encoded: list[Encoded], plan: TrainPlan, cfg: Config,
           pad_id: int, steps: range, seed: int) -> tuple[list[float], list[float]]:
    """The loop of `train_lora` (response-token mean NLL, accumulation, clipping) over global `steps`."""
    t = cfg.training
    params = [p for group in optimizer.param_groups for p in group["params"]]
    device = params[0].device
    warmup = math.ceil(t.warmup_ratio * plan.total_steps)
    autocast, scaler = _precision(t.mixed_precision, device)
    torch.manual_seed(int(np.random.SeedSequence([seed, steps.start]).generate_state(1)[0]))  # dropout masks
    losses: list[float] = []
    lrs: list[float] = []
    model.train()
    try:
        for step in tqdm(steps, desc="local LoRA", unit="step", disable=not sys.stderr.isatty()):
            lr = t.learning_rate * lr_multiplier(step, warmup, plan.total_steps, t.scheduler)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_loss = 0.0
            for j in range(t.gradient_accumulation):
                rows = micro_batch(plan, seed, step * t.gradient_accumulation + j, t.batch_size)
                batch = {k: v.to(device) for k, v in collate([encoded[i] for i in rows], pad_id).items()}
                with autocast:
                    nll, mask = token_nll(*response_logits(model, batch))
                    loss = nll.sum() / mask.sum()  # mean over this micro-batch's response tokens
                scaler.scale(loss / t.gradient_accumulation).backward()
                step_loss += loss.item() / t.gradient_accumulation
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            lrs.append(lr)
    finally:
        model.eval()
    return losses, lrs


def _precision(mixed_precision: str, device: torch.device) -> tuple[Any, torch.amp.GradScaler]:
    """Autocast context and gradient scaler for training.mixed-precision (the scaler acts only for fp16)."""
    if mixed_precision == "no":
        return nullcontext(), torch.amp.GradScaler(device.type, enabled=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]
    return (torch.autocast(device.type, dtype=dtype),
            torch.amp.GradScaler(device.type, enabled=mixed_precision == "fp16"))


def average_states(states: Sequence[State], weights: Sequence[float], exact: str | None = None) -> State:
    """FedAvg weighted by `weights` (rescaled to sum 1): LoRA maths for weights, plain mean for moments."""
    if exact not in _EXACT_METHODS:
        raise ValueError(f"exact = {exact!r}: average_states supports {list(_EXACT_METHODS)} (the rank must stay "
                         f"fixed for the Adam moments to keep their shapes)")
    if not states:
        raise ValueError("average_states: no states to average")
    _check_alike(states)
    w = normalized(weights, len(states))
    keys = list(states[0])
    lora_keys = [k for k in keys if k.startswith("weight/")]
    plain = [{k.split("/", 1)[1]: np.asarray(s[k], dtype=np.float32) for k in lora_keys} for s in states]
    merged = merge_adapters(plain, w, _EXACT_METHODS[exact]) if lora_keys else {}
    out = {f"weight/{k}": np.asarray(v, dtype=np.float32) for k, v in merged.items()}
    for key in keys:
        if key not in out:
            mean = sum(wi * np.asarray(s[key], dtype=np.float64) for wi, s in zip(w, states, strict=True))
            out[key] = np.asarray(mean, dtype=np.float32)
    return {k: out[k] for k in keys}


def _check_alike(states: Sequence[State]) -> None:
    first = states[0]
    for i, s in enumerate(states[1:], start=1):
        differ = sorted(set(first) ^ set(s))
        if differ:
            raise ValueError(f"state {i} and state 0 differ in key {differ[0]!r} (present in only one of them)")
        for key in first:
            if np.shape(s[key]) != np.shape(first[key]):
                raise ValueError(f"state {i}: {key!r} has shape {np.shape(s[key])}, state 0 has "
                                 f"{np.shape(first[key])}")


def write_checkpoint(root: Path, step: int, state: State, cfg: Config, *, lr_mean: float,
                     info: dict[str, Any] | None = None) -> Path:
    """`root/checkpoint-<step>`, atomically: a peft adapter dir (+ tokenizer) with state.safetensors and
    checkpoint.json, readable by `dynamics.checkpoints.load_checkpoint`. `info` joins checkpoint.json."""
    if step < 0:
        raise ValueError(f"write_checkpoint: step = {step}, must be >= 0")
    model, tokenizer = _model(cfg)
    _load_weights(model, state, PARTS)
    tensors = {k: np.ascontiguousarray(state[k], dtype=np.float32) for k in sorted(state)}
    meta = {**(info or {}), "step": int(step), "lr_mean": float(lr_mean), "betas": list(ADAM_BETAS),
            "eps": ADAM_EPS, "weight_decay": cfg.training.weight_decay}

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_file(tensors, str(tmp / STATE_FILE))
        io.write_json(tmp / INFO_FILE, meta)

    return io.write_dir(Path(root) / f"checkpoint-{step}", fill)


def read_state(checkpoint_dir: Path) -> State:
    """state.safetensors of a checkpoint directory (this module's or train_lora's), weight and moments only."""
    path = Path(checkpoint_dir) / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {checkpoint_dir} is not a checkpoint directory")
    return {k: v.astype(np.float32, copy=False) for k, v in load_file(str(path)).items()
            if k.split("/", 1)[0] in PARTS}


def write_adapter(out_dir: Path, state: State, cfg: Config) -> Path:
    """A peft adapter directory (+ tokenizer files) with the state's weights, written atomically."""
    model, tokenizer = _model(cfg)
    _load_weights(model, state, ("weight",))

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return io.write_dir(Path(out_dir), fill)


def clear_model_cache() -> None:
    """Forget the LoRA-wrapped base model kept between calls."""
    _CACHE.clear()


def _cache_key(cfg: Config) -> tuple[Any, ...]:
    m, t = cfg.model, cfg.training
    return (m.name_or_path, m.dtype, resolve_device(m.device), t.lora_r, t.lora_alpha, t.lora_dropout,
            tuple(t.target_modules))


def _model(cfg: Config) -> tuple[Any, Any]:
    """The cached LoRA-wrapped base model and tokenizer of `cfg` (built on first use)."""
    key = _cache_key(cfg)
    return _CACHE[key] if key in _CACHE else _fresh_model(cfg)


def _fresh_model(cfg: Config) -> tuple[Any, Any]:
    """Load the base model and wrap it with LoRA exactly as train_lora does; it becomes the cached one."""
    m = cfg.model
    _CACHE.clear()  # free the previous model before loading another
    base, tokenizer = load_model_and_tokenizer(m.name_or_path, dtype=m.dtype, device=m.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.training.seed)  # LoRA A's initialisation, as in train_lora
        model = get_peft_model(base, lora_config(cfg.training))
    model.peft_config["default"].base_model_name_or_path = _base_name(m.name_or_path)
    model.eval()
    _CACHE[_cache_key(cfg)] = (model, tokenizer)
    return model, tokenizer


def _base_name(name_or_path: str) -> str:
    """What adapter_config.json names as base: 'tiny' and hub ids as given, local directories absolute."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if name_or_path != "tiny" and path.is_dir() else name_or_path


def _encode(tokenizer: Any, samples: Sequence[Sample], cfg: Config) -> list[Encoded]:
    m = cfg.model
    encoded = [e for e in (encode_example(tokenizer, s, m.template, m.max_length) for s in samples) if e.response_len]
    if not encoded:
        raise ValueError(f"local_update: none of the {len(samples)} samples has a response token to train on "
                         f"(empty responses, or prompts filling model.max_length = {m.max_length})")
    if len(encoded) < len(samples):
        logger.warning("skipped %d samples with an empty response", len(samples) - len(encoded))
    return encoded


def _load_weights(model: Any, state: Mapping[str, np.ndarray], parts: Sequence[str]) -> dict[str, Any]:
    """Copy the state's LoRA weights into `model`, after checking it has `parts` of every LoRA parameter."""
    params = lora_parameters(model)
    wanted = {f"{p}/{n}": tuple(param.shape) for n, param in params.items() for p in parts}
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ValueError(f"state lacks {len(missing)} key(s) of the model's LoRA parameters, e.g. {missing[0]!r} "
                         f"(other [training] target-modules or rank, or another base model?)")
    for key, shape in wanted.items():
        if np.shape(state[key]) != shape:
            raise ValueError(f"state[{key!r}] has shape {np.shape(state[key])}, the model's parameter {shape}")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(torch.tensor(np.asarray(state[f"weight/{name}"]), dtype=param.dtype, device=param.device))
    return params


def _state_of(params: Mapping[str, Any], optimizer: torch.optim.Optimizer | None) -> State:
    """Copies of the LoRA weights and their Adam moments (zeros where the optimiser has none)."""
    out: State = {}
    for name, param in params.items():
        weight = param.detach().float().cpu().numpy().copy()
        out[f"weight/{name}"] = weight
        found = optimizer.state.get(param, {}) if optimizer is not None else {}
        for key in MOMENTS:
            value = found.get(key)
            out[f"{key}/{name}"] = (np.zeros_like(weight) if value is None
                                    else value.detach().float().cpu().numpy().copy())
    return out
