"""Held-out evaluation of a causal LM (a base model, or base + LoRA adapter) on instruction samples.

    result = evaluate_path("runs/x/train/adapter", test_samples, cfg)   # loads model + tokenizer from cfg.model
    result = evaluate_model(model, tok, test_samples, template="alpaca", max_length=512, batch_size=16)
    write_json(run_dir / "eval.json", result.to_json())

Three figures, all on the response only (the labels of `encode_example`: response tokens and EOS):
`loss` is the mean per-token NLL in nats under teacher forcing, pooled over every response token of
every sample (not a mean of per-sample means); `token_accuracy` the share of those tokens where the
argmax of the logits is the reference token; `exact_match` the share of samples whose greedy
generation from the prompt alone equals the reference response, both stripped of surrounding whitespace.

Teacher forcing runs in right-padded batches (each sample's tokens are read through its own label mask).
Generation runs in left-padded batches, so every prompt ends in the last column; position ids follow the
attention mask, so a padded prompt generates what it would alone (checked against batch size 1 in the
tests). It stops at EOS or after the reference length in tokens + `GENERATION_MARGIN`; the margin lets a
model that would run on past the answer be caught (its extra text breaks the match).
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedcurate.common.config import Config
from fedcurate.common.data.sample import Sample
from fedcurate.common.models.loading import load_model_and_tokenizer
from fedcurate.common.models.templates import IGNORE_INDEX, Encoded, collate, encode_example

logger = logging.getLogger(__name__)

GENERATION_MARGIN = 8  # tokens generated past the reference length before giving up on EOS


@dataclass(frozen=True)
class EvalResult:
    """Held-out figures of one model on one sample set; NaN where nothing was measured."""

    num_samples: int  # samples evaluated (with at least one response token)
    loss: float  # mean per-token NLL (nats) of the reference response under teacher forcing
    token_accuracy: float  # share of response tokens where the logits' argmax is the reference token
    exact_match: float  # share of samples whose greedy generation equals the reference (stripped); NaN if off
    num_skipped: int  # samples with no response token after truncation

    def to_json(self) -> dict[str, Any]:
        """A plain dict (NaN stays NaN; `fedcurate.common.io.write_json` writes it as null)."""
        return asdict(self)


def evaluate_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, samples: Sequence[Sample], *, template: str,
    max_length: int, batch_size: int = 16, exact_match: bool = True, max_new_tokens: int | None = None,
) -> EvalResult:
    """Loss, token accuracy and (optionally) exact match of `model` on `samples`.

    Samples are encoded as in training (`encode_example`, prompt cut from the left to fit `max_length`).
    Generation starts from the same (possibly cut) prompt. `max_new_tokens` fixes the generation budget
    of every sample; None gives each sample its reference length in tokens + GENERATION_MARGIN.
    The model is put in eval mode for the call and its previous mode restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}: must be >= 1")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ValueError(f"max_new_tokens = {max_new_tokens}: must be >= 1 or None")
    encoded = [encode_example(tokenizer, s, template, max_length) for s in samples]
    keep = [i for i, e in enumerate(encoded) if _has_response_token(e)]
    if len(keep) < len(samples):
        logger.info("skipped %d of %d samples with no response token after truncation to max_length=%d",
                    len(samples) - len(keep), len(samples), max_length)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            nll_sum, correct, n_tokens = _teacher_forced([encoded[i] for i in keep], model,
                                                         tokenizer.pad_token_id, batch_size)
            matches = (_exact_matches(model, tokenizer, [samples[i] for i in keep], [encoded[i] for i in keep],
                                      batch_size, max_new_tokens) if exact_match else [])
    finally:
        model.train(was_training)
    result = EvalResult(
        num_samples=len(keep),
        loss=nll_sum / n_tokens if n_tokens else math.nan,
        token_accuracy=correct / n_tokens if n_tokens else math.nan,
        exact_match=sum(matches) / len(matches) if matches else math.nan,
        num_skipped=len(samples) - len(keep),
    )
    logger.info("evaluated %d samples (%d skipped): loss %.4f, token accuracy %.4f, exact match %.4f",
                result.num_samples, result.num_skipped, result.loss, result.token_accuracy, result.exact_match)
    return result


def evaluate_path(model_path: str, samples: Sequence[Sample], cfg: Config, *, exact_match: bool = True) -> EvalResult:
    """Load `model_path` (model directory, hub id, 'tiny' or peft adapter directory) and evaluate it.

    dtype, device, template, max_length and batch_size come from `cfg.model`; `cfg.model.name_or_path`
    is not used (the model under test is `model_path`).
    """
    model, tokenizer = load_model_and_tokenizer(model_path, dtype=cfg.model.dtype, device=cfg.model.device)
    model.eval()
    return evaluate_model(model, tokenizer, samples, template=cfg.model.template, max_length=cfg.model.max_length,
                          batch_size=cfg.model.batch_size, exact_match=exact_match)


def is_exact_match(generated: str, reference: str) -> bool:
    """True if the generation equals the reference once both are stripped of surrounding whitespace."""
    return generated.strip() == reference.strip()


def _has_response_token(enc: Encoded) -> bool:
    """At least one response token, and a labelled token with something before it to predict it from."""
    return enc.response_len > 0 and any(label != IGNORE_INDEX for label in enc.labels[1:])


def _teacher_forced(encoded: list[Encoded], model: PreTrainedModel, pad_id: int,
                    batch_size: int) -> tuple[float, int, int]:
    """(summed NLL in nats, correct argmax count, labelled token count) over right-padded batches."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids), reverse=True)  # little padding
    device = next(model.parameters()).device
    nll_sum, correct, n_tokens = 0.0, 0, 0
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="eval loss", unit="batch", disable=not sys.stderr.isatty()):
        batch = collate([encoded[i] for i in order[start:start + batch_size]], pad_id)
        tensors = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"]).logits
        logits, targets = logits[:, :-1].float(), tensors["labels"][:, 1:]  # position t predicts token t + 1
        mask = targets != IGNORE_INDEX
        token_nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
        nll_sum += float(token_nll[mask].double().sum())
        correct += int((logits.argmax(dim=-1) == targets)[mask].sum())
        n_tokens += int(mask.sum())
    return nll_sum, correct, n_tokens


def _exact_matches(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, samples: list[Sample],
                   encoded: list[Encoded], batch_size: int, max_new_tokens: int | None) -> list[bool]:
    """Per sample: does greedy generation from its prompt equal its reference response?"""
    prompts = [e.input_ids[:e.prompt_len] for e in encoded]
    if max_new_tokens is None:
        budgets = [len(tokenizer(s.response, add_special_tokens=False)["input_ids"]) + GENERATION_MARGIN
                   for s in samples]
    else:
        budgets = [max_new_tokens] * len(samples)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit:  # models with learned positions fail past their context; stay inside it
        budgets = [max(1, min(b, int(limit) - len(p))) for b, p in zip(budgets, prompts, strict=True)]
    texts = greedy_generate(model, tokenizer, prompts, budgets, batch_size)
    return [is_exact_match(t, s.response) for t, s in zip(texts, samples, strict=True)]


def greedy_generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Sequence[int]],
                    budgets: Sequence[int], batch_size: int) -> list[str]:
    """Greedy continuation of each prompt (token ids) for at most its budget of tokens, cut at the first EOS.

    Prompts of similar length share a left-padded batch that generates for its largest budget; each row
    is then cut to its own budget, which is what that row alone would give (decoding is causal).
    """
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    out = [""] * len(prompts)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="eval generate", unit="batch", disable=not sys.stderr.isatty()):
        idx = order[start:start + batch_size]
        rows = _generate_batch(model, tokenizer, [prompts[i] for i in idx], max(budgets[i] for i in idx))
        for i, row in zip(idx, rows, strict=True):
            out[i] = _decode_until_eos(tokenizer, row[:budgets[i]])
    return out


def _generate_batch(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[Sequence[int]],
                    budget: int) -> list[list[int]]:
    """The new token ids of each left-padded prompt after `budget` greedy steps (or all rows at EOS)."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids):] = torch.tensor(list(ids), dtype=torch.long)
        attention_mask[row, width - len(ids):] = 1
    out = model.generate(  # type: ignore[operator]
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), max_new_tokens=budget,
        do_sample=False, temperature=None, top_p=None, top_k=None, num_beams=1,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return out[:, width:].tolist()


def _decode_until_eos(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    if tokenizer.eos_token_id in ids:
        ids = ids[:ids.index(tokenizer.eos_token_id)]
    return tokenizer.decode(ids, skip_special_tokens=True)
