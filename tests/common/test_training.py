"""Full-parameter training of the tiny model: it learns a task, and the loop's schedule and seeding hold."""

from __future__ import annotations

import math
import random
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedcurate.common.data.sample import Sample
from fedcurate.common.models.lm_loss import response_nll
from fedcurate.common.models.loading import load_model_and_tokenizer
from fedcurate.common.models.tiny import build_tiny_model
from fedcurate.common.training import linear_warmup_decay, train_causal_lm


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny model trains as fast on one thread, and ~15x faster when other processes share the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fresh(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return load_model_and_tokenizer(str(path), device="cpu")


def _reverse_tasks(n: int, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 6))) for _ in range(n)]
    return [Sample(id=f"{seed}-{i}", instruction=f"Reverse the word: {w}", response=w[::-1])
            for i, w in enumerate(words)]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_training_learns_the_task_and_ranks_wrong_responses_worse(tiny_path: Path) -> None:
    # Prepare
    model, tok = _fresh(tiny_path)
    train, held_out = _reverse_tasks(300, seed=0), _reverse_tasks(60, seed=1)
    wrong = [Sample(id=s.id, instruction=s.instruction, response=held_out[i - 1].response)
             for i, s in enumerate(held_out)]  # another sample's answer: fluent, but not this word reversed
    before = _mean(response_nll(model, tok, held_out, "plain", 64, 32))
    # Execute
    losses = train_causal_lm(model, tok, train, template="plain", max_length=64, epochs=10, batch_size=16,
                             learning_rate=5e-3, seed=0)
    # Assert
    right_after = _mean(response_nll(model, tok, held_out, "plain", 64, 32))
    wrong_after = _mean(response_nll(model, tok, wrong, "plain", 64, 32))
    assert len(losses) == 10 * math.ceil(300 / 16)
    assert _mean(losses[-10:]) < _mean(losses[:10]) - 1.5
    assert right_after < before - 1.5  # measured: 4.65 -> about 2.1-2.6 nats
    assert wrong_after > right_after + 0.5  # measured: about 0.8-1.7 nats apart
    assert not model.training


def test_same_seed_gives_identical_losses_and_weights(tiny_path: Path) -> None:
    # Prepare
    samples = _reverse_tasks(24, seed=2)
    runs = []
    # Execute
    for _ in range(2):
        model, tok = _fresh(tiny_path)
        losses = train_causal_lm(model, tok, samples, template="alpaca", max_length=96, epochs=1, batch_size=8,
                                 learning_rate=1e-3, seed=5)
        runs.append((losses, model.lm_head.weight.detach().clone()))
    other_seed = train_causal_lm(*_fresh(tiny_path), samples, template="alpaca", max_length=96, epochs=1,
                                 batch_size=8, learning_rate=1e-3, seed=6)
    # Assert
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])
    assert other_seed != runs[0][0]


@pytest.mark.parametrize(("epochs", "expected_steps"), [(0.5, 2), (1.0, 3), (2.0, 6), (0.0, 0)])
def test_fractional_epochs_and_last_short_batch(tiny_path: Path, epochs: float, expected_steps: int) -> None:
    # Prepare: 20 samples in batches of 8 -> 3 steps per epoch (8, 8, 4)
    model, tok = _fresh(tiny_path)
    weights = model.lm_head.weight.detach().clone()
    # Execute
    losses = train_causal_lm(model, tok, _reverse_tasks(20, seed=3), template="plain", max_length=32,
                             epochs=epochs, batch_size=8, learning_rate=1e-3, seed=0)
    # Assert
    assert len(losses) == expected_steps
    assert torch.equal(model.lm_head.weight, weights) == (expected_steps == 0)


def test_samples_with_empty_responses_are_skipped(tiny_path: Path) -> None:
    # Prepare: 10 usable samples and 6 empty ones, batches of 4 -> 3 steps per epoch
    samples = _reverse_tasks(10, seed=4) + [Sample(id=f"e{i}", instruction="Say nothing.", response="")
                                           for i in range(6)]
    # Execute
    losses = train_causal_lm(*_fresh(tiny_path), samples, template="plain", max_length=32, epochs=1,
                             batch_size=4, learning_rate=1e-3, seed=0)
    # Assert
    assert len(losses) == 3
    assert all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize(("step", "expected"), [(0, 0.25), (3, 1.0), (4, 1.0), (10, 10 / 16), (19, 1 / 16)])
def test_linear_warmup_then_decay(step: int, expected: float) -> None:
    # Execute / Assert: 4 warm-up steps of 20
    assert linear_warmup_decay(step, warmup_steps=4, total_steps=20) == pytest.approx(expected)


def test_schedule_without_warmup_starts_at_full_rate_and_ends_near_zero() -> None:
    # Execute
    rates = [linear_warmup_decay(s, warmup_steps=0, total_steps=10) for s in range(11)]
    # Assert
    assert rates[0] == 1.0 and rates[-1] == 0.0
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
