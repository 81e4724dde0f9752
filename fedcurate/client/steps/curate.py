"""Steps `curate/counts` and `curate/apply` at a site (DS2, federated): the consensus counts of the site's
raw ratings among embedding neighbours, then detection and correction with the federation's T and p.

    reply = step_curate_counts(cfg, where, Payload(), out)            # K^3 counts
    reply = step_curate_apply(cfg, where, Payload(arrays={"T": T, "p": p}), out)

Protocol: `common/protocol/curate.py`; server side: `server/phases/curate.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedcurate.client.site import SiteLocation, site_samples
from fedcurate.common import io
from fedcurate.common.config import Config
from fedcurate.common.protocol import layout
from fedcurate.common.protocol.payload import Payload


def ratings_and_embeddings(cfg: Config, site_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from fedcurate.common.curation.embeddings import embed_samples
    from fedcurate.common.curation.run import raw_ratings

    samples = site_samples(site_dir)
    cache = layout.site_cache_dir(site_dir)
    raw = raw_ratings(samples, cfg, None, cache)
    emb = embed_samples(samples, cfg.curation, cache / "embeddings")
    return raw, emb


def step_curate_counts(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    from fedcurate.common.curation.ds2 import site_counts

    raw, emb = ratings_and_embeddings(cfg, where.site_dir)
    counts = site_counts(emb, raw, cfg.curation, progress=False)
    return Payload({"rows": int(counts.rows), "num-classes": counts.num_classes,
                    "num-rated": int(np.isfinite(raw).sum())}, {"third": counts.third.astype(np.int64).ravel()})


def step_curate_apply(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    from fedcurate.common.curation.ds2 import curate

    raw, emb = ratings_and_embeddings(cfg, where.site_dir)
    result = curate(emb, raw, payload.arrays["T"], payload.arrays["p"], cfg.curation, progress=False)
    io.write_npz(out / "curation.npz", {"raw": result.raw, "curated": result.curated, "longtail": result.longtail})
    changed = np.isfinite(result.raw) & (result.curated != result.raw)
    return Payload({"flagged": int(result.detection.flagged.sum()), "changed": int(changed.sum())})
