"""Phase `warmup`, server side: federated LoRA rounds on every site's samples; each round's average is one
shared checkpoint (weights and Adam moments) for the training-dynamics scorers.

    summary = phase_warmup(run)      # rounds, the checkpoints' folder, site-level DP spent

Protocol: `common/protocol/warmup.py`; site side: `client/steps/warmup.py`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fedcurate.common import io
from fedcurate.common.config import Config
from fedcurate.common.protocol import layout
from fedcurate.common.protocol.warmup import DYNAMICS_SCORERS
from fedcurate.server.phases.lora import lora_rounds, training_privacy
from fedcurate.server.run import Run, skipped


def needs_dynamics(cfg: Config) -> bool:
    return bool(DYNAMICS_SCORERS & set(cfg.scoring.scorers))


def checkpoints_root(run: Run) -> Path:
    """Given checkpoints (dynamics.checkpoints-dir), else those the warm-up makes."""
    return Path(run.cfg.dynamics.checkpoints_dir) if run.cfg.dynamics.checkpoints_dir else \
        run.server_dir("warmup") / "checkpoints"


def server_config(run: Run) -> Config:
    """The config as the server runs it: caches under <run>/server, checkpoints where the warm-up put them."""
    cfg = run.cfg
    return replace(cfg, run=replace(cfg.run, dir=str(run.run_dir / "server")),
                   dynamics=replace(cfg.dynamics, checkpoints_dir=str(checkpoints_root(run))))


def phase_warmup(run: Run) -> dict[str, Any]:
    from fedcurate.common.federated_lora import initial_state, write_checkpoint

    cfg = run.cfg
    if not needs_dynamics(cfg):
        return skipped("no training-dynamics scorer (clues, less, datainf) in scoring.scorers")
    if cfg.dynamics.checkpoints_dir:
        return skipped(f"checkpoints given in dynamics.checkpoints-dir = {cfg.dynamics.checkpoints_dir}")
    fed, root = cfg.federation, checkpoints_root(run)

    def save(r: int, state: dict[str, np.ndarray], lr_mean: float) -> None:
        write_checkpoint(root, r * fed.local_steps, state, cfg, lr_mean=lr_mean, info={"round": r})

    _, log = lora_rounds(run, "warmup", initial_state(cfg), fed.warmup_rounds, fed.local_steps,
                         run.server_dir("warmup"), None, save)
    io.write_json(layout.stats_path(run.run_dir, "warmup"), {"rounds": log})
    return {"rounds": log, "checkpoints": str(root), "privacy": training_privacy(run, "warmup", log)}
