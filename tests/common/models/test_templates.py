"""Prompt templates, response-only labels, truncation and right-padded collation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcurate.common.data.sample import Sample
from fedcurate.common.models.templates import (
    IGNORE_INDEX,
    TEMPLATES,
    collate,
    encode_example,
    format_prompt,
)
from fedcurate.common.models.tiny import build_tiny_tokenizer

TOK = build_tiny_tokenizer()  # character-level: one id per character, BOS id 1, EOS id 2
BOS, EOS = TOK.bos_token_id, TOK.eos_token_id


def _sample(instruction: str = "Reverse the word: abc", response: str = "cba", input: str = "") -> Sample:
    return Sample(id="s1", instruction=instruction, response=response, input=input)


def _text(ids: list[int]) -> str:
    return TOK.decode(ids)


def test_alpaca_without_input() -> None:
    # Execute
    text = format_prompt(_sample(), "alpaca")
    # Assert
    assert text == ("Below is an instruction that describes a task. Write a response that appropriately "
                    "completes the request.\n\n### Instruction:\nReverse the word: abc\n\n### Response:\n")


def test_alpaca_with_input() -> None:
    # Execute
    text = format_prompt(_sample(instruction="Sort the digits.", input="3142"), "alpaca")
    # Assert
    assert text == ("Below is an instruction that describes a task, paired with an input that provides "
                    "further context. Write a response that appropriately completes the request.\n\n"
                    "### Instruction:\nSort the digits.\n\n### Input:\n3142\n\n### Response:\n")


@pytest.mark.parametrize(("template", "input", "expected"), [
    ("tulu", "", "<|user|>\nAdd 2 and 3.\n<|assistant|>\n"),
    ("tulu", "ctx", "<|user|>\nAdd 2 and 3.\n\nctx\n<|assistant|>\n"),
    ("plain", "", "Add 2 and 3.\n"),
    ("plain", "ctx", "Add 2 and 3.\nctx\n"),
])
def test_tulu_and_plain(template: str, input: str, expected: str) -> None:
    # Execute
    text = format_prompt(_sample(instruction="Add 2 and 3.", input=input), template)
    # Assert
    assert text == expected


def test_unknown_template_lists_the_allowed_ones() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="unknown prompt template 'chatml'; allowed: alpaca, tulu, plain"):
        format_prompt(_sample(), "chatml")


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_encode_is_bos_prompt_response_eos_with_response_only_labels(template: str) -> None:
    # Prepare
    sample = _sample()
    prompt = format_prompt(sample, template)
    # Execute
    enc = encode_example(TOK, sample, template, max_length=512)
    # Assert
    assert enc.input_ids[0] == BOS and enc.input_ids[-1] == EOS
    assert enc.prompt_len == 1 + len(prompt)
    assert _text(enc.input_ids[1:enc.prompt_len]) == prompt
    assert enc.labels[:enc.prompt_len] == [IGNORE_INDEX] * enc.prompt_len
    assert enc.labels[enc.prompt_len:] == enc.input_ids[enc.prompt_len:]
    assert _text(enc.labels[enc.prompt_len:-1]) == "cba"
    assert (enc.truncated, enc.response_len) == (False, 3)


def test_encode_without_prompt_is_bos_response_eos() -> None:
    # Execute
    enc = encode_example(TOK, _sample(), "alpaca", max_length=512, with_prompt=False)
    # Assert
    assert enc.input_ids == [BOS] + TOK("cba", add_special_tokens=False)["input_ids"] + [EOS]
    assert enc.labels == [IGNORE_INDEX] + enc.input_ids[1:]
    assert enc.prompt_len == 1


def test_long_prompt_is_cut_from_the_left_keeping_response_and_eos() -> None:
    # Prepare
    sample = _sample(response="olleh")
    prompt = format_prompt(sample, "alpaca")
    # Execute
    enc = encode_example(TOK, sample, "alpaca", max_length=30)
    # Assert
    assert enc.truncated
    assert len(enc.input_ids) == 30
    assert enc.input_ids[0] == BOS and enc.input_ids[-1] == EOS
    assert _text(enc.input_ids[1:enc.prompt_len]) == prompt[-(30 - 1 - 5 - 1):]  # the prompt's end survives
    assert _text(enc.input_ids[enc.prompt_len:-1]) == "olleh"


def test_too_long_response_loses_the_prompt_and_is_cut_from_the_right_without_eos() -> None:
    # Prepare
    sample = _sample(response="abcdefghijklmnopqrstuvwxyz")
    # Execute
    enc = encode_example(TOK, sample, "alpaca", max_length=10)
    # Assert
    assert enc.truncated
    assert enc.input_ids == [BOS] + TOK("abcdefghi", add_special_tokens=False)["input_ids"]
    assert enc.prompt_len == 1 and enc.response_len == 9
    assert EOS not in enc.labels


def test_empty_response_is_only_eos() -> None:
    # Execute
    enc = encode_example(TOK, _sample(response=""), "plain", max_length=64)
    # Assert
    assert enc.response_len == 0
    assert enc.labels[enc.prompt_len:] == [EOS]


def test_tokenizer_without_bos_gets_no_bos() -> None:
    # Prepare
    tok = build_tiny_tokenizer()
    tok.bos_token = None
    # Execute
    enc = encode_example(tok, _sample(), "plain", max_length=64, with_prompt=False)
    # Assert
    assert enc.input_ids == tok("cba", add_special_tokens=False)["input_ids"] + [EOS]
    assert enc.prompt_len == 0


def test_max_length_must_leave_room_for_the_response() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="max_length = 1"):
        encode_example(TOK, _sample(), "plain", max_length=1)


@settings(max_examples=60, deadline=None)
@given(instruction=st.text(alphabet="abc xyz\n", max_size=40), response=st.text(alphabet="pqr \n", max_size=40),
       max_length=st.integers(min_value=2, max_value=60))
def test_encoding_always_fits_and_keeps_the_response_when_it_can(
    instruction: str, response: str, max_length: int,
) -> None:
    # Prepare
    sample = _sample(instruction=instruction, response=response)
    # Execute
    enc = encode_example(TOK, sample, "plain", max_length=max_length)
    # Assert
    assert len(enc.input_ids) == len(enc.labels) <= max_length
    assert enc.truncated == (1 + len(format_prompt(sample, "plain")) + len(response) + 1 > max_length)
    kept = _text(enc.input_ids[enc.prompt_len:enc.prompt_len + enc.response_len])
    if len(response) + 2 <= max_length:
        assert kept == response and enc.input_ids[-1] == EOS
    else:
        assert kept == response[:max_length - 1]


def test_collate_pads_right_and_masks_padding_in_labels() -> None:
    # Prepare
    short = encode_example(TOK, _sample(response="x"), "plain", max_length=64)
    long = encode_example(TOK, _sample(response="a longer answer"), "plain", max_length=64)
    pad = TOK.pad_token_id
    # Execute
    batch = collate([short, long], pad_id=pad)
    # Assert
    width = len(long.input_ids)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, width)
    n = len(short.input_ids)
    assert batch["input_ids"][0, :n].tolist() == short.input_ids
    assert torch.all(batch["input_ids"][0, n:] == pad)
    assert torch.all(batch["labels"][0, n:] == IGNORE_INDEX)
    assert batch["attention_mask"].sum(dim=1).tolist() == [n, width]
    assert batch["labels"][1].tolist() == long.labels
