"""Prompt templates, and turning a sample into token ids with a response-only loss mask.

    text = format_prompt(sample, "alpaca")
    enc = encode_example(tokenizer, sample, "alpaca", max_length=512)   # [BOS] prompt response EOS
    batch = collate([enc, ...], pad_id=tokenizer.pad_token_id)         # right-padded tensors

Labels are -100 (ignored by the loss) over BOS and the prompt, so a model is trained and scored on
the response only. Prompt and response are tokenised separately and their ids concatenated, so the
prompt/response boundary is exact (no BPE merge across it); a leading-space artefact of some
SentencePiece tokenizers on the response is the price of that exactness.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from fedcurate.common.data.sample import Sample

IGNORE_INDEX = -100  # label value that torch's cross_entropy skips

ALPACA_HEADER = ("Below is an instruction that describes a task. "
                 "Write a response that appropriately completes the request.")
ALPACA_HEADER_INPUT = ("Below is an instruction that describes a task, paired with an input that provides "
                       "further context. Write a response that appropriately completes the request.")


def alpaca(sample: Sample) -> str:
    """The Stanford Alpaca layout, with or without an input section."""
    if sample.input:
        return (f"{ALPACA_HEADER_INPUT}\n\n### Instruction:\n{sample.instruction}\n\n"
                f"### Input:\n{sample.input}\n\n### Response:\n")
    return f"{ALPACA_HEADER}\n\n### Instruction:\n{sample.instruction}\n\n### Response:\n"


def tulu(sample: Sample) -> str:
    """The Tulu chat layout (one user turn)."""
    return f"<|user|>\n{sample.prompt_text}\n<|assistant|>\n"


def plain(sample: Sample) -> str:
    """Instruction and input, one per line, nothing else."""
    return f"{sample.instruction}\n{sample.input}\n" if sample.input else f"{sample.instruction}\n"


TEMPLATES: dict[str, Callable[[Sample], str]] = {"alpaca": alpaca, "tulu": tulu, "plain": plain}


def format_prompt(sample: Sample, template: str) -> str:
    """The prompt text of `sample` under `template` (everything the model sees before the response)."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; allowed: {', '.join(TEMPLATES)}")
    return TEMPLATES[template](sample)


@dataclass
class Encoded:
    """One tokenised example: `input_ids[:prompt_len]` is BOS + prompt, the rest response (+ EOS)."""

    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX over the prompt; the response ids (and EOS) elsewhere
    prompt_len: int
    truncated: bool = False  # True if anything was cut to fit max_length
    response_len: int = 0  # response tokens kept, EOS not counted


def encode_example(
    tokenizer: PreTrainedTokenizerBase, sample: Sample, template: str, max_length: int,
    with_prompt: bool = True,
) -> Encoded:
    """Token ids and labels for `sample`: [BOS] prompt response EOS, loss on response and EOS only.

    `with_prompt=False` encodes [BOS] response EOS (the unconditional case IFD needs). BOS is used
    whenever the tokenizer has one. To fit `max_length`, the prompt is cut from the left first (its
    end, next to the response, is kept); a response that alone does not fit loses its prompt entirely
    and is cut from the right, without EOS (the answer did not end there).
    """
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    if max_length < len(bos) + 1:
        raise ValueError(f"max_length = {max_length}: must leave room for at least one response token")
    prompt = _ids(tokenizer, format_prompt(sample, template)) if with_prompt else []
    response = _ids(tokenizer, sample.response)
    eos = [tokenizer.eos_token_id]
    budget = max_length - len(bos)
    truncated = len(prompt) + len(response) + len(eos) > budget
    if truncated:
        if len(response) + len(eos) <= budget:
            keep = budget - len(response) - len(eos)
            prompt = prompt[len(prompt) - keep:]
        else:
            prompt, response, eos = [], response[:budget], []
    prefix = bos + prompt
    return Encoded(
        input_ids=prefix + response + eos,
        labels=[IGNORE_INDEX] * len(prefix) + response + eos,
        prompt_len=len(prefix),
        truncated=truncated,
        response_len=len(response),
    )


def collate(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: `input_ids` with `pad_id`, `labels` with IGNORE_INDEX, plus `attention_mask`."""
    width = max(len(e.input_ids) for e in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, enc in enumerate(batch):
        n = len(enc.input_ids)
        input_ids[row, :n] = torch.tensor(enc.input_ids, dtype=torch.long)
        labels[row, :n] = torch.tensor(enc.labels, dtype=torch.long)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
