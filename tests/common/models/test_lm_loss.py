"""Batched response NLL equals a one-sample-at-a-time reference, in input order."""

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
from fedcurate.common.models.templates import encode_example
from fedcurate.common.models.tiny import build_tiny_model
from fedcurate.common.scorers.base import failure_reason


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny model runs as fast on one thread, and far faster when other processes share the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_and_tok(tmp_path_factory: pytest.TempPathFactory) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    path = build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=3)
    return load_model_and_tokenizer(str(path), device="cpu")


def _samples(n: int, seed: int = 0) -> list[Sample]:
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_letters + " ,.", k=rng.randint(1, 40))) for _ in range(2 * n)]
    return [Sample(id=str(i), instruction=words[2 * i], response=words[2 * i + 1],
                   input="ctx" if i % 3 == 0 else "") for i in range(n)]


def _reference_nll(model: PreTrainedModel, tok: PreTrainedTokenizerBase, sample: Sample, template: str,
                   max_length: int, with_prompt: bool) -> float:
    """Independent reference: one unpadded sample, log-softmax and gather, mean over labelled positions."""
    enc = encode_example(tok, sample, template, max_length, with_prompt)
    ids = torch.tensor([enc.input_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    terms = [-logprobs[t - 1, label].item() for t, label in enumerate(enc.labels) if t > 0 and label >= 0]
    return sum(terms) / len(terms)


@pytest.mark.parametrize("with_prompt", [True, False])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_batched_equals_one_at_a_time(model_and_tok, with_prompt: bool, batch_size: int) -> None:
    # Prepare
    model, tok = model_and_tok
    samples = _samples(11)
    expected = [_reference_nll(model, tok, s, "alpaca", 128, with_prompt) for s in samples]
    # Execute
    got = response_nll(model, tok, samples, "alpaca", max_length=128, batch_size=batch_size,
                       with_prompt=with_prompt)
    # Assert
    assert max(expected) - min(expected) > 1e-3  # distinct values, so a mix-up of order would show
    assert got == pytest.approx(expected, abs=1e-5)


def test_conditioning_on_the_prompt_changes_the_nll(model_and_tok) -> None:
    # Prepare
    model, tok = model_and_tok
    samples = _samples(4)
    # Execute
    cond = response_nll(model, tok, samples, "alpaca", 128, 4, with_prompt=True)
    alone = response_nll(model, tok, samples, "alpaca", 128, 4, with_prompt=False)
    # Assert
    assert all(abs(c - a) > 1e-6 for c, a in zip(cond, alone, strict=True))


def test_empty_response_fails_with_reason_and_others_are_scored(model_and_tok) -> None:
    # Prepare
    model, tok = model_and_tok
    samples = _samples(3)
    samples[1] = Sample(id="empty", instruction="Say nothing.", response="")
    # Execute
    nll = response_nll(model, tok, samples, "plain", 64, 2)
    # Assert
    assert math.isnan(nll[1])
    assert failure_reason(nll[1]) == "empty response after truncation"
    assert all(math.isfinite(v) and v > 0 for v in (nll[0], nll[2]))


def test_truncated_samples_are_scored_on_what_fits(model_and_tok) -> None:
    # Prepare
    model, tok = model_and_tok
    samples = [Sample(id="long", instruction="x" * 200, response="y" * 100)]
    # Execute
    got = response_nll(model, tok, samples, "alpaca", max_length=32, batch_size=1)
    # Assert
    assert got == pytest.approx([_reference_nll(model, tok, samples[0], "alpaca", 32, True)], abs=1e-5)


def test_no_samples_give_no_scores(model_and_tok) -> None:
    # Prepare
    model, tok = model_and_tok
    # Execute / Assert
    assert response_nll(model, tok, [], "alpaca", 64, 4) == []


def test_saved_and_reloaded_model_gives_the_same_nll(tmp_path: Path, model_and_tok) -> None:
    # Prepare
    model, tok = model_and_tok
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, tok2 = load_model_and_tokenizer(str(tmp_path), device="cpu")
    samples = _samples(5)
    # Execute
    first = response_nll(model, tok, samples, "tulu", 96, 2)
    second = response_nll(again, tok2, samples, "tulu", 96, 5)
    # Assert
    assert first == pytest.approx(second, abs=1e-5)
