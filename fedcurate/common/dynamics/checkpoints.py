"""Training checkpoints for CLUES: the adapter, Adam's state keyed by parameter name, the learning rates.

    path = save_checkpoint(root, step, peft_model, optimizer, tokenizer, info)   # root/checkpoint-<step>
    ckpt = load_checkpoint(path)          # Checkpoint(step, lr_mean, adapter, exp_avg, exp_avg_sq, ...)
    apply_checkpoint(peft_model, ckpt)    # copy its LoRA weights into a model with the same adapter

A checkpoint directory holds:
    adapter_config.json, adapter_model.safetensors   the adapter (peft `save_pretrained`); with the
                                                     tokenizer files it loads as a model by itself
    state.safetensors   `weight/<name>`, `exp_avg/<name>`, `exp_avg_sq/<name>` for every LoRA parameter,
                        <name> being its name in the PeftModel (e.g. `...q_proj.lora_A.default.weight`),
                        and `rng/cpu` (`rng/cuda`) for an exact resume. Keys are names, never positions,
                        so the state cannot be matched to the wrong parameter (the reference code relies
                        on optimizer order equalling `named_parameters()` order).
    checkpoint.json     step, `lr_mean`, Adam's betas/eps, the per-step learning-rate and loss logs, the plan

`lr_mean` is the eta_c of TracIn-CP: the mean learning rate of the optimiser steps since the previous
checkpoint (steps prev+1 .. step). The reference instead averages the logged rate over roughly the
last epoch. A checkpoint directory is written under a temporary name and renamed into place, so
`checkpoint-<step>` is either complete or absent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fedcurate.common import io
from fedcurate.common.config import Config

INFO_FILE = "checkpoint.json"
# Anchor gradients computed elsewhere (the federated server) for these checkpoints: `<step>/<layer name>`.
ANCHOR_GRADS_FILE = "anchor-gradients.safetensors"
STATE_FILE = "state.safetensors"
_DIR_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    """What scoring needs from one checkpoint; tensors keyed by PeftModel parameter name, on CPU."""

    step: int
    lr_mean: float
    adapter: dict[str, torch.Tensor]
    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    path: Path | None = None


def checkpoints_dir(cfg: Config) -> Path:
    """Where a run's CLUES checkpoints live: `dynamics.checkpoints-dir`, else `<run.dir>/dynamics`."""
    explicit = cfg.dynamics.checkpoints_dir
    return Path(explicit) if explicit else Path(cfg.run.dir) / "dynamics"


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The LoRA factors (A and B) of a PeftModel, by name."""
    return {n: p for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n}


def save_checkpoint(root: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    tokenizer: Any, info: dict[str, Any]) -> Path:
    """Write `root/checkpoint-<step>` atomically; `info` (with `lr_mean`) goes to checkpoint.json."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"checkpoint-{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        save_file(_state_tensors(model, optimizer), tmp / STATE_FILE)
        group = optimizer.param_groups[0]
        io.write_json(tmp / INFO_FILE, {"step": step, "betas": list(group["betas"]), "eps": group["eps"],
                                        "weight_decay": group["weight_decay"], **info})
        if final.exists():  # an earlier write of the same step: replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _state_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, param in lora_parameters(model).items():
        state = optimizer.state.get(param, {})
        out[f"weight/{name}"] = param.detach().float().cpu().contiguous()
        for key in ("exp_avg", "exp_avg_sq"):
            value = state.get(key)
            out[f"{key}/{name}"] = (torch.zeros_like(out[f"weight/{name}"]) if value is None
                                    else value.detach().float().cpu().contiguous())
    out["rng/cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        out["rng/cuda"] = torch.cuda.get_rng_state()
    return out


def read_info(path: Path) -> dict[str, Any]:
    """checkpoint.json of a checkpoint directory."""
    return json.loads((Path(path) / INFO_FILE).read_text(encoding="utf-8"))


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """state.safetensors of a checkpoint directory, on CPU."""
    return load_file(str(Path(path) / STATE_FILE))


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`."""
    path = Path(path)
    if not (path / INFO_FILE).exists() or not (path / STATE_FILE).exists():
        raise FileNotFoundError(f"{path}: not a checkpoint (needs {INFO_FILE} and {STATE_FILE})")
    info, state = read_info(path), load_state(path)
    part = {k: {n.split("/", 1)[1]: t for n, t in state.items() if n.startswith(f"{k}/")}
            for k in ("weight", "exp_avg", "exp_avg_sq")}
    return Checkpoint(step=int(info["step"]), lr_mean=float(info["lr_mean"]), adapter=part["weight"],
                      exp_avg=part["exp_avg"], exp_avg_sq=part["exp_avg_sq"],
                      betas=(float(info["betas"][0]), float(info["betas"][1])), eps=float(info["eps"]), path=path)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint directories under `root`, by increasing step."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _DIR_RE.match(p.name))
             and (p / INFO_FILE).exists() and (p / STATE_FILE).exists()]
    return [p for _, p in sorted(found)]


def apply_checkpoint(model: nn.Module, ckpt: Checkpoint) -> None:
    """Copy the checkpoint's LoRA weights into `model`, matching by parameter name."""
    params = lora_parameters(model)
    missing = sorted(set(params) - set(ckpt.adapter))
    if missing:
        raise ValueError(f"checkpoint {ckpt.path or ckpt.step} lacks LoRA parameters of the model, "
                         f"e.g. {missing[:3]} (different target modules or adapter name?)")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(ckpt.adapter[name].to(param.device, param.dtype))


def save_anchor_gradients(root: Path, steps: list[int], grads: list[dict[str, torch.Tensor]]) -> Path:
    """Store the anchor gradient of each checkpoint step beside the checkpoints (atomically)."""
    flat = {f"{step}/{name}": t.detach().float().cpu().contiguous()
            for step, g in zip(steps, grads, strict=True) for name, t in g.items()}
    path = Path(root) / ANCHOR_GRADS_FILE
    io.write_with(path, lambda tmp: save_file(flat, str(tmp)))
    return path


def load_anchor_gradients(root: Path, steps: list[int]) -> list[dict[str, torch.Tensor]] | None:
    """The stored anchor gradients for `steps` (None when there is no file); a missing step is an error."""
    path = Path(root) / ANCHOR_GRADS_FILE
    if not path.exists():
        return None
    flat = load_file(str(path))
    out: list[dict[str, torch.Tensor]] = []
    for step in steps:
        g = {k.split("/", 1)[1]: t for k, t in flat.items() if k.split("/", 1)[0] == str(step)}
        if not g:
            raise ValueError(f"{path}: no anchor gradient for checkpoint step {step}")
        out.append(g)
    return out
