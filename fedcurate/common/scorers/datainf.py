"""DataInf scorer (Kwon et al., ICLR 2024, "DataInf: Efficiently Estimating Data Influence in LoRA-tuned
LLMs and Diffusion Models"), a CLUES baseline: closed-form influence of a sample on the anchor loss,

    IF(z) = - sum_l < hvp_l, g_zl >,   hvp_l ~ (G_l + lambda_l I)^-1 v_l   per LoRA module l

(equations in fedcurate.common.dynamics.datainf), at the last checkpoint, with the Hessian
approximation taken over the samples the checkpoints were trained on (train.jsonl beside them) and
lambda_l = dynamics.datainf-lambda-scale * mean squared gradient entry of module l. The score is -IF:
higher means the sample lowers the anchor loss more. Needs the same inputs as the `clues` scorer
(without them every sample fails with the reason).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fedcurate.common.config import Config
from fedcurate.common.data.sample import Sample
from fedcurate.common.dynamics.datainf import datainf_hvp, datainf_scores
from fedcurate.common.dynamics.prepare import load_anchor, load_dynamics, load_train, missing_inputs
from fedcurate.common.dynamics.scoring import Grads
from fedcurate.common.scorers.base import SCORERS, failed

logger = logging.getLogger(__name__)


@SCORERS.register("datainf")
class DataInfScorer:
    """-DataInf influence on the anchor loss (higher = more helpful), per LoRA module."""

    name = "datainf"
    higher_is_better = True

    def __init__(self, config: Config) -> None:
        self.config = config
        self._hvp: Grads | None = None

    def score_batch(self, samples: Sequence[Sample]) -> list[float]:
        if not samples:
            return []
        why = missing_inputs(self.config, need_train=True)
        if why:
            logger.warning("scorer datainf: %s", why)
            return [failed(why)] * len(samples)
        dm, ckpts = load_dynamics(self.config)
        d = self.config.dynamics
        if self._hvp is None:
            self._hvp = datainf_hvp(dm, load_train(self.config), ckpts[-1], d.datainf_lambda_scale,
                                    load_anchor(self.config), d.modules)
        return datainf_scores(dm, samples, ckpts[-1], self._hvp, d.modules)
