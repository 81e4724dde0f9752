"""The `transformers` backend on the tiny model: candidate probabilities from one padded prefill,
batched greedy/sampled generation, tokenizer-resolved candidate ids, per-prompt failures."""

import math

import pytest
import torch

from fedcurate.common.config import RaterConfig
from fedcurate.common.models.loading import get_model
from fedcurate.common.rating.backends.transformers_local import CandidateError, TransformersBackend, left_pad
from fedcurate.common.rating.base import BACKENDS

PROMPTS = [
    "Rate this answer from 1 to 5.\nAnswer: yes\nRating:\n",
    "A much longer prompt, so that the batch needs left padding on the short ones.\nRating:\n",
    "x\n",
]
DIGITS = ["1", "2", "3", "4", "5"]


def backend(batch_size: int = 8) -> TransformersBackend:
    return TransformersBackend(RaterConfig(model="tiny", dtype="float32", batch_size=batch_size))


def plain_last_logits(prompt: str) -> torch.Tensor:
    model, tok = get_model("tiny", "float32", "cpu")
    with torch.no_grad():
        return model(input_ids=tok(prompt, return_tensors="pt")["input_ids"]).logits[0, -1].double()


def test_registered():
    # Execute / Assert
    assert BACKENDS.get("transformers") is TransformersBackend


def test_candidate_probs_equal_an_unpadded_forward():
    # Prepare
    _, tok = get_model("tiny", "float32", "cpu")
    ids = tok.convert_tokens_to_ids(DIGITS)
    # Execute
    out = backend().candidate_probs(PROMPTS, DIGITS)
    # Assert: every row of a left-padded batch matches its prompt alone, for all K candidates
    for prompt, tp in zip(PROMPTS, out, strict=True):
        logits = plain_last_logits(prompt)
        full = torch.softmax(logits, dim=0)
        assert tp.error == ""
        assert list(tp.probs) == pytest.approx(torch.softmax(logits[ids], dim=0).tolist(), abs=1e-5)
        assert tp.mass == pytest.approx(float(full[ids].sum()), rel=1e-4)
        assert sum(tp.probs) == pytest.approx(1.0, abs=1e-6)


def test_batch_size_does_not_change_probabilities():
    # Execute
    one = backend(batch_size=1).candidate_probs(PROMPTS, DIGITS)
    many = backend(batch_size=3).candidate_probs(PROMPTS, DIGITS)
    # Assert
    for a, b in zip(one, many, strict=True):
        assert list(a.probs) == pytest.approx(list(b.probs), abs=1e-5)


def test_candidate_ids_come_from_the_tokenizer():
    # Prepare
    _, tok = get_model("tiny", "float32", "cpu")
    b = backend()
    # Execute
    ids = b.candidate_ids("Rating:\n", ["3", "a"])
    # Assert
    assert ids == tok.convert_tokens_to_ids(["3", "a"])
    with pytest.raises(CandidateError, match="'12' is not a single token"):
        b.candidate_ids("Rating:\n", ["1", "12"])
    with pytest.raises(CandidateError, match="share token ids"):
        b.candidate_ids("Rating:\n", ["1", "1"])


def test_too_long_prompt_fails_alone():
    # Prepare: the tiny model has 512 positions and one token per character
    prompts = [PROMPTS[0], "y" * 600 + "\n", PROMPTS[2]]
    b = backend()
    # Execute
    probs = b.candidate_probs(prompts, DIGITS)
    gens = b.generate(prompts, max_new_tokens=4, temperature=0.0)
    ref = b.candidate_probs([PROMPTS[0], PROMPTS[2]], DIGITS)
    # Assert
    assert probs[1].error.startswith("prompt too long: 602 tokens") and probs[1].probs == ()
    assert gens[1].error.startswith("prompt too long") and gens[1].text == ""
    assert [probs[0].probs, probs[2].probs] == [ref[0].probs, ref[1].probs]
    assert gens[0].error == "" and gens[2].error == ""


def hand_greedy(prompt: str, steps: int) -> str:
    """Greedy decoding by hand: re-run the whole sequence and take the argmax, `steps` times."""
    model, tok = get_model("tiny", "float32", "cpu")
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    new = []
    for _ in range(steps):
        with torch.no_grad():
            nxt = int(model(input_ids=ids).logits[0, -1].argmax())
        if nxt == tok.eos_token_id:
            break
        new.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return tok.decode(new, skip_special_tokens=True)


def test_greedy_generation_matches_hand_decoding_in_a_padded_batch():
    # Execute
    gens = backend(batch_size=3).generate(PROMPTS, max_new_tokens=6, temperature=0.0)
    # Assert
    assert [g.text for g in gens] == [hand_greedy(p, 6) for p in PROMPTS]
    assert all(g.error == "" for g in gens)


def test_sampling_is_seeded():
    # Prepare
    rcfg = RaterConfig(model="tiny", dtype="float32")
    # Execute
    a = TransformersBackend(rcfg, seed=1).generate(PROMPTS, max_new_tokens=12, temperature=1.5)
    b = TransformersBackend(rcfg, seed=1).generate(PROMPTS, max_new_tokens=12, temperature=1.5)
    c = TransformersBackend(rcfg, seed=2).generate(PROMPTS, max_new_tokens=12, temperature=1.5)
    greedy = backend().generate(PROMPTS, max_new_tokens=12, temperature=0.0)
    # Assert
    assert [g.text for g in a] == [g.text for g in b]
    assert [g.text for g in a] != [g.text for g in c]
    assert [g.text for g in a] != [g.text for g in greedy]


def test_left_pad_positions_follow_the_mask():
    # Execute
    batch = left_pad([[5, 6, 7], [8]], pad_id=0, device="cpu")
    # Assert
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]


def test_parameter_count_and_context():
    # Execute
    b = backend()
    # Assert
    assert b.parameter_count() == sum(p.numel() for p in get_model("tiny", "float32", "cpu")[0].parameters())
    assert b.context_limit() == 512
    assert not math.isnan(b.candidate_probs(["z\n"], DIGITS)[0].mass)
