"""The perplexity and IFD scorers: registry, the Scorer contract, values, and IFD's failure rule."""

from __future__ import annotations

import math
import random
import string
from collections.abc import Iterator

import pytest
import torch

from fedcurate.common.config import Config, ModelConfig
from fedcurate.common.data.sample import Sample
from fedcurate.common.models.lm_loss import response_nll
from fedcurate.common.models.loading import ModelLoadError, clear_model_cache, get_model
from fedcurate.common.models.tiny import build_tiny_model
from fedcurate.common.scorers.base import SCORERS, Scorer, failed, failure_reason
from fedcurate.common.scorers.ifd import IFDScorer, ifd_from_nll
from fedcurate.common.scorers.perplexity import PerplexityScorer

IFD_REASON = ">= 1: instruction does not help predict the response"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny model runs as fast on one thread, and far faster when other processes share the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = str(build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=7))
    yield path
    clear_model_cache()


def _config(path: str, batch_size: int = 4, template: str = "alpaca") -> Config:
    return Config(model=ModelConfig(name_or_path=path, template=template, max_length=96,
                                    batch_size=batch_size, device="cpu"))


def _samples(n: int = 10) -> list[Sample]:
    rng = random.Random(1)
    text = lambda k: "".join(rng.choices(string.ascii_lowercase + " ", k=k))  # noqa: E731
    return [Sample(id=str(i), instruction=f"Echo: {text(rng.randint(3, 30))}", response=text(rng.randint(1, 25)))
            for i in range(n)]


@pytest.mark.parametrize(("name", "cls", "higher"), [("perplexity", PerplexityScorer, False),
                                                     ("ifd", IFDScorer, True)])
def test_registered_with_name_and_direction(name: str, cls: type, higher: bool, tiny_path: str) -> None:
    # Execute
    scorer = SCORERS.get(name)(_config(tiny_path))
    # Assert
    assert SCORERS.get(name) is cls
    assert isinstance(scorer, Scorer)
    assert (scorer.name, scorer.higher_is_better) == (name, higher)


@pytest.mark.parametrize("cls", [PerplexityScorer, IFDScorer])
def test_contract_one_float_per_sample_same_order_batch_invariant(cls: type, tiny_path: str) -> None:
    # Prepare
    samples = _samples()
    # Execute
    by_4 = cls(_config(tiny_path, batch_size=4)).score_batch(samples)
    by_1 = cls(_config(tiny_path, batch_size=1)).score_batch(samples)
    reversed_scores = cls(_config(tiny_path, batch_size=3)).score_batch(samples[::-1])
    # Assert
    assert len(by_4) == len(samples) and all(isinstance(v, float) for v in by_4)
    assert by_1 == pytest.approx(by_4, rel=1e-4, nan_ok=True)
    assert reversed_scores[::-1] == pytest.approx(by_4, rel=1e-4, nan_ok=True)
    assert [failure_reason(v) for v in by_1] == [failure_reason(v) for v in by_4]
    assert len({round(v, 6) for v in by_4 if not math.isnan(v)}) > 1


@pytest.mark.parametrize("cls", [PerplexityScorer, IFDScorer])
def test_no_samples_give_no_scores_and_load_nothing(cls: type) -> None:
    # Execute / Assert
    assert cls(_config("/no/such/model/dir")).score_batch([]) == []


@pytest.mark.parametrize("cls", [PerplexityScorer, IFDScorer])
def test_model_loads_lazily_on_first_score_batch(cls: type) -> None:
    # Prepare
    scorer = cls(_config("/no/such/model/dir"))  # constructing must not touch the model
    # Execute / Assert
    with pytest.raises(ModelLoadError, match="does not exist"):
        scorer.score_batch(_samples(1))


def test_perplexity_is_exp_of_response_nll(tiny_path: str) -> None:
    # Prepare
    samples = _samples()
    model, tok = get_model(tiny_path, "float32", "cpu")
    nll = response_nll(model, tok, samples, "tulu", max_length=96, batch_size=2)
    # Execute
    ppl = PerplexityScorer(_config(tiny_path, template="tulu")).score_batch(samples)
    # Assert
    assert ppl == pytest.approx([math.exp(v) for v in nll], rel=1e-6)
    assert all(1.0 < v < 200.0 for v in ppl)  # a random model over ~100 chars: near-uniform


def test_ifd_is_ratio_of_perplexities_and_fails_at_or_above_one(tiny_path: str) -> None:
    # Prepare
    samples = _samples(16)
    model, tok = get_model(tiny_path, "float32", "cpu")
    cond = response_nll(model, tok, samples, "alpaca", 96, 4, with_prompt=True)
    alone = response_nll(model, tok, samples, "alpaca", 96, 4, with_prompt=False)
    # Execute
    scores = IFDScorer(_config(tiny_path)).score_batch(samples)
    # Assert
    for score, c, a in zip(scores, cond, alone, strict=True):
        ratio = math.exp(c) / math.exp(a)
        if ratio < 1.0:
            assert score == pytest.approx(ratio, rel=1e-6)
        else:
            assert failure_reason(score) == f"ifd={ratio:.3f} {IFD_REASON}"
    assert any(math.isnan(v) for v in scores) and any(not math.isnan(v) for v in scores)  # both branches


def test_empty_response_fails_in_both_scorers(tiny_path: str) -> None:
    # Prepare
    samples = [*_samples(2), Sample(id="e", instruction="Say nothing.", response="")]
    # Execute
    ppl = PerplexityScorer(_config(tiny_path)).score_batch(samples)
    ifd = IFDScorer(_config(tiny_path)).score_batch(samples)
    # Assert
    assert failure_reason(ppl[2]) == failure_reason(ifd[2]) == "empty response after truncation"
    assert not math.isnan(ppl[0]) and not math.isnan(ppl[1])


@pytest.mark.parametrize(("cond", "alone", "expected"), [
    (2.0, 3.0, math.exp(-1.0)),
    (0.5, 0.6, math.exp(-0.1)),
])
def test_ifd_from_nll_valid(cond: float, alone: float, expected: float) -> None:
    # Execute / Assert
    assert ifd_from_nll(cond, alone) == pytest.approx(expected)


@pytest.mark.parametrize(("cond", "alone", "reason"), [
    (3.0, 2.0, f"ifd=2.718 {IFD_REASON}"),
    (2.0, 2.0, f"ifd=1.000 {IFD_REASON}"),
    (900.0, 1.0, f"ifd=inf {IFD_REASON}"),
    (failed("empty response after truncation"), 1.0, "empty response after truncation"),
    (1.0, failed("empty response after truncation"), "empty response after truncation"),
])
def test_ifd_from_nll_failures_carry_reasons(cond: float, alone: float, reason: str) -> None:
    # Execute
    value = ifd_from_nll(cond, alone)
    # Assert
    assert math.isnan(value)
    assert failure_reason(value) == reason


def test_scorers_share_one_loaded_model(tiny_path: str) -> None:
    # Prepare
    samples = _samples(2)
    PerplexityScorer(_config(tiny_path)).score_batch(samples)
    first = get_model(tiny_path, "float32", "cpu")[0]
    # Execute
    IFDScorer(_config(tiny_path)).score_batch(samples)
    # Assert
    assert get_model(tiny_path, "float32", "cpu")[0] is first
