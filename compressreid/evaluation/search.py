"""Large-gallery evaluation: exact FP32 top-k search in blocks, then rank metrics from the top-k lists alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from compressreid.errors import DataError
from compressreid.evaluation.distance import Features, check_metric
from compressreid.evaluation.rank import RankResult, check_labels, cmc_hits, score_ranked_lists
from compressreid.evaluation.rescore import memory_blocks, proven_complete, rescore_topk, rounding_slack
from compressreid.evaluation.topk_scan import topn_from_blocks


def as_float32_rows(feats: Features, name: str) -> np.ndarray:
    """A C-contiguous float32 numpy view of ``feats`` (copied only when the layout or dtype requires it)."""
    arr = feats.detach().cpu().numpy() if hasattr(feats, "detach") else np.asarray(feats)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise DataError(f"{name} must be a non-empty 2-D (num, dim) array, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def prepare_rows(block: np.ndarray, metric: str, name: str) -> np.ndarray:
    """Check one block and, for cosine, return an L2-normalised copy (the caller's array is never touched)."""
    if not np.isfinite(block).all():
        raise DataError(f"{name} contains NaN or inf")
    if metric != "cosine":
        return block
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    # Same epsilon as torch.nn.functional.normalize, so zero vectors behave as in compute_distance.
    return np.ascontiguousarray(block / np.maximum(norms, 1e-12), dtype=np.float32)


def check_search_inputs(q_feats: Features, g_feats: Features, k: int, metric: str) -> Tuple[np.ndarray, np.ndarray]:
    """The float32 query and gallery arrays of a top-k search, after the checks every search shares."""
    check_metric(metric)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q = as_float32_rows(q_feats, "q_feats")
    g = as_float32_rows(g_feats, "g_feats")
    if q.shape[1] != g.shape[1]:
        raise DataError(f"feature dims differ: query {q.shape[1]}, gallery {g.shape[1]}")
    return q, g


@dataclass
class _GalleryStats:
    max_row_norm: float = 0.0  # of the prepared rows; the rounding bound scales with it


def _fp32_score_blocks(qn: np.ndarray, g: np.ndarray, metric: str, query_chunk: int, gallery_block: int,
                       stats: _GalleryStats):
    """Exact-product score blocks (larger = closer), gallery block by gallery block so each is prepared once.

    Cosine scores are inner products of unit vectors; euclidean ones ``2 q.g - |g|^2``.
    """
    q_rows = qn if metric == "cosine" else qn * np.float32(2.0)  # doubling is exact
    buf = np.empty(min(query_chunk, len(qn)) * min(gallery_block, len(g)), dtype=np.float32)
    for start in range(0, len(g), gallery_block):
        block = prepare_rows(g[start : start + gallery_block], metric, "g_feats")
        sq = np.einsum("ij,ij->i", block, block)
        stats.max_row_norm = max(stats.max_row_norm, float(np.sqrt(sq.max())))
        for qs in range(0, len(qn), query_chunk):
            rows = q_rows[qs : qs + query_chunk]
            out = buf[: len(rows) * len(block)].reshape(len(rows), len(block))  # contiguous for the heaps
            np.matmul(rows, block.T, out=out)  # BLAS sgemm: the product itself is the whole cost
            if metric == "euclidean":
                out -= sq
            yield qs, start, out


def topk_search(
    q_feats: Features,
    g_feats: Features,
    k: int,
    metric: str = "cosine",
    query_chunk: int = 2048,
    gallery_block: int = 8192,
    margin: int = 16,
) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest gallery entries of every query, without a num_query x num_gallery matrix.

    Two passes over the gallery in blocks. First, each block's product with a chunk of queries (BLAS sgemm, on
    L2-normalised copies for cosine) feeds per-query faiss heaps of ``k + margin`` candidates
    (:mod:`topk_scan`). Then the candidates are re-scored with :mod:`rescore`'s per-pair FP32 kernel, the one
    every top-k search's final distances come from, and sorted by (distance, gallery index) like the dense stable
    sort. BLAS and the kernel round differently (by at most :func:`rounding_slack`); a row is kept only where
    that bound proves no entry outside its candidates can reach its top k, and is otherwise re-scored against the
    whole gallery (exact ties at the cut, e.g. duplicate images, are the usual cause).

    Distances are on the :func:`compute_distance` scale (``1 - cos`` or the true L2 distance). Peak extra
    memory is one prepared gallery block, one ``query_chunk x gallery_block`` score block and the heaps.

    Args:
        q_feats: (num_query, dim) features, numpy or torch.
        g_feats: (num_gallery, dim) features.
        k: neighbours per query; reduced to ``num_gallery`` when the gallery is smaller.
        metric: ``"cosine"`` or ``"euclidean"``.
        query_chunk: query rows per product.
        gallery_block: gallery rows per product.
        margin: candidates beyond k kept per query for the rounding proof.

    Returns:
        ``(topk_dist, topk_idx)``: (num_query, k) float32 distances and int64 gallery indices.

    Raises:
        DataError: empty, non-finite or dimension-mismatched features.
        ValueError: unknown metric or ``k < 1``.
    """
    q, g = check_search_inputs(q_feats, g_feats, k, metric)
    num_g = len(g)
    k = min(k, num_g)
    fetch = min(k + margin, num_g)
    qn = prepare_rows(q, metric, "q_feats")
    stats = _GalleryStats()
    blocks = _fp32_score_blocks(qn, g, metric, query_chunk, gallery_block, stats)
    scores, ids = topn_from_blocks(len(q), fetch, np.float32, blocks)
    outside_max = scores[:, -1].astype(np.float64)
    del scores
    ids.sort(axis=1)  # gallery order per row, which rescore_topk's tie rule needs

    def prepared():
        return memory_blocks(g, gallery_block, lambda rows: prepare_rows(rows, metric, "g_feats"))

    topk_d, topk_i = rescore_topk(qn, prepared(), num_g, ids, metric, gallery_block, k)
    if fetch < num_g:
        q_norm = np.sqrt(np.einsum("ij,ij->i", qn, qn, dtype=np.float64))
        bound = rounding_slack(q.shape[1], q_norm, stats.max_row_norm)
        redo = np.flatnonzero(~proven_complete(topk_d, qn, outside_max, bound, metric))
        for s in range(0, len(redo), 64):  # whole-gallery re-scoring of the rows the bound could not settle
            rows = redo[s : s + 64]
            topk_d[rows], topk_i[rows] = rescore_topk(qn[rows], prepared(), num_g, None, metric, gallery_block, k)
    return np.ascontiguousarray(topk_d), np.ascontiguousarray(topk_i)


@dataclass(eq=False)
class TopkRankResult(RankResult):
    """:class:`RankResult` computed from top-k lists, plus which queries the lists did not fully cover.

    Attributes:
        k: length of the top-k lists.
        incomplete_query_mask: True for valid queries with true matches beyond the top k. Their AP, INP and CMC
            assume those matches sit at the very end of the ranking, so they are lower bounds.
    """

    k: int = 0
    incomplete_query_mask: Optional[np.ndarray] = None

    @property
    def num_incomplete(self) -> int:
        return int(self.incomplete_query_mask.sum())

    @property
    def incomplete_query_indices(self) -> np.ndarray:
        return np.flatnonzero(self.incomplete_query_mask)

    @property
    def message(self) -> str:
        """A one-line warning when some queries are incomplete, else an empty string."""
        if not self.num_incomplete:
            return ""
        return (
            f"k={self.k} too small: {self.num_incomplete} of {len(self.incomplete_query_mask)} queries have true "
            f"matches beyond the top {self.k}; their AP is a lower bound"
        )

    def as_dict(self) -> Dict[str, float]:
        out = super().as_dict()
        out["num_incomplete_queries"] = self.num_incomplete
        return out


def _gallery_counts(q_pids, g_pids, q_camids, g_camids) -> Tuple[np.ndarray, np.ndarray]:
    """Per query, over the whole gallery: true matches (same pid, other camera) and junk (same pid and camera)."""

    def count(g_keys, q_keys):
        uniq, counts = np.unique(g_keys, return_counts=True)
        pos = np.minimum(np.searchsorted(uniq, q_keys), len(uniq) - 1)
        return np.where(uniq[pos] == q_keys, counts[pos], 0)

    num_cams = int(max(q_camids.max(), g_camids.max())) + 1
    same_pid = count(g_pids, q_pids)
    junk = count(g_pids * num_cams + g_camids, q_pids * num_cams + q_camids)
    return same_pid - junk, junk


def _check_topk_shapes(topk_dist, topk_idx) -> Tuple[np.ndarray, np.ndarray]:
    topk_dist = np.asarray(topk_dist)
    topk_idx = np.asarray(topk_idx)
    if topk_dist.ndim != 2 or topk_dist.shape != topk_idx.shape or topk_dist.shape[1] == 0:
        raise DataError(f"topk_dist {topk_dist.shape} and topk_idx {topk_idx.shape} must be equal non-empty 2-D")
    if not np.issubdtype(topk_idx.dtype, np.integer):
        raise DataError(f"topk_idx must hold integer gallery indices, got {topk_idx.dtype}")
    return topk_dist, topk_idx.astype(np.int64)


def _check_topk_values(topk_dist: np.ndarray, topk_idx: np.ndarray, num_g: int) -> None:
    if topk_idx.min() < 0 or topk_idx.max() >= num_g:
        raise DataError(f"topk_idx holds indices outside [0, {num_g}) (faiss pads missing results with -1)")
    if np.isnan(topk_dist).any():
        raise DataError("topk_dist contains NaN distances")
    srt = np.sort(topk_idx, axis=1)
    if (srt[:, 1:] == srt[:, :-1]).any():
        raise DataError("topk_idx repeats a gallery index within a row")


def _worst_case_tail(stats, num_rel, num_junk, num_g: int, rows: np.ndarray) -> None:
    """Place the missing matches of ``rows`` at the end of the ranking (in place): the tightest lower bound."""
    for r in rows:
        total = num_g - num_junk[r]  # entries left after junk removal
        found, missing = stats["found"][r], num_rel[r] - stats["found"][r]
        ranks = np.arange(total - missing, total, dtype=np.float64)  # 0-based kept ranks of the missing matches
        stats["ap_sum"][r] += np.sum((found + np.arange(1, missing + 1)) / (ranks + 1.0))
        stats["last"][r] = total - 1
        if found == 0:
            stats["first"][r] = total - missing


def evaluate_rank_topk(
    topk_dist, topk_idx, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50
) -> TopkRankResult:
    """Market1501 metrics from per-query top-k lists, with match counts taken over the whole gallery.

    Each row is re-sorted by (distance, gallery index) so ties rank as in :func:`evaluate_rank`'s stable sort.
    When every true match of every query lies inside its top k, the result equals the dense
    :func:`evaluate_rank_detailed` on the same distances exactly. Otherwise the affected queries are flagged in
    ``incomplete_query_mask`` and ``message``; their metrics are lower bounds (missing matches ranked last).

    Args:
        topk_dist: (num_query, k) distances, e.g. from :func:`topk_search`.
        topk_idx: (num_query, k) gallery indices of those distances.
        q_pids, g_pids, q_camids, g_camids: 1-D labels of all queries and of the *whole* gallery.
        max_rank: CMC length; reduced to ``num_gallery`` when the gallery is smaller.

    Raises:
        DataError: bad shapes or indices, NaN distances, or no query with a true match in the gallery.
    """
    topk_dist, topk_idx = _check_topk_shapes(topk_dist, topk_idx)
    num_q, k = topk_idx.shape
    num_g = len(np.asarray(g_pids))
    q_pids, g_pids, q_camids, g_camids = check_labels(num_q, num_g, q_pids, g_pids, q_camids, g_camids)
    _check_topk_values(topk_dist, topk_idx, num_g)
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    max_rank = min(max_rank, num_g)

    order = np.lexsort((topk_idx, topk_dist), axis=-1)
    idx = np.take_along_axis(topk_idx, order, axis=1)
    match = g_pids[idx] == q_pids[:, None]
    keep = ~(match & (g_camids[idx] == q_camids[:, None]))
    stats = score_ranked_lists(match & keep, keep)
    num_rel, num_junk = _gallery_counts(q_pids, g_pids, q_camids, g_camids)

    valid = num_rel > 0
    if not valid.any():
        raise DataError(f"all {num_q} queries have no true match in the gallery")
    incomplete = valid & (stats["found"] < num_rel)
    _worst_case_tail(stats, num_rel, num_junk, num_g, np.flatnonzero(incomplete))
    rel = num_rel[valid].astype(np.float64)
    return TopkRankResult(
        cmc=cmc_hits(stats["first"][valid], max_rank).astype(np.float32) / float(valid.sum()),
        all_AP=stats["ap_sum"][valid] / rel,
        all_INP=rel / (stats["last"][valid] + 1.0),
        valid_query_mask=valid,
        num_gallery=num_g,
        first_match=stats["first"][valid],
        k=k,
        incomplete_query_mask=incomplete,
    )
