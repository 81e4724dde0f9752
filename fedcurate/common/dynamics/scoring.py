"""The scoring model and the batching shared by the CLUES, DataInf and LESS scores.

    dm = DynamicsModel(peft_model, tokenizer, "alpaca", max_length=512, batch_size=8)
    data = encode_set(dm, samples)                 # or an EncodedSet of token ids made directly
    for idx in batches(data.items, data.keys, dm.batch_size): ...

Batches go longest first with ties broken by sample id, so the batch a sample lands in (and with it the
padding, the only thing batching could change) depends on the set of samples, not on their order.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from fedcurate.common.data.sample import Sample
from fedcurate.common.models.templates import IGNORE_INDEX, Encoded, encode_example

Grads = dict[str, torch.Tensor]  # LoRA parameter name -> tensor of that parameter's shape


@dataclass(frozen=True)
class DynamicsModel:
    """A PeftModel (LoRA weights swapped in per checkpoint) with how samples are encoded and batched."""

    model: nn.Module
    tokenizer: Any
    template: str
    max_length: int
    batch_size: int = 8

    def encode(self, samples: Sequence[Sample]) -> list[Encoded | None]:
        """Encoded samples; None for one with no response token left to score."""
        out = [encode_example(self.tokenizer, s, self.template, self.max_length) for s in samples]
        return [e if scorable(e) else None for e in out]

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)


@dataclass(frozen=True)
class EncodedSet:
    """Samples already encoded (None = nothing to score), with the keys that order batches (sample ids)."""

    items: list[Encoded | None]
    keys: list[str]

    def __len__(self) -> int:
        return len(self.items)


Samples = Sequence[Sample] | EncodedSet


def encode_set(dm: DynamicsModel, samples: Samples) -> EncodedSet:
    """`samples` encoded with the model's tokenizer and template (unchanged if already encoded)."""
    if isinstance(samples, EncodedSet):
        return samples
    return EncodedSet(dm.encode(samples), [s.id for s in samples])


def scorable(enc: Encoded) -> bool:
    """At least one labelled token that has something before it."""
    return enc.response_len > 0 and any(label != IGNORE_INDEX for label in enc.labels[1:])


def batches(encoded: Sequence[Encoded | None], keys: Sequence[str], batch_size: int) -> Iterator[list[int]]:
    """Indices of scorable samples, longest first (ties by key), in chunks of `batch_size`."""
    order = sorted((i for i, e in enumerate(encoded) if e is not None),
                   key=lambda i: (-len(encoded[i].input_ids), keys[i]))
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def progress_bar(items: Any, desc: str) -> Any:
    """A tqdm bar over `items`, shown only on a terminal."""
    return tqdm(items, desc=desc, unit="batch", leave=False, disable=not sys.stderr.isatty())
