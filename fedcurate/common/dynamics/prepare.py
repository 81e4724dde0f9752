"""What the dynamics scorers need from a config: trained checkpoints, the scoring model, the anchor set.

    paths = prepare_checkpoints(cfg, train_samples)     # LoRA on the data to be scored -> checkpoints
    dm, ckpts = load_dynamics(cfg)                      # base model + adapter, checkpoints (cached)
    anchor = load_anchor(cfg)                           # dynamics.anchor-path

`prepare_checkpoints` trains [training] LoRA on [model] with the samples given, into
`checkpoints_dir(cfg)` (dynamics.checkpoints-dir, else <run.dir>/dynamics), and stores the samples
there as train.jsonl (DataInf's Hessian needs the training set). A finished run writes DONE.json;
calling it again with the same data and settings returns at once; an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from fedcurate.common import io
from fedcurate.common.config import Config
from fedcurate.common.data.loaders import load_samples, write_samples
from fedcurate.common.data.sample import Sample
from fedcurate.common.dynamics.checkpoints import (
    Checkpoint,
    checkpoints_dir,
    list_checkpoints,
    load_checkpoint,
)
from fedcurate.common.dynamics.clues import ScoreOptions
from fedcurate.common.dynamics.scoring import DynamicsModel
from fedcurate.common.models.loading import load_model_and_tokenizer

logger = logging.getLogger(__name__)

TRAIN_FILE = "train.jsonl"
DONE_FILE = "DONE.json"
_LOADED: dict[tuple[str, ...], tuple[DynamicsModel, list[Checkpoint]]] = {}


def _data_key(cfg: Config, samples: Sequence[Sample]) -> str:
    h = hashlib.sha256(json.dumps([asdict(cfg.training), asdict(cfg.model)], sort_keys=True).encode())
    for s in samples:
        h.update(json.dumps([s.id, s.instruction, s.input, s.response]).encode())
    return h.hexdigest()


def prepare_checkpoints(cfg: Config, train_samples: Sequence[Sample], out_dir: Path | None = None) -> list[Path]:
    """Train LoRA on `train_samples` and save `training.checkpoints` checkpoints; returns their directories."""
    from fedcurate.common.lora_training import train_lora  # accelerate and peft load only when training

    root = Path(out_dir) if out_dir else checkpoints_dir(cfg)
    key = _data_key(cfg, train_samples)
    done = root / DONE_FILE
    if done.exists() and json.loads(done.read_text(encoding="utf-8")).get("key") == key:
        logger.info("reusing the CLUES checkpoints in %s", root)
        return list_checkpoints(root)
    m = cfg.model
    model, tokenizer = load_model_and_tokenizer(m.name_or_path, dtype=m.dtype, device=m.device)
    run = train_lora(model, tokenizer, train_samples, cfg.training, root, template=m.template,
                     max_length=m.max_length)
    write_samples(root / TRAIN_FILE, train_samples)
    io.write_json(done, {"key": key, "checkpoints": [p.name for p in run.checkpoints], "steps": len(run.losses)})
    _LOADED.clear()  # a cached scoring model may hold checkpoints that were just replaced
    return run.checkpoints


def load_dynamics(cfg: Config) -> tuple[DynamicsModel, list[Checkpoint]]:
    """The base model with the checkpoints' adapter (weights swapped per checkpoint), and the checkpoints.

    Loaded once per process and configuration, so the clues, datainf and less scorers share one model.
    """
    from peft import PeftModel

    root = checkpoints_dir(cfg)
    m = cfg.model
    key = (m.name_or_path, m.dtype, m.device, m.template, str(m.max_length), str(root.resolve()),
           str(cfg.dynamics.batch_size))
    if key not in _LOADED:
        paths = list_checkpoints(root)
        if not paths:
            raise FileNotFoundError(f"no CLUES checkpoints in {root}: train them first with "
                                    f"prepare_checkpoints(cfg, train_samples), or set dynamics.checkpoints-dir")
        base, tokenizer = load_model_and_tokenizer(m.name_or_path, dtype=m.dtype, device=m.device)
        model = PeftModel.from_pretrained(base, str(paths[0]), is_trainable=True)
        model.eval()  # no LoRA dropout while scoring
        dm = DynamicsModel(model, tokenizer, m.template, m.max_length, cfg.dynamics.batch_size)
        _LOADED[key] = (dm, [load_checkpoint(p) for p in paths])
        logger.info("scoring with %d checkpoint(s) from %s", len(paths), root)
    return _LOADED[key]


def missing_inputs(cfg: Config, need_train: bool = False) -> str:
    """Why the dynamics scorers cannot run with `cfg` ('' when they can): no anchor set, no checkpoints."""
    root = checkpoints_dir(cfg)
    if not cfg.dynamics.anchor_path:
        return "dynamics.anchor-path is empty: a clean anchor set is needed"
    if not Path(cfg.dynamics.anchor_path).exists():
        return f"anchor set {cfg.dynamics.anchor_path} not found"
    if not list_checkpoints(root):
        return f"no CLUES checkpoints in {root}: run prepare_checkpoints(cfg, samples) first"
    if need_train and not (root / TRAIN_FILE).exists():
        return f"{root / TRAIN_FILE} not found: DataInf needs the samples the checkpoints were trained on"
    return ""


def load_anchor(cfg: Config) -> list[Sample]:
    """The clean anchor samples of `dynamics.anchor-path`."""
    if not cfg.dynamics.anchor_path:
        raise ValueError("dynamics.anchor-path is empty: the dynamics scorers need a clean anchor set")
    return load_samples(cfg.dynamics.anchor_path).samples


def load_train(cfg: Config) -> list[Sample]:
    """The samples the checkpoints were trained on (train.jsonl beside them)."""
    path = checkpoints_dir(cfg) / TRAIN_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: checkpoints made by prepare_checkpoints store their "
                                f"training samples there (DataInf needs them)")
    return load_samples(path).samples


def score_options(cfg: Config) -> ScoreOptions:
    """[dynamics] preconditioning, similarity and module filter."""
    d = cfg.dynamics
    return ScoreOptions(d.preconditioning, d.similarity, tuple(d.modules))
