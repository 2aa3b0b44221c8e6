"""Large-gallery evaluation: exact faiss top-k search, then rank metrics from the top-k lists alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import faiss
import numpy as np

from compressreid.errors import DataError
from compressreid.evaluation.distance import Features, check_metric, compute_distance
from compressreid.evaluation.rank import RankResult, check_labels, cmc_hits, score_ranked_lists


def _as_float32(feats: Features, name: str) -> np.ndarray:
    """A C-contiguous float32 numpy view of ``feats`` (copied only when the layout or dtype requires it)."""
    arr = feats.detach().cpu().numpy() if hasattr(feats, "detach") else np.asarray(feats)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise DataError(f"{name} must be a non-empty 2-D (num, dim) array, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _prepare(block: np.ndarray, metric: str, name: str) -> np.ndarray:
    """Check one block and, for cosine, return an L2-normalised copy (the caller's array is never touched)."""
    if not np.isfinite(block).all():
        raise DataError(f"{name} contains NaN or inf")
    if metric != "cosine":
        return block
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    # Same epsilon as torch.nn.functional.normalize, so zero vectors behave as in compute_distance.
    return block / np.maximum(norms, 1e-12)


def _merge(best_d, best_i, new_d, new_i, keep: int) -> Tuple[np.ndarray, np.ndarray]:
    """Keep the ``keep`` smallest candidates per row, ordered by (distance, gallery index)."""
    d = np.concatenate([best_d, new_d], axis=1)
    i = np.concatenate([best_i, new_i], axis=1)
    order = np.lexsort((i, d), axis=-1)[:, :keep]
    return np.take_along_axis(d, order, axis=1), np.take_along_axis(i, order, axis=1)


def _exact_rows(q: np.ndarray, g: np.ndarray, k: int, metric: str, shard: int) -> Tuple[np.ndarray, np.ndarray]:
    """Dense stable top-k for a few query rows, used when ties straddle the k-th place."""
    dist = np.concatenate([compute_distance(q, g[s : s + shard], metric) for s in range(0, len(g), shard)], axis=1)
    idx = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, idx, axis=1), idx.astype(np.int64)


def topk_search(
    q_feats: Features,
    g_feats: Features,
    k: int,
    metric: str = "cosine",
    query_chunk: int = 8192,
    gallery_shard: int = 262_144,
) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest gallery entries of every query, without a num_query x num_gallery matrix.

    The gallery is split into shards, each held once in a faiss flat index (``IndexFlatIP`` on L2-normalised
    copies for cosine, ``IndexFlatL2`` for euclidean) and searched by query chunks; the per-shard results are
    merged into a running top-k. Distances are on the :func:`compute_distance` scale (``1 - cos`` or the true L2
    distance). Rows are ordered by (distance, gallery index) like the dense stable sort; faiss breaks ties at the
    k-th place arbitrarily, so one extra neighbour is fetched and rows whose k-th and (k+1)-th distances tie are
    recomputed densely. Peak extra memory is about two shards plus ``num_query x (k+1)`` results.

    Args:
        q_feats: (num_query, dim) features, numpy or torch.
        g_feats: (num_gallery, dim) features.
        k: neighbours per query; reduced to ``num_gallery`` when the gallery is smaller.
        metric: ``"cosine"`` or ``"euclidean"``.
        query_chunk: queries per faiss search call.
        gallery_shard: gallery rows per flat index.

    Returns:
        ``(topk_dist, topk_idx)``: (num_query, k) float32 distances and int64 gallery indices.

    Raises:
        DataError: empty, non-finite or dimension-mismatched features.
        ValueError: unknown metric or ``k < 1``.
    """
    check_metric(metric)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q = _as_float32(q_feats, "q_feats")
    g = _as_float32(g_feats, "g_feats")
    if q.shape[1] != g.shape[1]:
        raise DataError(f"feature dims differ: query {q.shape[1]}, gallery {g.shape[1]}")
    num_q, num_g = len(q), len(g)
    k = min(k, num_g)
    fetch = min(k + 1, num_g)
    qn = _prepare(q, metric, "q_feats")
    best_d = np.full((num_q, fetch), np.inf, dtype=np.float32)
    best_i = np.full((num_q, fetch), num_g, dtype=np.int64)
    for start in range(0, num_g, gallery_shard):
        shard = _prepare(g[start : start + gallery_shard], metric, "g_feats")
        index = faiss.IndexFlatIP(g.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(g.shape[1])
        index.add(shard)
        del shard  # the index holds its own copy
        kk = min(fetch, index.ntotal)
        for qs in range(0, num_q, query_chunk):
            raw_d, raw_i = index.search(qn[qs : qs + query_chunk], kk)
            dist = 1.0 - raw_d if metric == "cosine" else np.sqrt(np.maximum(raw_d, 0.0))
            rows = slice(qs, qs + query_chunk)
            best_d[rows], best_i[rows] = _merge(best_d[rows], best_i[rows], dist, raw_i + start, fetch)
        del index
    topk_d, topk_i = best_d[:, :k], best_i[:, :k]
    if fetch > k:
        ambiguous = np.flatnonzero(best_d[:, k] == best_d[:, k - 1])
        if len(ambiguous):
            topk_d[ambiguous], topk_i[ambiguous] = _exact_rows(q[ambiguous], g, k, metric, gallery_shard)
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
        k=k,
        incomplete_query_mask=incomplete,
    )
