"""k-nearest neighbours for DS2: one candidate list per sample (faiss), then kNN within subsamples.

Embeddings are L2-normalised, so the inner product is the cosine similarity and the distance is
d = 1 - sim. `candidate_neighbours` computes each sample's M nearest candidates over the whole set
once (memory O(N * M) plus one block of queries, never N x N): exact faiss `IndexFlatIP` by default;
for large N an approximate IVF (k-means cells, searched cell by cell with one GEMM each) or faiss
HNSW. Order is deterministic: the sample itself first (similarity set to exactly 1, distance 0),
then by similarity descending, then by lower index -- so exact duplicate embeddings follow their
lowest-index copy.

`subsample_knn` gives every member of a round's subsample S its k nearest neighbours *within S*
(self first): the first candidates that fall in S, counted with multiplicity when a sample is drawn
twice (the duplicated-rows compatibility mode; the second copy is the "twin", at distance 0).
Members with fewer than k candidates in S fall back to exact brute force against S, so the result
equals brute force over S up to ties in similarity. All of it is vectorised numpy: no Python loop
over samples.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import NamedTuple

import faiss
import numpy as np
from tqdm.auto import tqdm

from fedcurate.common.io import write_with

logger = logging.getLogger(__name__)

_QUERY_BLOCK = 8192  # query rows per faiss call: bounds the block's result arrays
_GEMM_ELEMENTS = 1 << 26  # similarities per IVF cell product (256 MB of float32)
_FALLBACK_BLOCK = 256  # rows per brute-force block: 256 x |S| float32 similarities (~50 MB at 50k)


class Candidates(NamedTuple):
    """Candidate neighbours of every sample; column 0 is the sample itself."""

    idx: np.ndarray  # int64 [N, M]
    sims: np.ndarray  # float32 [N, M], cosine similarity; column 0 is exactly 1


class SubsampleKnn(NamedTuple):
    """Neighbours within one subsample, one row per member, self (and a twin, if drawn) first."""

    idx: np.ndarray  # int64 [m, k], sample ids
    sims: np.ndarray  # float32 [m, k]
    fallback: int  # members that needed brute force


@functools.lru_cache(maxsize=256)
def candidates_needed(num_total: int, m: int, k: int, target: float = 1e-3, cap: int = 1024) -> int:
    """Smallest M such that a member has fewer than k of its M candidates in S with prob <= target.

    Each other candidate is in a subsample of m out of N with probability q = m / N (binomial model).
    """
    q = min(1.0, m / max(num_total, 1))
    if q >= 1.0:
        return k
    for size in range(k, cap + 1):
        n = size - 1  # candidates besides self
        tail = sum(math.comb(n, j) * q**j * (1 - q) ** (n - j) for j in range(min(k - 1, n + 1)))
        if tail <= target:
            return size
    return cap


def _search_blocks(index: faiss.Index, x: np.ndarray, m: int, desc: str,
                   progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Top-m of every row of x in `index`, in query blocks."""
    sims = np.empty((x.shape[0], m), dtype=np.float32)
    idx = np.empty((x.shape[0], m), dtype=np.int64)
    for start in tqdm(range(0, x.shape[0], _QUERY_BLOCK), desc=desc, disable=not progress):
        stop = min(start + _QUERY_BLOCK, x.shape[0])
        sims[start:stop], idx[start:stop] = index.search(x[start:stop], m)
    return sims, idx


def _exact_search(x: np.ndarray, m: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-m inner products against all rows (faiss IndexFlatIP: blocked GEMM + heaps)."""
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return _search_blocks(index, x, m, "knn candidates (exact)", progress)


def _hnsw_search(x: np.ndarray, m: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-m by a faiss HNSW graph (32 links, efConstruction 64, efSearch 2m)."""
    index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 64
    index.add(x)
    index.hnsw.efSearch = max(2 * m, 64)
    return _search_blocks(index, x, m, "knn candidates (hnsw)", progress)


def _ivf_search(x: np.ndarray, m: int, nlist: int | None, nprobe: int,
                progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-m with k-means cells, searched cell by cell with one GEMM per cell.

    faiss spherical k-means (nlist = 4 sqrt(N) cells, 10 iterations on <= 40 points per cell) assigns
    every sample to a cell; the queries of a cell are compared exactly (torch GEMM + top-k) with all
    samples of the `nprobe` cells whose centroids are nearest to that cell's centroid. Batching the
    queries of a cell turns IVF's per-query scans into matrix products (several times faster on CPU).
    Rows whose probed cells hold fewer than m samples are redone exactly (-1 marks them).
    """
    import torch  # only this index needs it; keeps the exact path numpy + faiss

    n, dim = x.shape
    nlist = nlist or max(1, min(int(4 * math.sqrt(n)), n // 40))
    kmeans = faiss.Kmeans(dim, nlist, niter=10, spherical=True, seed=0, max_points_per_centroid=40)
    kmeans.train(x[np.random.default_rng(0).choice(n, size=min(n, 40 * nlist), replace=False)])
    cell = kmeans.index.search(x, 1)[1][:, 0]
    _, probe = faiss.knn(kmeans.centroids, kmeans.centroids, min(nprobe, nlist),
                         metric=faiss.METRIC_INNER_PRODUCT)
    order = np.argsort(cell, kind="stable")
    starts = np.searchsorted(cell[order], np.arange(nlist + 1))
    sims = np.full((n, m), -np.inf, dtype=np.float32)
    idx = np.full((n, m), -1, dtype=np.int64)
    xt = torch.from_numpy(x)
    for c in tqdm(range(nlist), desc="knn candidates (ivf cells)", disable=not progress):
        queries = order[starts[c]:starts[c + 1]]
        pool = np.concatenate([order[starts[j]:starts[j + 1]] for j in probe[c]])
        if queries.size == 0 or pool.size < m:
            continue
        pool_t = xt[pool].T
        step = max(1, _GEMM_ELEMENTS // pool.size)  # bounds memory when k-means makes a huge cell
        for q in (queries[i:i + step] for i in range(0, queries.size, step)):
            top_sims, top = torch.topk(xt[q] @ pool_t, m, dim=1)
            sims[q], idx[q] = top_sims.numpy(), pool[top.numpy()]
    return sims, idx


def _order(idx: np.ndarray, sims: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Self first, then similarity descending, then lower index; self similarity set to 1."""
    is_self = idx == rows[:, None]
    missing = ~is_self.any(axis=1)
    idx[missing, -1] = rows[missing]  # self not retrieved (duplicates or approximate index)
    is_self[missing, -1] = True
    key = np.where(is_self, np.inf, sims)
    order = np.lexsort((idx, -key), axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    sims = np.take_along_axis(sims, order, axis=1)
    sims[:, 0] = 1.0
    return idx, sims


def candidate_neighbours(emb: np.ndarray, m: int, *, index: str = "exact", nlist: int | None = None,
                         nprobe: int = 16, progress: bool = True) -> Candidates:
    """The M = min(m, N) nearest candidates of every sample (self first), computed once.

    `index`: "exact" (faiss IndexFlatIP), "ivf" (k-means cells searched per cell, see `_ivf_search`;
    `nlist` cells, `nprobe` probed) or "hnsw" (faiss IndexHNSWFlat). Approximate indexes may miss
    true neighbours; rows they leave short are recomputed exactly. N below 640 always runs exactly.
    """
    x = np.ascontiguousarray(emb, dtype=np.float32)
    n = x.shape[0]
    m = min(m, n)
    if index == "ivf" and n >= 640:
        sims, idx = _ivf_search(x, m, nlist, nprobe, progress)
    elif index == "hnsw" and n >= 640:
        sims, idx = _hnsw_search(x, m, progress)
    else:
        if n > 100_000:
            logger.info("knn: exact search over N = %d costs N^2 dim flops; curation.knn_index = \"ivf\" "
                        "is far faster for large N", n)
        sims, idx = _exact_search(x, m, progress)
    short = np.flatnonzero((idx < 0).any(axis=1))
    if short.size:
        logger.info("knn: %d row(s) short of %d approximate candidates; searched exactly", short.size, m)
        sims[short], idx[short] = faiss.knn(x[short], x, m, metric=faiss.METRIC_INNER_PRODUCT)
    for start in range(0, n, _QUERY_BLOCK):
        rows = np.arange(start, min(start + _QUERY_BLOCK, n))
        idx[rows], sims[rows] = _order(idx[rows], sims[rows], rows)
    return Candidates(idx, sims)


def save_candidates(path: str | Path, candidates: Candidates) -> None:
    """Write candidate lists atomically (.npz), so a later phase in another process can reuse them."""

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, idx=candidates.idx, sims=candidates.sims)

    write_with(path, writer)


def load_candidates(path: str | Path) -> Candidates:
    """Candidate lists written by `save_candidates`."""
    with np.load(path) as data:
        return Candidates(data["idx"], data["sims"])


def _slots(cum: np.ndarray, k: int) -> np.ndarray:
    """Per row, the column of the t-th neighbour (t = 0..k-1): the first column with cum > t."""
    rows, width = cum.shape
    big = int(cum[:, -1].max()) + 1
    offset = np.arange(rows, dtype=np.int64) * big
    flat = (cum + offset[:, None]).ravel()
    targets = offset[:, None] + np.arange(k)[None, :]
    return np.searchsorted(flat, targets.ravel(), side="right").reshape(rows, k) - (
        np.arange(rows, dtype=np.int64) * width)[:, None]


def subsample_knn(emb: np.ndarray, candidates: Candidates, members: np.ndarray, k: int) -> SubsampleKnn:
    """The k nearest neighbours of each member of `members` (sample ids) within `members`.

    Column 0 is the member itself; if its id is drawn twice, column 1 is the twin (similarity 1).
    A first pass reads only as many candidate columns as most members need.
    """
    members = np.asarray(members, dtype=np.int64)
    n, width = candidates.idx.shape
    if members.size < k:
        raise ValueError(f"a subsample of {members.size} rows cannot give {k} neighbours per member")
    copies = np.bincount(members, minlength=n).astype(np.int32)
    idx = np.empty((members.size, k), dtype=np.int64)
    sims = np.empty((members.size, k), dtype=np.float32)
    pending = np.arange(members.size)
    narrow = min(width, candidates_needed(n, members.size, k, target=0.02))
    for cols in sorted({narrow, width}):
        cand = candidates.idx[members[pending], :cols]
        cum = np.cumsum(copies[cand], axis=1, dtype=np.int32)
        ok = cum[:, -1] >= k
        rows = pending[ok]
        if rows.size:
            slot = _slots(cum[ok], k)
            idx[rows] = np.take_along_axis(cand[ok], slot, axis=1)
            sims[rows] = np.take_along_axis(candidates.sims[members[rows], :cols], slot, axis=1)
        pending = pending[~ok]
        if pending.size == 0:
            break
    if pending.size:
        idx[pending], sims[pending] = _brute_force(emb, members, pending, k)
    return SubsampleKnn(idx, sims, int(pending.size))


def _brute_force(emb: np.ndarray, members: np.ndarray, rows: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN of members[rows] against all of `members`, with the same order as the candidates."""
    pool = np.ascontiguousarray(emb[members], dtype=np.float32)
    out_idx = np.empty((rows.size, k), dtype=np.int64)
    out_sims = np.empty((rows.size, k), dtype=np.float32)
    for start in range(0, rows.size, _FALLBACK_BLOCK):
        block = rows[start:start + _FALLBACK_BLOCK]
        own = members[block]
        s = pool[block] @ pool.T
        s[members[None, :] == own[:, None]] = np.inf  # self and twin first
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        top_ids, top_sims = members[top], np.take_along_axis(s, top, axis=1)
        order = np.lexsort((top_ids, -top_sims), axis=1)
        out_idx[start:start + block.size] = np.take_along_axis(top_ids, order, axis=1)
        out_sims[start:start + block.size] = np.take_along_axis(top_sims, order, axis=1)
    self_cols = out_idx == members[rows][:, None]
    out_sims[self_cols] = 1.0
    return out_idx, out_sims
