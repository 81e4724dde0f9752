"""LESS-style scorer (Xia et al., ICML 2024, "LESS: Selecting Influential Data for Targeted Instruction
Tuning"), a CLUES baseline: cosine between the randomly projected (d = dynamics.projection-dim, seeded
Rademacher) Adam-preconditioned LoRA gradient of a sample and the projected anchor gradients, averaged
over anchor samples and summed over checkpoints with their learning rates:

    S(z) = 1/C * sum_c eta_c * mean_{a in anchor} cos( P Gamma_c(g_c(z)), P g_c(a) )

(details in fedcurate.common.dynamics.less). Higher is better. Needs the same inputs as `clues` (without
them every sample fails with the reason).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from fedcurate.common.config import Config
from fedcurate.common.data.sample import Sample
from fedcurate.common.dynamics.less import RademacherProjection, less_scores, less_targets
from fedcurate.common.dynamics.prepare import load_anchor, load_dynamics, missing_inputs
from fedcurate.common.scorers.base import SCORERS, failed

logger = logging.getLogger(__name__)


@SCORERS.register("less")
class LessScorer:
    """Projected, preconditioned gradient cosine to the anchor set, over checkpoints."""

    name = "less"
    higher_is_better = True

    def __init__(self, config: Config) -> None:
        self.config = config
        d = config.dynamics
        self.projection = RademacherProjection(d.projection_dim, d.seed)
        self._targets: list[torch.Tensor] | None = None

    def score_batch(self, samples: Sequence[Sample]) -> list[float]:
        if not samples:
            return []
        why = missing_inputs(self.config)
        if why:
            logger.warning("scorer less: %s", why)
            return [failed(why)] * len(samples)
        dm, ckpts = load_dynamics(self.config)
        modules = self.config.dynamics.modules
        if self._targets is None:
            self._targets = less_targets(dm, load_anchor(self.config), ckpts, self.projection, modules)
        return less_scores(dm, samples, ckpts, self._targets, self.projection, modules)
