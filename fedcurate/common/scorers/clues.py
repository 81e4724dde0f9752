"""CLUES scorer (Zhao et al., NeurIPS 2024, "CLUES: Collaborative Private-domain High-quality Data
Selection for LLMs via Training Dynamics"): how well a sample's Adam-preconditioned LoRA gradient aligns
with the mean gradient of a clean anchor set, over the training checkpoints (TracIn-CP):

    S(z) = 1/C * sum_c eta_c * < Gamma_c(grad l(theta_c, z)), mean_{a in anchor} grad l(theta_c, a) >

(equations and options in fedcurate.common.dynamics.clues). Higher is better. Needs
`dynamics.anchor-path` and checkpoints from `prepare_checkpoints(cfg, samples)` in
`dynamics.checkpoints-dir` (default <run.dir>/dynamics); without them every sample fails with the
reason (the `select` pipeline prepares the checkpoints). The CLUES global threshold (the mean score of the
anchor samples on the same checkpoints) is set by the server: `selection.mode = "anchor"`.

In a federated run the server sends the checkpoints together with their anchor gradients
(`anchor-gradients.safetensors` beside them); the scorer then uses those and needs no anchor set.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fedcurate.common.config import Config
from fedcurate.common.data.sample import Sample
from fedcurate.common.dynamics.checkpoints import (
    ANCHOR_GRADS_FILE,
    checkpoints_dir,
    list_checkpoints,
    load_anchor_gradients,
)
from fedcurate.common.dynamics.clues import anchor_gradients, clues_scores
from fedcurate.common.dynamics.prepare import load_anchor, load_dynamics, missing_inputs, score_options
from fedcurate.common.dynamics.scoring import Grads
from fedcurate.common.scorers.base import SCORERS, failed

logger = logging.getLogger(__name__)


@SCORERS.register("clues")
class CluesScorer:
    """TracIn-CP alignment of the sample's (Adam-preconditioned) LoRA gradient with the anchor gradient."""

    name = "clues"
    higher_is_better = True

    def __init__(self, config: Config) -> None:
        self.config = config
        self.options = score_options(config)
        self._anchor_grads: list[Grads] | None = None

    def _prepared(self) -> list[Grads]:
        if self._anchor_grads is None:
            dm, ckpts = load_dynamics(self.config)
            given = load_anchor_gradients(checkpoints_dir(self.config), [c.step for c in ckpts])
            self._anchor_grads = (given if given is not None else
                                  anchor_gradients(dm, load_anchor(self.config), ckpts, self.options.modules))
        return self._anchor_grads

    def score_batch(self, samples: Sequence[Sample]) -> list[float]:
        if not samples:
            return []
        why = "" if _has_given_gradients(self.config) else missing_inputs(self.config)
        if why:
            logger.warning("scorer clues: %s", why)
            return [failed(why)] * len(samples)
        grads = self._prepared()
        dm, ckpts = load_dynamics(self.config)
        return clues_scores(dm, samples, ckpts, grads, self.options)


def _has_given_gradients(cfg: Config) -> bool:
    root = checkpoints_dir(cfg)
    return (root / ANCHOR_GRADS_FILE).exists() and bool(list_checkpoints(root))
