"""Instruction-Following Difficulty (IFD) scorer (Li et al., 2024, "From Quantity to Quality:
Boosting LLM Performance with Self-Guided Data Selection for Instruction Tuning", NAACL; Cherry LLM).

    IFD(Q, A) = PPL(A | Q) / PPL(A) = exp( s(A | Q) - s(A) )

where s(A | Q) is the mean response-token NLL with the formatted prompt Q before the answer A, and
s(A) the same with A alone after BOS. This is the perplexity ratio of the released Cherry LLM code
(`ifd_ppl`); the paper's text writes the ratio of the mean losses, s(A|Q) / s(A), which ranks samples
differently but agrees on which side of 1 a sample falls.

A high IFD means the instruction helps little to predict the answer, i.e. the pair is hard to follow
and informative to train on: `higher_is_better = True`, as in the paper. A sample with IFD >= 1 is
one whose instruction does not help at all (typically a mismatched or corrupted response); the
paper discards these, so they get a failed score with the reason rather than a high one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedcurate.common.config import Config
from fedcurate.common.data.sample import Sample
from fedcurate.common.models.lm_loss import response_nll
from fedcurate.common.models.loading import get_model
from fedcurate.common.scorers.base import SCORERS, failed


@SCORERS.register("ifd")
class IFDScorer:
    """PPL(response | prompt) / PPL(response) under `config.model`; loaded on the first `score_batch`."""

    name = "ifd"
    higher_is_better = True

    def __init__(self, config: Config) -> None:
        self.model_config = config.model

    def load(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        m = self.model_config
        return get_model(m.name_or_path, m.dtype, m.device)

    def score_batch(self, samples: Sequence[Sample]) -> list[float]:
        if not samples:
            return []
        model, tokenizer = self.load()
        m = self.model_config
        args = (model, tokenizer, samples, m.template, m.max_length, m.batch_size)
        conditioned = response_nll(*args, with_prompt=True)
        alone = response_nll(*args, with_prompt=False)
        return [ifd_from_nll(c, a) for c, a in zip(conditioned, alone, strict=True)]


def ifd_from_nll(nll_conditioned: float, nll_alone: float) -> float:
    """IFD from the two mean NLLs (nats); failed when either is missing or when IFD >= 1."""
    for value in (nll_conditioned, nll_alone):
        if math.isnan(value):
            return value  # keeps the failure reason
    log_ifd = nll_conditioned - nll_alone
    if log_ifd >= 0.0:
        ifd = math.exp(log_ifd) if log_ifd < 709.0 else math.inf  # 709: largest exp() argument
        return failed(f"ifd={ifd:.3f} >= 1: instruction does not help predict the response")
    return math.exp(log_ifd)
