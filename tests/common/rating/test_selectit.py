"""SelectIT maths against hand values, and token/sentence level on the tiny model against its own logits."""

import math
import statistics

import pytest
import torch

from fedcurate.common.config import RaterConfig
from fedcurate.common.data.sample import Sample
from fedcurate.common.models.loading import get_model
from fedcurate.common.rating.raters import SelectITRater
from fedcurate.common.rating.selectit import model_score, rating_candidates, sentence_score, token_score

SAMPLES = [
    Sample("a", "Name the capital of France.", "Paris is the capital of France."),
    Sample("b", "Add the numbers.", "7", input="3 and 4"),
    Sample("c", "Write a haiku about rain.", "Soft rain on the roof / the garden drinks in silence / puddles hold the sky"),
]


@pytest.mark.parametrize(("probs", "normalization", "expected"), [
    ([0.1, 0.2, 0.4, 0.2, 0.1], "paper", 3 * (0.3 + 0.2 + 0.0 + 0.2 + 0.3) / 4),
    ([2, 4, 8, 4, 2], "paper", 3 * (0.3 + 0.2 + 0.0 + 0.2 + 0.3) / 4),  # renormalised first
    ([0, 0, 0, 0, 1], "paper", 5.0),  # certain and top: the maximum, K
    ([0.2, 0.2, 0.2, 0.2, 0.2], "paper", 0.0),  # no preference: zero (base is the lowest score)
    ([0.4, 0.4, 0.2], "paper", 1 * (0.0 + 0.0 + 0.2) / 2),  # tie: the lower score is the base
    ([0.05, 0.6, 0.35], "paper", 2 * (0.55 + 0.0 + 0.25) / 2),
])
def test_token_score_hand_values(probs, normalization, expected):
    # Execute / Assert
    assert token_score(probs, normalization) == pytest.approx(expected, abs=1e-12)


def test_code_head_normalization_compresses():
    # Prepare: one-hot P' -> softmax gives e/(4+e) on the top, 1/(4+e) elsewhere
    top, other = math.e / (4 + math.e), 1 / (4 + math.e)
    # Execute
    score = token_score([0, 0, 0, 0, 1], "code-head")
    # Assert
    assert score == pytest.approx(5 * 4 * (top - other) / 4)
    assert score == pytest.approx(1.279, abs=1e-3)


@pytest.mark.parametrize("bad", [[0.0, 0.0], [1.0], [0.5, math.nan], [-0.1, 1.1]])
def test_token_score_rejects_bad_probabilities(bad):
    # Execute / Assert
    with pytest.raises(ValueError):
        token_score(bad)


def test_sentence_score_uses_population_std():
    # Prepare
    scores, alpha = [1.0, 2.0, 3.0], 0.2
    # Execute
    value = sentence_score(scores, alpha)
    # Assert: std with ddof=0 is sqrt(2/3)
    assert value == pytest.approx(2.0 / (1 + 0.2 * math.sqrt(2 / 3)))
    assert sentence_score([2.0, 2.0], 5.0) == 2.0
    assert math.isnan(sentence_score([1.0, math.nan], alpha))


def test_model_score_weights_by_parameter_share():
    # Execute
    value = model_score([1.0, 2.0, 3.0], [7, 13, 70])  # the paper's 7B/13B/70B: 7/90, 13/90, 70/90
    # Assert
    assert value == pytest.approx((7 * 1 + 13 * 2 + 70 * 3) / 90)
    assert model_score([4.0, 1.0], [1, 1]) == pytest.approx(2.5)
    assert math.isnan(model_score([1.0, math.nan], [1, 1]))
    with pytest.raises(ValueError):
        model_score([1.0, 2.0], [0, 0])


def test_rating_candidates():
    # Execute / Assert
    assert rating_candidates(4) == ["1", "2", "3", "4"]
    with pytest.raises(ValueError):
        rating_candidates(1)


def hand_selectit(prompts: list[str], levels: int, alpha: float) -> tuple[float, list[list[float]]]:
    """SelectIT by hand: a plain unpadded forward per prompt, softmax over the K digit logits."""
    model, tok = get_model("tiny", "float32", "cpu")
    digit_ids = tok.convert_tokens_to_ids([str(k) for k in range(1, levels + 1)])
    token_scores, all_probs = [], []
    for text in prompts:
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1].double()
        p = torch.softmax(logits[digit_ids], dim=0).tolist()
        base = p.index(max(p))
        token_scores.append((base + 1) * sum(p[base] - q for q in p) / (levels - 1))
        all_probs.append(p)
    return statistics.mean(token_scores) / (1 + alpha * statistics.pstdev(token_scores)), all_probs


@pytest.mark.parametrize(("n_prompts", "levels", "alpha"), [(1, 5, 0.2), (3, 4, 0.2), (2, 7, 1.5), (5, 5, 0.2)])
def test_rater_equals_hand_computation_from_logits(n_prompts, levels, alpha):
    # Prepare
    rcfg = RaterConfig(name="sit", kind="selectit", model="tiny", dtype="float32", batch_size=4,
                       selectit_prompts=n_prompts, selectit_levels=levels, selectit_alpha=alpha)
    rater = SelectITRater(rcfg)
    # Execute
    ratings = rater.rate(SAMPLES)
    # Assert: K_prompts and K_levels are independent; all K probabilities match, not only the top ones
    for sample, rating in zip(SAMPLES, ratings, strict=True):
        expected, probs = hand_selectit([p.render(sample) for p in rater.prompts], levels, alpha)
        assert rating.reason == ""
        assert len(rating.extra["probs"]) == n_prompts
        assert all(len(p) == levels for p in rating.extra["probs"])
        for got, want in zip(rating.extra["probs"], probs, strict=True):
            assert got == pytest.approx(want, abs=1e-5)
        assert rating.score == pytest.approx(expected, abs=1e-5)
        assert all(0 < m < 1 for m in rating.extra["mass"])
