"""Federated LoRA building blocks: initial state, resumable local updates, FedAvg of states, checkpoints."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel

from fedcurate.common.config import Config, ModelConfig, TrainingConfig
from fedcurate.common.data.sample import Sample
from fedcurate.common.dynamics.checkpoints import list_checkpoints, load_checkpoint, read_info
from fedcurate.common.federated_lora import (
    LocalUpdate,
    State,
    initial_state,
    local_update,
    read_state,
    write_adapter,
    write_checkpoint,
)
from fedcurate.common.lora_training import lr_multiplier, train_lora
from fedcurate.common.models.loading import load_model_and_tokenizer
from fedcurate.common.models.tiny import build_tiny_model
from fedcurate.simulations.synthetic import generate_clean
from fedcurate.strategies.lora_average import average_states
from fedcurate.strategies.merging import merge_adapters

TRAINING = TrainingConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=1e-2, batch_size=4,
                          gradient_accumulation=2, warmup_ratio=0.25, max_steps=6, checkpoints=1, seed=3)
DATA = generate_clean(14, seed=0)  # 4 micro-batches per epoch: 6 steps of 2 cross 3 epochs


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    base = build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")
    return Config(model=ModelConfig(name_or_path=str(base), template="plain", max_length=64, device="cpu"),
                  training=TRAINING)


def _update(cfg: Config, state: State, start: int, steps: int, total: int = 6) -> LocalUpdate:
    return local_update(cfg, DATA, state, start_step=start, steps=steps, total_steps=total, seed=TRAINING.seed)


def _assert_close(a: State, b: State, atol: float) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol, err_msg=key)


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.arange(4, 40).view(2, 18)).logits


def test_initial_state_is_deterministic_with_zero_moments(cfg: Config) -> None:
    # Execute
    a, b = initial_state(cfg), initial_state(cfg)
    other = initial_state(replace(cfg, training=replace(TRAINING, seed=4)))
    # Assert
    _assert_close(a, b, atol=0)
    names = {k.split("/", 1)[1] for k in a}
    assert set(a) == {f"{p}/{n}" for n in names for p in ("weight", "exp_avg", "exp_avg_sq")}
    assert all(a[k].dtype == np.float32 for k in a)
    assert all(not a[k].any() for k in a if not k.startswith("weight/") or ".lora_B." in k)
    assert all(a[k].any() for k in a if k.startswith("weight/") and ".lora_A." in k)
    assert any(not np.array_equal(a[k], other[k]) for k in a)


def test_local_update_trains_weights_and_moments_and_leaves_its_input_alone(cfg: Config) -> None:
    # Prepare
    start = initial_state(cfg)
    copy = {k: v.copy() for k, v in start.items()}
    # Execute
    upd = _update(cfg, start, 0, 3)
    # Assert
    _assert_close(start, copy, atol=0)
    assert upd.num_examples == len(DATA) and len(upd.losses) == 3 and all(map(math.isfinite, upd.losses))
    assert all(upd.state[k].any() for k in upd.state if ".lora_B." in k or k.startswith("exp_avg"))
    assert all(not np.array_equal(upd.state[k], start[k]) for k in start if k.startswith("weight/"))
    warmup = math.ceil(TRAINING.warmup_ratio * 6)
    assert upd.lr_mean == pytest.approx(np.mean([1e-2 * lr_multiplier(g, warmup, 6, "linear") for g in range(3)]))


def test_two_local_updates_continue_like_one_run_and_like_train_lora(cfg: Config, tmp_path: Path) -> None:
    # Prepare
    start = initial_state(cfg)
    # Execute
    first = _update(cfg, start, 0, 3)
    second = _update(cfg, first.state, 3, 3)
    whole = _update(cfg, start, 0, 6)
    model, tok = load_model_and_tokenizer(cfg.model.name_or_path, device="cpu")
    run = train_lora(model, tok, DATA, TRAINING, tmp_path / "ck", template="plain", max_length=64)
    # Assert
    assert first.losses + second.losses == pytest.approx(whole.losses, abs=1e-6)
    _assert_close(second.state, whole.state, atol=1e-6)
    assert whole.losses == pytest.approx(run.losses, abs=1e-6)
    _assert_close(whole.state, read_state(run.checkpoints[-1]), atol=1e-6)


def test_dropout_masks_follow_the_seed(cfg: Config) -> None:
    # Prepare
    noisy = replace(cfg, training=replace(TRAINING, lora_dropout=0.3))
    start = initial_state(noisy)
    # Execute
    a, b, c = (local_update(noisy, DATA, start, start_step=0, steps=2, total_steps=6, seed=s) for s in (1, 1, 2))
    # Assert
    assert a.losses == b.losses and a.losses != c.losses
    _assert_close(a.state, b.state, atol=0)


def test_averaging_is_the_weighted_mean_for_moments_and_fedit_weights(cfg: Config) -> None:
    # Prepare
    a = _update(cfg, initial_state(cfg), 0, 2).state
    b = _update(cfg, a, 2, 2).state
    # Execute
    mean = average_states([a, b], [1, 3])
    svd = average_states([a, b], [1, 3], exact="svd")
    # Assert
    _assert_close(mean, {k: 0.25 * a[k] + 0.75 * b[k] for k in a}, atol=1e-7)
    plain = [{k[len("weight/"):]: s[k] for k in s if k.startswith("weight/")} for s in (a, b)]
    want = merge_adapters(plain, [1, 3], "svd")
    _assert_close({k: svd[f"weight/{k}"] for k in want}, want, atol=1e-6)
    assert all(np.array_equal(svd[k], mean[k]) for k in a if not k.startswith("weight/"))


def test_averaging_refuses_states_that_do_not_match(cfg: Config) -> None:
    # Prepare
    a = initial_state(cfg)
    key = next(k for k in a if k.startswith("exp_avg_sq/"))
    short = {k: v for k, v in a.items() if k != key}
    wide = {**a, key: np.zeros((1, 1), np.float32)}
    # Execute / Assert
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        average_states([a, short], [1, 1])
    with pytest.raises(ValueError, match="shape"):
        average_states([a, wide], [1, 1])
    with pytest.raises(ValueError, match="stack"):
        average_states([a, a], [1, 1], exact="stack")


def test_checkpoint_round_trips_exactly_and_loads_as_a_peft_adapter(cfg: Config, tmp_path: Path) -> None:
    # Prepare
    state = _update(cfg, initial_state(cfg), 0, 2).state
    # Execute
    path = write_checkpoint(tmp_path / "ck", 2, state, cfg, lr_mean=5e-3, info={"round": 1})
    again = write_checkpoint(tmp_path / "ck", 2, state, cfg, lr_mean=5e-3, info={"round": 1})
    # Assert
    assert again == path and list_checkpoints(tmp_path / "ck") == [path]
    ckpt = load_checkpoint(path)
    assert (ckpt.step, ckpt.lr_mean, ckpt.betas, ckpt.eps) == (2, 5e-3, (0.9, 0.999), 1e-8)
    assert read_info(path)["round"] == 1
    for part, tensors in (("weight", ckpt.adapter), ("exp_avg", ckpt.exp_avg), ("exp_avg_sq", ckpt.exp_avg_sq)):
        assert {f"{part}/{n}" for n in tensors} == {k for k in state if k.startswith(f"{part}/")}
        assert all(np.array_equal(t.numpy(), state[f"{part}/{n}"]) for n, t in tensors.items())
    _assert_close(read_state(path), state, atol=0)
    base, _ = load_model_and_tokenizer(cfg.model.name_or_path, device="cpu")
    peft = PeftModel.from_pretrained(base, str(path), is_trainable=True)
    loaded = {n: p for n, p in peft.named_parameters() if ".lora_" in n}
    assert set(loaded) == {k.split("/", 1)[1] for k in state if k.startswith("weight/")}
    assert all(np.array_equal(p.detach().numpy(), state[f"weight/{n}"]) for n, p in loaded.items())


def test_adapter_loads_merged_onto_its_base(cfg: Config, tmp_path: Path) -> None:
    # Prepare
    trained = _update(cfg, initial_state(cfg), 0, 2).state
    base, _ = load_model_and_tokenizer(cfg.model.name_or_path, device="cpu")
    # Execute
    write_adapter(tmp_path / "zero", initial_state(cfg), cfg)
    write_adapter(tmp_path / "trained", trained, cfg)
    zero, _ = load_model_and_tokenizer(str(tmp_path / "zero"), device="cpu")
    merged, tok = load_model_and_tokenizer(str(tmp_path / "trained"), device="cpu")
    # Assert: B = 0 is the base model; a trained B is not
    torch.testing.assert_close(_logits(zero), _logits(base))
    assert not torch.allclose(_logits(merged), _logits(base), atol=1e-4)
    assert tok.pad_token_id is not None
    peft = PeftModel.from_pretrained(load_model_and_tokenizer(cfg.model.name_or_path, device="cpu")[0],
                                     str(tmp_path / "trained")).eval()
    torch.testing.assert_close(_logits(merged), _logits(peft), rtol=1e-5, atol=1e-5)


def test_bad_input_is_refused_with_a_clear_message(cfg: Config) -> None:
    # Prepare
    state = initial_state(cfg)
    empty = [Sample(id="e", instruction="say nothing", response="")]
    key = next(iter(state))
    # Execute / Assert
    with pytest.raises(ValueError, match="response token"):
        local_update(cfg, empty, state, start_step=0, steps=1, total_steps=1, seed=0)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        _update(cfg, {k: v for k, v in state.items() if k != key}, 0, 1)
    with pytest.raises(ValueError, match="total_steps"):
        _update(cfg, state, 5, 3)
