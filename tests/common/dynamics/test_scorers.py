"""The clues, datainf and less scorers: built from a Config, fed by prepare_checkpoints, honour the contract."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

import fedcurate.common.scorers.clues  # noqa: F401  (registers the scorers until scorers/__init__ imports them)
import fedcurate.common.scorers.datainf  # noqa: F401
import fedcurate.common.scorers.less  # noqa: F401
from fedcurate.common.config import Config, load_config
from fedcurate.common.data.loaders import write_samples
from fedcurate.common.data.sample import Sample
from fedcurate.common.dynamics.checkpoints import list_checkpoints, load_checkpoint
from fedcurate.common.dynamics.clues import ScoreOptions, anchor_gradients, clues_scores
from fedcurate.common.dynamics.prepare import TRAIN_FILE, load_dynamics, prepare_checkpoints
from fedcurate.common.scorers import SCORERS, Scorer, failure_reason
from fedcurate.simulations.synthetic import generate_clean

NAMES = ["clues", "datainf", "less"]


def _config(tmp: Path, base: Path, anchor_path: str, **extra: object) -> Config:
    return load_config(None, {
        "run.dir": str(tmp), "model.name-or-path": str(base), "model.template": "plain", "model.max-length": 64,
        "training.lora-r": 4, "training.lora-alpha": 8, "training.lora-dropout": 0.0, "training.learning-rate": 1e-2,
        "training.max-steps": 6, "training.batch-size": 8, "training.checkpoints": 2,
        "dynamics.anchor-path": anchor_path, "dynamics.batch-size": 4, "dynamics.projection-dim": 64, **extra})


@pytest.fixture(scope="module")
def cfg(trained, tmp_path_factory: pytest.TempPathFactory) -> Config:
    tmp = tmp_path_factory.mktemp("scorers")
    write_samples(tmp / "anchor.jsonl", trained.anchor)
    config = _config(tmp, trained.base, str(tmp / "anchor.jsonl"))
    prepare_checkpoints(config, trained.train)
    return config


@pytest.mark.parametrize("name", NAMES)
def test_scorer_contract(cfg: Config, trained, name: str) -> None:
    # Prepare
    scorer = SCORERS.get(name)(cfg)
    samples = trained.train[:7]
    # Execute
    scores = scorer.score_batch(samples)
    reversed_scores = scorer.score_batch(samples[::-1])[::-1]
    # Assert
    assert isinstance(scorer, Scorer) and scorer.name == name and scorer.higher_is_better is True
    assert len(scores) == len(samples) and all(isinstance(s, float) and math.isfinite(s) for s in scores)
    assert scores == pytest.approx(reversed_scores, rel=1e-5, abs=1e-12)
    assert scorer.score_batch([]) == []


def test_clues_scorer_uses_the_dynamics_settings(cfg: Config, trained) -> None:
    # Prepare
    cosine = replace(cfg, dynamics=replace(cfg.dynamics, similarity="cosine", preconditioning="sgd",
                                           modules=["v_proj"]))
    dm, ckpts = load_dynamics(cosine)
    options = ScoreOptions("sgd", "cosine", ("v_proj",))
    # Execute
    got = SCORERS.get("clues")(cosine).score_batch(trained.train[:5])
    want = clues_scores(dm, trained.train[:5], ckpts, anchor_gradients(dm, trained.anchor, ckpts, ("v_proj",)),
                        options)
    # Assert
    assert got == pytest.approx(want, rel=1e-6)
    assert all(-1.0 <= v / max(c.lr_mean for c in ckpts) <= 1.0 for v in got)


def test_prepare_checkpoints_writes_and_reuses(cfg: Config, trained) -> None:
    # Prepare
    root = Path(cfg.run.dir) / "dynamics"
    stamp = (list_checkpoints(root)[-1] / "state.safetensors").stat().st_mtime_ns
    # Execute
    again = prepare_checkpoints(cfg, trained.train)
    # Assert
    assert [p.name for p in again] == ["checkpoint-3", "checkpoint-6"]
    assert (list_checkpoints(root)[-1] / "state.safetensors").stat().st_mtime_ns == stamp
    assert (root / TRAIN_FILE).exists() and load_checkpoint(again[-1]).step == 6
    with pytest.raises(ValueError, match="another run"):
        prepare_checkpoints(cfg, generate_clean(10, seed=9))


@pytest.mark.parametrize("name", NAMES)
def test_missing_inputs_fail_every_sample_with_the_reason(trained, tmp_path: Path, name: str) -> None:
    # Prepare
    write_samples(tmp_path / "anchor.jsonl", trained.anchor)
    configs = {"anchor-path is empty": _config(tmp_path, trained.base, ""),
               "not found": _config(tmp_path, trained.base, str(tmp_path / "missing.jsonl")),
               "no CLUES checkpoints": _config(tmp_path, trained.base, str(tmp_path / "anchor.jsonl"))}
    # Execute
    results = {reason: SCORERS.get(name)(c).score_batch(trained.train[:3]) for reason, c in configs.items()}
    # Assert
    for reason, scores in results.items():
        assert len(scores) == 3 and all(math.isnan(s) and reason in failure_reason(s) for s in scores)


def test_unscorable_sample_gets_a_reason(cfg: Config, trained) -> None:
    # Prepare
    empty = Sample(id="e", instruction="Say nothing.", response="")
    # Execute
    scores = {name: SCORERS.get(name)(cfg).score_batch([trained.train[0], empty]) for name in NAMES}
    # Assert
    for values in scores.values():
        assert math.isfinite(values[0]) and "no response token" in failure_reason(values[1])
