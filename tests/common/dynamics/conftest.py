"""Shared fixtures: a tiny model trained with LoRA for a few steps, its checkpoints, and a scoring model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from fedcurate.common.config import TrainingConfig
from fedcurate.common.data.sample import Sample
from fedcurate.common.dynamics.checkpoints import Checkpoint, load_checkpoint
from fedcurate.common.dynamics.scoring import DynamicsModel
from fedcurate.common.lora_training import train_lora
from fedcurate.common.models.loading import load_model_and_tokenizer
from fedcurate.common.models.tiny import build_tiny_model
from fedcurate.simulations.synthetic import make_splits

TEMPLATE, MAX_LENGTH = "plain", 64
TRAINING = TrainingConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=1e-2, max_steps=6, batch_size=8,
                          checkpoints=2, warmup_ratio=0.0)


@dataclass
class Trained:
    """A tiny LoRA run: base model directory, checkpoint directories, data."""

    base: Path
    paths: list[Path]
    train: list[Sample]
    anchor: list[Sample]

    def checkpoints(self) -> list[Checkpoint]:
        return [load_checkpoint(p) for p in self.paths]

    def scoring_model(self, batch_size: int = 5) -> DynamicsModel:
        """A fresh base model with the adapter, in eval mode (no dropout), as the scorers build it."""
        base, tok = load_model_and_tokenizer(str(self.base), device="cpu")
        model = PeftModel.from_pretrained(base, str(self.paths[0]), is_trainable=True).eval()
        return DynamicsModel(model, tok, TEMPLATE, MAX_LENGTH, batch_size)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("dynamics")
    base = build_tiny_model(root / "base", seed=0)
    splits = make_splits(24, 0.4, 6, 0, seed=0)
    model, tok = load_model_and_tokenizer(str(base), device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures run outside the per-test one-thread fixture
    try:
        run = train_lora(model, tok, splits.train, TRAINING, root / "checkpoints", template=TEMPLATE,
                         max_length=MAX_LENGTH)
    finally:
        torch.set_num_threads(threads)
    return Trained(base, run.checkpoints, splits.train, splits.anchor)
