"""Step `prepare` at a site: load and validate the data; rate and embed it now when a scorer will need it
(both are cached), so failures show up before any federated computation. Replies with counts only.

    reply = step_prepare(cfg, where, Payload(), out)

Protocol: `common/protocol/prepare.py`; server side: `server/phases/prepare.py`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedcurate.client.site import SiteLocation, labels_of, prepare, site_samples
from fedcurate.client.steps.curate import ratings_and_embeddings
from fedcurate.common.config import Config
from fedcurate.common.data.sample import Sample
from fedcurate.common.protocol import layout
from fedcurate.common.protocol.curate import DS2_SCORERS
from fedcurate.common.protocol.payload import Payload


def step_prepare(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    result = prepare(where.site, where.data_path, where.site_dir, cfg)
    values: dict[str, Any] = {"num-samples": result.num_samples, "num-rejects": result.num_rejects,
                              "rejects-by-reason": result.rejects_by_reason}
    samples = site_samples(where.site_dir)
    labels = labels_of(samples)
    if labels is not None:  # synthetic data only: ground truth for the benchmark's precision
        values["num-clean"] = int(labels.sum())
    values.update(_prepare_ratings_and_embeddings(cfg, samples, where.site_dir))
    return Payload(values)


def _prepare_ratings_and_embeddings(cfg: Config, samples: Sequence[Sample], site_dir: Path) -> dict[str, Any]:
    """Rate and embed now when a scorer will need it (both are cached on disk): failures show up in this
    phase's reply, before any federated computation. Replies with counts only: the rating histogram
    (rounded scores) and failures by reason."""
    from fedcurate.common.rating.run import rating_cache_dir

    scorers, out = set(cfg.scoring.scorers), {}
    ratings: np.ndarray | None = None
    if "rating" in scorers and cfg.rating.raters:
        from fedcurate.common.rating.raters import rate_dataset

        result = rate_dataset(samples, cfg.rating, rating_cache_dir(cfg, site_dir))
        ratings = np.asarray(result.columns["rating"], dtype=np.float64)
        out["rating-failures"] = dict(Counter(r.split(":")[0] for r in result.columns["rating_reason"] if r))
    elif DS2_SCORERS & scorers:
        ratings, _ = ratings_and_embeddings(cfg, site_dir)
    if ratings is not None and not cfg.privacy.secure_aggregation:  # a site's own histogram: not under SecAgg
        finite = ratings[np.isfinite(ratings)]
        out["rating-histogram"] = np.bincount(np.clip(np.round(finite), 0, None).astype(np.int64)).tolist()
        out["num-unrated"] = int(ratings.size - finite.size)
    if (DS2_SCORERS | {"longtail"}) & scorers:
        from fedcurate.common.curation.embeddings import embed_samples

        out["embedding-dim"] = int(embed_samples(samples, cfg.curation, layout.site_cache_dir(site_dir) / "embeddings").shape[1])
    return out
