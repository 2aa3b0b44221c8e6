"""Exact FP32 re-scoring of per-query candidate windows, the top k of each window, and the proof that the window
held the true top k.

Every final distance of a top-k search comes from here: one per-pair FP32 kernel (faiss ``fvec_inner_product`` /
``fvec_L2sqr``) on the same prepared rows, so the exact and the compressed searches give bit-identical distances
for the same pair, whatever block sizes or BLAS threads found the candidates. Gallery rows arrive block by block
(from memory or from a row file); the candidates that fall in a block are scored there, so no gathered copy of the
candidate rows is ever held.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, Tuple

import faiss
import numpy as np

RowBlocks = Iterable[Tuple[int, np.ndarray]]
# Unit roundoff of float32: a d-term float32 dot product is within d * U * sum|q_i g_i| of the real one.
U_FLOAT32 = 2.0**-24


def rounding_slack(dim: int, q_norm: np.ndarray, max_row_norm: float) -> np.ndarray:
    """A generous bound on how far two float32 computations of one score can differ (any summation order)."""
    return 4.0 * dim * U_FLOAT32 * (q_norm + max_row_norm) ** 2


def _block_offsets(ids: np.ndarray, block_rows: int, num_blocks: int, chunk: int = 1024):
    """Per query row: where each gallery block's candidates start in the (sorted) row, and how many there are."""
    counts = np.zeros((len(ids), num_blocks), dtype=np.int32)
    for s in range(0, len(ids), chunk):  # chunked: the (rows x window) keys would rival the window itself
        keys = np.arange(min(chunk, len(ids) - s))[:, None] * num_blocks + ids[s : s + chunk] // block_rows
        counts[s : s + chunk] = np.bincount(keys.ravel(), minlength=keys.shape[0] * num_blocks).reshape(-1, num_blocks)
    starts = np.zeros_like(counts)
    np.cumsum(counts[:, :-1], axis=1, out=starts[:, 1:])
    return starts, counts


def _kernel(metric: str):
    # Inner products for cosine; for euclidean the direct squared L2, more accurate than |q|^2 + |g|^2 - 2 q.g.
    return faiss.fvec_inner_products_by_idx if metric == "cosine" else faiss.fvec_L2sqr_by_idx


def _to_distances(raw: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        return np.subtract(np.float32(1.0), raw, out=raw)
    return np.sqrt(np.maximum(raw, 0.0, out=raw), out=raw)


class _Candidates:
    """Each query's candidates, cut by gallery block: the local row ids inside a block, ``-1`` padded."""

    def __init__(self, ids: Optional[np.ndarray], num_query: int, num_rows: int, block_rows: int):
        self.ids, self.num_query = ids, num_query
        if ids is not None:
            self.starts, self.counts = _block_offsets(ids, block_rows, -(-num_rows // block_rows))

    def in_block(self, b: int, first: int, num: int) -> np.ndarray:
        """(num_query, width) local ids of block ``b`` (rows ``first .. first + num``)."""
        if self.ids is None:  # every row is a candidate
            return np.ascontiguousarray(np.broadcast_to(np.arange(num, dtype=np.int64), (self.num_query, num)))
        width = self.counts[:, b]
        cols = np.arange(int(width.max()))
        pos = np.minimum(self.starts[:, b : b + 1] + cols, self.ids.shape[1] - 1)
        return np.where(cols < width[:, None], np.take_along_axis(self.ids, pos, axis=1) - first, -1)


def rescore_topk(qn: np.ndarray, blocks: RowBlocks, num_rows: int, ids: Optional[np.ndarray], metric: str,
                 block_rows: int, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The k nearest of each query's candidates by FP32 distance, in (distance, gallery index) order.

    Args:
        qn: (num_query, dim) float32 queries, prepared as the rows are (L2-normalised for cosine).
        blocks: ``(first_row, rows)`` over the whole gallery in order, ``block_rows`` rows each.
        num_rows: gallery size.
        ids: (num_query, window) int64 candidate indices, each row sorted ascending (``window >= k``);
            None = every gallery row.
        metric: ``"cosine"`` (rows and queries are unit vectors) or ``"euclidean"``.
        k: neighbours kept per query.

    Returns:
        ``(topk_dist, topk_idx)``: (num_query, k) float32 distances (``compute_distance`` scale) and int64 indices.
    """
    num_q = len(qn)
    candidates = _Candidates(ids, num_q, num_rows, block_rows)
    top_d = np.empty((num_q, k), dtype=np.float32)
    top_i = np.empty((num_q, k), dtype=np.int64)
    heaps = faiss.float_maxheap_array_t()  # keeps the k smallest distances
    heaps.k, heaps.nh, heaps.val, heaps.ids = k, num_q, faiss.swig_ptr(top_d), faiss.swig_ptr(top_i)
    heaps.heapify()
    for b, (first, rows) in enumerate(blocks):
        local = candidates.in_block(b, first, len(rows))
        if local.shape[1] == 0:
            continue
        raw = np.zeros(local.shape, dtype=np.float32)
        _kernel(metric)(faiss.swig_ptr(raw), faiss.swig_ptr(qn), faiss.swig_ptr(rows), faiss.swig_ptr(local),
                        qn.shape[1], num_q, local.shape[1])
        dist = _to_distances(raw, metric)
        dist[local < 0] = np.inf  # never enters a heap (faiss 1.15 writes +-inf there; older versions skip)
        gids = np.where(local < 0, -1, local + first)
        # Columns are in gallery order and blocks come in order, and a heap replaces its worst entry only on a
        # strictly smaller distance: among equal distances at the cut the lowest gallery index stays.
        heaps.addn_with_ids(local.shape[1], faiss.swig_ptr(dist), faiss.swig_ptr(gids), local.shape[1])
    heaps.reorder()
    order = np.lexsort((top_i, top_d), axis=-1)
    return np.take_along_axis(top_d, order, axis=1), np.take_along_axis(top_i, order, axis=1)


def kth_scores(topk_dist: np.ndarray, qn: np.ndarray, metric: str) -> np.ndarray:
    """The search score (cosine: q.g; euclidean: ``2 q.g - |g|^2``) of each query's k-th re-scored entry."""
    d_k = topk_dist[:, -1].astype(np.float64)
    if metric == "cosine":
        return 1.0 - d_k
    return np.einsum("ij,ij->i", qn, qn, dtype=np.float64) - d_k**2


def proven_complete(topk_dist: np.ndarray, qn: np.ndarray, outside_max: np.ndarray, bound: np.ndarray,
                    metric: str) -> np.ndarray:
    """True where no gallery entry outside the window can reach the top k.

    An outside entry's search score is at most ``outside_max`` and its FP32 score at most ``bound`` more.
    Strictly below the k-th re-scored score means it can neither beat nor tie the k-th entry (a tie with a lower
    gallery index would rank before it).
    """
    return outside_max + bound < kth_scores(topk_dist, qn, metric)


def memory_blocks(g: np.ndarray, block_rows: int, prepare) -> Iterator[Tuple[int, np.ndarray]]:
    """``(first_row, prepare(rows))`` over an in-memory gallery."""
    for start in range(0, len(g), block_rows):
        yield start, prepare(g[start : start + block_rows])
