"""Held-out evaluation: figures in range, batching changes nothing, training shows, exact match, skips, paths."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedcurate.common.config import Config, ModelConfig
from fedcurate.common.data.sample import Sample
from fedcurate.common.evaluation import (
    EvalResult,
    evaluate_model,
    evaluate_path,
    greedy_generate,
    is_exact_match,
)
from fedcurate.common.models.lm_loss import response_nll
from fedcurate.common.models.loading import load_model_and_tokenizer
from fedcurate.common.models.templates import format_prompt
from fedcurate.common.models.tiny import build_tiny_model
from fedcurate.common.training import train_causal_lm
from fedcurate.simulations.synthetic import generate_clean

TEMPLATE, MAX_LEN = "plain", 64


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def _fresh(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return load_model_and_tokenizer(str(path), device="cpu")


@pytest.fixture(scope="module")
def count_model(tiny_path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The tiny model trained 250 steps on the `count` family (about 2 s; exact match about 0.6)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before conftest's per-test one-thread fixture
    model, tok = _fresh(tiny_path)
    train_causal_lm(model, tok, generate_clean(800, seed=0, families=["count"], id_prefix="train-"),
                    template=TEMPLATE, max_length=MAX_LEN, epochs=5, batch_size=16, learning_rate=5e-3, seed=0)
    torch.set_num_threads(before)
    return model, tok


def _held_out(family: str, n: int = 64) -> list[Sample]:
    return generate_clean(n, seed=1, families=[family], id_prefix="test-")  # other seed: unseen instructions


def _eval(model: PreTrainedModel, tok: PreTrainedTokenizerBase, samples: list[Sample], **kwargs) -> EvalResult:
    return evaluate_model(model, tok, samples, template=kwargs.pop("template", TEMPLATE),
                          max_length=kwargs.pop("max_length", MAX_LEN), **kwargs)


def test_untrained_model_gives_finite_figures_in_range(tiny_path: Path) -> None:
    # Prepare
    model, tok = _fresh(tiny_path)
    samples = generate_clean(30, seed=2)  # all five families
    # Execute
    result = _eval(model, tok, samples, template="alpaca", max_length=128)
    # Assert
    assert result.num_samples == 30 and result.num_skipped == 0
    assert math.isfinite(result.loss) and 3.0 < result.loss < 8.0  # about ln(101) = 4.6 for a random model
    assert 0.0 <= result.token_accuracy < 0.2
    assert result.exact_match == 0.0
    assert not model.training
    # the loss pools tokens: per-sample means (lm_loss) weighted by response tokens + EOS
    per_sample = response_nll(model, tok, samples, "alpaca", 128, batch_size=7)
    n_tokens = [len(s.response) + 1 for s in samples]  # char-level tokenizer, no truncation at 128
    pooled = sum(v * n for v, n in zip(per_sample, n_tokens, strict=True)) / sum(n_tokens)
    assert result.loss == pytest.approx(pooled, abs=1e-5)
    assert result.to_json() == {"num_samples": 30, "loss": result.loss, "token_accuracy": result.token_accuracy,
                                "exact_match": 0.0, "num_skipped": 0}


def test_batched_results_equal_batch_size_one(count_model: tuple[PreTrainedModel, PreTrainedTokenizerBase]) -> None:
    # Prepare: prompts and responses of many lengths, and a model that gets some answers right
    model, tok = count_model
    samples = _held_out("count", 24) + generate_clean(16, seed=3)
    # Execute
    batched = _eval(model, tok, samples, batch_size=16)
    single = _eval(model, tok, samples, batch_size=1)
    # Assert
    assert 0.0 < batched.exact_match < 1.0
    assert batched.loss == pytest.approx(single.loss, abs=1e-5)
    assert batched.token_accuracy == single.token_accuracy
    assert batched.exact_match == single.exact_match
    assert batched.num_samples == single.num_samples == 40


def test_batched_generation_equals_one_prompt_at_a_time(tiny_path: Path) -> None:
    # Prepare: an untrained model never emits EOS, so every row runs to its own budget
    model, tok = _fresh(tiny_path)
    prompts = [tok(format_prompt(s, "alpaca"))["input_ids"] for s in generate_clean(10, seed=4)]
    budgets = [3 + 2 * k for k in range(10)]
    # Execute
    with torch.inference_mode():
        batched = greedy_generate(model, tok, prompts, budgets, batch_size=4)
        single = greedy_generate(model, tok, prompts, budgets, batch_size=1)
    # Assert
    assert batched == single
    assert [len(tok(t, add_special_tokens=False)["input_ids"]) for t in batched] == budgets


def test_training_on_a_family_lowers_loss_and_raises_accuracy(
    tiny_path: Path, count_model: tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> None:
    # Prepare
    untrained, tok = _fresh(tiny_path)
    held_out = _held_out("count")
    # Execute
    before = _eval(untrained, tok, held_out)
    after = _eval(*count_model, held_out)
    # Assert
    assert after.loss < before.loss - 2.0  # measured: 4.7 -> 0.5 nats
    assert after.token_accuracy > before.token_accuracy + 0.4  # measured: 0.0 -> 0.8
    assert after.exact_match > before.exact_match


def test_exact_match_is_one_when_greedy_output_is_the_reference(tiny_path: Path) -> None:
    # Prepare: a model trained to answer "ok ok" to anything
    model, tok = _fresh(tiny_path)
    instructions = [s.instruction for s in generate_clean(60, seed=5)]
    train = [Sample(id=f"t{i}", instruction=x, response="ok ok") for i, x in enumerate(instructions)]
    train_causal_lm(model, tok, train, template=TEMPLATE, max_length=MAX_LEN, epochs=12, batch_size=16,
                    learning_rate=5e-3, seed=0)  # 48 steps
    held_out = [s.instruction for s in generate_clean(8, seed=6)]

    def ask(response: str, **kwargs) -> float:
        samples = [Sample(id=f"h{i}", instruction=x, response=response) for i, x in enumerate(held_out)]
        return _eval(model, tok, samples, **kwargs).exact_match

    # Execute / Assert
    assert ask("ok ok") == 1.0
    assert ask("  ok ok \n") == 1.0  # compared after strip()
    assert ask("ok") == 0.0  # the model runs on past the reference: the margin catches it
    assert ask("ok", max_new_tokens=2) == 1.0  # ... which a budget of exactly the reference length would miss
    assert math.isnan(_eval(model, tok, [Sample(id="x", instruction="a", response="ok ok")],
                            exact_match=False).exact_match)


def test_is_exact_match_strips_both_sides() -> None:
    assert is_exact_match(" 42\n", "42")
    assert is_exact_match("42", "\t42 ")
    assert not is_exact_match("42 ", "421")
    assert not is_exact_match("Ok", "ok")


def test_samples_without_a_response_token_are_skipped_and_counted(tiny_path: Path) -> None:
    # Prepare
    model, tok = _fresh(tiny_path)
    good = generate_clean(5, seed=7)
    empty = [dataclasses.replace(good[0], id="e0", response=""), dataclasses.replace(good[1], id="e1", response="")]
    # Execute
    mixed = _eval(model, tok, [empty[0], *good, empty[1]])
    only_good = _eval(model, tok, good)
    nothing = _eval(model, tok, empty)
    # Assert
    assert (mixed.num_samples, mixed.num_skipped) == (5, 2)
    assert mixed.loss == pytest.approx(only_good.loss, abs=1e-6)
    assert mixed.token_accuracy == only_good.token_accuracy
    assert (nothing.num_samples, nothing.num_skipped) == (0, 2)
    assert math.isnan(nothing.loss) and math.isnan(nothing.token_accuracy) and math.isnan(nothing.exact_match)


def test_evaluate_path_loads_base_models_and_lora_adapters(tiny_path: Path, tmp_path: Path) -> None:
    # Prepare: a LoRA adapter with non-zero weights, saved as a peft directory on the tiny base
    from peft import LoraConfig, get_peft_model

    base, tok = _fresh(tiny_path)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload()
    samples = _held_out("add", 12)
    cfg = Config(model=ModelConfig(name_or_path="unused", template=TEMPLATE, max_length=MAX_LEN, batch_size=4,
                                   device="cpu"))
    # Execute
    from_base = evaluate_path(str(tiny_path), samples, cfg, exact_match=False)
    from_adapter = evaluate_path(str(tmp_path / "adapter"), samples, cfg, exact_match=False)
    # Assert
    expected_base = _eval(*_fresh(tiny_path), samples, exact_match=False)
    expected_adapter = _eval(merged, tok, samples, exact_match=False)
    assert from_base.loss == pytest.approx(expected_base.loss, abs=1e-6)
    assert from_adapter.loss == pytest.approx(expected_adapter.loss, abs=1e-5)
    assert abs(from_adapter.loss - from_base.loss) > 1e-3  # the adapter was applied
    assert from_adapter.num_samples == 12 and math.isnan(from_adapter.exact_match)
