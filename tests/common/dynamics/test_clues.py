"""CLUES scores: the batched fast path equals the naive batch-size-1 loop, and the threshold rule."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from fedcurate.common.data.sample import Sample
from fedcurate.common.dynamics.clues import (
    ScoreOptions,
    anchor_gradients,
    anchor_threshold,
    clues_scores,
    score_anchor,
)
from fedcurate.common.dynamics.naive import max_relative_error, naive_scores
from fedcurate.common.scorers.base import failure_reason

OPTIONS = [ScoreOptions(p, s) for p in ("adam", "sgd") for s in ("inner", "cosine")]
FILTERED = [ScoreOptions("adam", "inner", ("v_proj",)), ScoreOptions("sgd", "cosine", ("lora_B",)),
            ScoreOptions("adam", "cosine", ("layers.1.self_attn.q_proj",))]


@pytest.mark.parametrize("options", OPTIONS + FILTERED, ids=str)
def test_fast_scores_equal_the_naive_loop(trained, options: ScoreOptions) -> None:
    # Prepare: 2 checkpoints, batches of 5 (so the last batch is short and padded)
    dm, ckpts = trained.scoring_model(batch_size=5), trained.checkpoints()
    samples = trained.train[:13]
    # Execute
    grads = anchor_gradients(dm, trained.anchor, ckpts, options.modules)
    fast = clues_scores(dm, samples, ckpts, grads, options)
    naive = naive_scores(dm, samples, trained.anchor, ckpts, options)
    # Assert
    assert len(ckpts) == 2
    assert max_relative_error(fast, naive) <= 1e-4
    assert len({round(v, 12) for v in fast}) == len(fast)  # not a constant


def test_module_filter_changes_the_scores(trained) -> None:
    # Prepare
    dm, ckpts = trained.scoring_model(), trained.checkpoints()
    samples = trained.train[:8]
    scores = {}
    # Execute
    for modules in ((), ("q_proj",), ("v_proj",)):
        options = ScoreOptions("sgd", "inner", modules)
        scores[modules] = clues_scores(dm, samples, ckpts, anchor_gradients(dm, trained.anchor, ckpts, modules), options)
    # Assert: inner products add over disjoint parameter sets
    both = [q + v for q, v in zip(scores[("q_proj",)], scores[("v_proj",)], strict=True)]
    assert max_relative_error(both, scores[()]) <= 1e-5
    assert max_relative_error(scores[("q_proj",)], scores[()]) > 1e-2


def test_scores_do_not_depend_on_order_or_batch_size(trained) -> None:
    # Prepare
    ckpts = trained.checkpoints()
    samples = trained.train[:11]
    dm3, dm8 = trained.scoring_model(batch_size=3), trained.scoring_model(batch_size=8)
    grads = anchor_gradients(dm3, trained.anchor, ckpts)
    # Execute
    forward = clues_scores(dm3, samples, ckpts, grads)
    backward = clues_scores(dm8, samples[::-1], ckpts, grads)[::-1]
    # Assert
    assert max_relative_error(backward, forward) <= 1e-5


def test_sample_without_response_fails_with_a_reason(trained) -> None:
    # Prepare
    dm, ckpts = trained.scoring_model(), trained.checkpoints()
    empty = Sample(id="empty", instruction="Say nothing.", response="")
    grads = anchor_gradients(dm, trained.anchor, ckpts)
    # Execute
    scores = clues_scores(dm, [trained.train[0], empty], ckpts, grads)
    # Assert
    assert math.isfinite(scores[0])
    assert math.isnan(scores[1]) and "no response token" in failure_reason(scores[1])


def test_learning_rate_weights_scale_each_checkpoint(trained) -> None:
    # Prepare
    dm, ckpts = trained.scoring_model(), trained.checkpoints()
    samples = trained.train[:6]
    grads = anchor_gradients(dm, trained.anchor, ckpts)
    # Execute
    single = [clues_scores(dm, samples, [c], [g]) for c, g in zip(ckpts, grads, strict=True)]
    doubled = clues_scores(dm, samples, [replace(ckpts[0], lr_mean=2 * ckpts[0].lr_mean), ckpts[1]], grads)
    # Assert: S = (1/C) sum_c eta_c s_c, and each single-checkpoint score already carries its own eta_c
    expected = [(2 * a + b) / 2 for a, b in zip(single[0], single[1], strict=True)]
    assert max_relative_error(doubled, expected) <= 1e-6


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_anchor_scores_leave_the_sample_out_of_the_anchor_mean(trained, options: ScoreOptions) -> None:
    # Prepare
    dm, ckpts = trained.scoring_model(batch_size=4), trained.checkpoints()
    anchor = trained.anchor
    grads = anchor_gradients(dm, anchor, ckpts, options.modules)
    # Execute
    fast = score_anchor(dm, anchor, ckpts, grads, options)
    with_self = score_anchor(dm, anchor, ckpts, grads, options, leave_one_out=False)
    naive = [naive_scores(dm, [a], anchor[:i] + anchor[i + 1:], ckpts, options)[0] for i, a in enumerate(anchor)]
    # Assert
    assert max_relative_error(fast, naive) <= 1e-4
    assert with_self == pytest.approx(clues_scores(dm, anchor, ckpts, grads, options), rel=1e-9)
    assert max_relative_error(with_self, naive) > 1e-3


def test_threshold_is_the_mean_anchor_score(trained) -> None:
    # Prepare
    dm, ckpts = trained.scoring_model(), trained.checkpoints()
    grads = anchor_gradients(dm, trained.anchor, ckpts)
    # Execute
    anchor_scores = score_anchor(dm, trained.anchor, ckpts, grads)
    tau = anchor_threshold(anchor_scores)
    # Assert
    assert len(anchor_scores) == len(trained.anchor)
    assert tau == pytest.approx(sum(anchor_scores) / len(anchor_scores))


def test_threshold_ignores_failures_and_needs_one_valid_score() -> None:
    # Execute / Assert: failures (NaN) and infinite scores are skipped, so tau is finite
    assert anchor_threshold([1.0, float("nan"), 3.0]) == 2.0
    assert anchor_threshold([1.0, 2.0, 6.0, float("inf"), float("-inf")]) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="no finite anchor score"):
        anchor_threshold([float("nan")])


def test_mismatched_anchor_gradients_are_an_error(trained) -> None:
    # Prepare
    dm, ckpts = trained.scoring_model(), trained.checkpoints()
    grads = anchor_gradients(dm, trained.anchor, ckpts[:1])
    # Execute / Assert
    with pytest.raises(ValueError, match="one anchor gradient per checkpoint"):
        clues_scores(dm, trained.train[:2], ckpts, grads)
