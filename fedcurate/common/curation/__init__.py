"""DS2 score curation, Flower-free (notes/ds2_docta.md).

One concept per module: `embeddings` (encoder + disk cache), `knn` (candidate lists, kNN within
subsamples), `sampling` (rated rows, subsample sizes and draws), `hoc` (consensus counts, T and p),
`simifeat` (detection, curated scores), `longtail` (rarity score) and `ds2` (the site pipeline,
centralized DS2 and the DS2 selection).
"""

from fedcurate.common.curation.ds2 import (
    CurationResult,
    curate,
    curate_centralized,
    ds2_select,
    ds2_select_without_curation,
    site_candidates,
    site_counts,
)
from fedcurate.common.curation.hoc import ConsensusCounts, HocResult, consensus_counts, solve_hoc, sum_counts
from fedcurate.common.curation.simifeat import Detection, curated_scores, detect

__all__ = [
    "ConsensusCounts",
    "CurationResult",
    "Detection",
    "HocResult",
    "consensus_counts",
    "curate",
    "curate_centralized",
    "curated_scores",
    "detect",
    "ds2_select",
    "ds2_select_without_curation",
    "site_candidates",
    "site_counts",
    "solve_hoc",
    "sum_counts",
]
