"""Perplexity scorer: how surprising a sample's response is to a reference causal LM, given its prompt.

    PPL(A | Q) = exp( -1/|A| * sum_i log p(a_i | Q, a_<i) )

over the response tokens a_i (and EOS) of answer A, conditioned on the formatted prompt Q. Lower
perplexity means the response is more predictable; `higher_is_better = False`. It is one of the
baselines of DS2 (Pang et al., ICLR 2025, "Improving Data Efficiency via Curating LLM-Driven Rating
Systems": `completion, perplexity, knn, less, full, random, ...`) and of CLUES (NeurIPS 2024).
Unlike DS2's script, padding and the prompt are masked out of the mean, so only the response counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedcurate.common.config import Config
from fedcurate.common.data.sample import Sample
from fedcurate.common.models.lm_loss import response_nll
from fedcurate.common.models.loading import get_model
from fedcurate.common.scorers.base import SCORERS

MAX_EXP_ARG = 709.0  # math.exp overflows a float above this


@SCORERS.register("perplexity")
class PerplexityScorer:
    """exp(mean response NLL | prompt) under `config.model`; loaded on the first `score_batch`."""

    name = "perplexity"
    higher_is_better = False

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
        nll = response_nll(model, tokenizer, samples, m.template, m.max_length, m.batch_size)
        return [v if math.isnan(v) else exp_or_inf(v) for v in nll]


def exp_or_inf(x: float) -> float:
    """exp(x), or +inf where it would overflow."""
    return math.exp(x) if x < MAX_EXP_ARG else math.inf
