"""Per-sample response negative log-likelihood under a causal LM, computed in padded batches.

    nll = response_nll(model, tok, samples, "alpaca", max_length=512, batch_size=8)
    ppl = [math.exp(v) for v in nll]

The value for a sample is the mean, over its response tokens (and EOS), of -log p(token | everything
before it), in nats. Batching never changes it: samples are right-padded, and each sample's tokens
are averaged on their own through the labels mask (checked against batch size 1 in the tests).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedcurate.common.data.sample import Sample
from fedcurate.common.failures import failed
from fedcurate.common.models.templates import IGNORE_INDEX, Encoded, collate, encode_example

logger = logging.getLogger(__name__)


def response_nll(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, samples: Sequence[Sample], template: str,
    max_length: int, batch_size: int, with_prompt: bool = True,
) -> list[float]:
    """Mean response-token NLL (nats) of each sample, same order; `failed(...)` for an empty response.

    `with_prompt=False` scores the response alone (after BOS), as IFD's unconditional term needs.
    Samples are batched longest first (similar lengths share a batch, little padding) and the
    results are put back in input order.
    """
    encoded = [encode_example(tokenizer, s, template, max_length, with_prompt) for s in samples]
    n_cut = sum(e.truncated for e in encoded)
    if n_cut:
        logger.info("%d of %d samples truncated to max_length=%d", n_cut, len(encoded), max_length)
    out: list[float] = [failed("empty response after truncation")] * len(encoded)
    order = sorted((i for i, e in enumerate(encoded) if _scorable(e)),
                   key=lambda i: len(encoded[i].input_ids), reverse=True)
    device = next(model.parameters()).device
    starts = range(0, len(order), batch_size)
    bar = tqdm(starts, desc="response NLL", unit="batch", disable=not sys.stderr.isatty())
    for start in bar:
        idx = order[start:start + batch_size]
        nll = batch_response_nll(model, [encoded[i] for i in idx], tokenizer.pad_token_id, device)
        for i, value in zip(idx, nll, strict=True):
            out[i] = value
    return out


@torch.no_grad()
def batch_response_nll(
    model: PreTrainedModel, batch: list[Encoded], pad_id: int, device: torch.device | str = "cpu",
) -> list[float]:
    """Mean NLL over the labelled tokens of each encoded example in one forward pass."""
    tensors = {k: v.to(device) for k, v in collate(batch, pad_id).items()}
    logits = model(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"]).logits
    # position t predicts token t + 1
    targets = tensors["labels"][:, 1:]
    token_nll = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )  # (batch, seq - 1), zero where ignored
    mask = targets != IGNORE_INDEX
    counts = mask.sum(dim=1)
    assert bool((counts > 0).all()), "every example must have at least one labelled token"
    return (token_nll.sum(dim=1) / counts).tolist()


def _scorable(enc: Encoded) -> bool:
    """At least one response token, and at least one labelled token with something before it."""
    return enc.response_len > 0 and any(label != IGNORE_INDEX for label in enc.labels[1:])
