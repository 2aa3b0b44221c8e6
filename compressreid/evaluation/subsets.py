"""Retrieval metrics on a flagged subset of the queries (e.g. people in black clothes) against the full gallery.

Each query's ranked list does not depend on the other queries, so a subset's metrics are the full protocol run on
the subset's rows of the distance matrix (or of the top-k lists).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from compressreid.data.image_dataset import BLACK_CLOTHES_KEY
from compressreid.data.records import ImageRecord
from compressreid.evaluation.rank import evaluate_rank_detailed
from compressreid.evaluation.search import evaluate_rank_topk

# metrics.json prefix of the black-clothes query subset: black_mAP, black_rank1, black_mINP, ...
BLACK_PREFIX = "black_"


def flagged_queries(records: Sequence[ImageRecord], key: str = BLACK_CLOTHES_KEY) -> Optional[np.ndarray]:
    """Indices of the records whose ``meta[key]`` is true; None when no record carries ``key`` at all."""
    if not any(key in r.meta for r in records):
        return None
    return np.array([i for i, r in enumerate(records) if r.meta.get(key)], dtype=np.int64)


def _summary(ranks, num_query: int, prefix: str) -> Dict[str, float]:
    summary = ranks.as_dict()
    metrics = {f"{prefix}{key}": 100.0 * summary[key] for key in ("mAP", "rank1", "rank5", "mINP")}
    metrics[f"{prefix}num_query"] = num_query
    metrics[f"{prefix}num_valid_queries"] = summary["num_valid_queries"]
    return metrics


def subset_metrics_dense(distmat: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray, q_cams: np.ndarray,
                         g_cams: np.ndarray, rows: np.ndarray, max_rank: int = 50,
                         prefix: str = BLACK_PREFIX) -> Dict[str, float]:
    """mAP / Rank-1 / Rank-5 / mINP (percent) of the queries ``rows`` against the full gallery.

    Returns only the ``num_query`` / ``num_valid_queries`` counts when no query of the subset has a true match.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if not _any_match(q_ids[rows], q_cams[rows], g_ids, g_cams):
        return {f"{prefix}num_query": int(len(rows)), f"{prefix}num_valid_queries": 0}
    ranks = evaluate_rank_detailed(np.asarray(distmat)[rows], q_ids[rows], g_ids, q_cams[rows], g_cams, max_rank)
    return _summary(ranks, len(rows), prefix)


def subset_metrics_topk(topk_dist: np.ndarray, topk_idx: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray,
                        q_cams: np.ndarray, g_cams: np.ndarray, rows: np.ndarray, max_rank: int = 50,
                        prefix: str = BLACK_PREFIX) -> Dict[str, float]:
    """As :func:`subset_metrics_dense`, from the top-k lists of the faiss evaluator."""
    rows = np.asarray(rows, dtype=np.int64)
    if not _any_match(q_ids[rows], q_cams[rows], g_ids, g_cams):
        return {f"{prefix}num_query": int(len(rows)), f"{prefix}num_valid_queries": 0}
    ranks = evaluate_rank_topk(topk_dist[rows], topk_idx[rows], q_ids[rows], g_ids, q_cams[rows], g_cams, max_rank)
    return _summary(ranks, len(rows), prefix)


def _any_match(q_ids, q_cams, g_ids, g_cams) -> bool:
    """Whether some query has a true match (same identity, other camera): the rank evaluators refuse none.

    Works on the gallery's distinct (identity, camera) pairs, so it never builds a query x gallery matrix.
    """
    cams_of: Dict[int, set] = {}
    for pid, cam in np.unique(np.stack([np.asarray(g_ids), np.asarray(g_cams)], axis=1), axis=0).tolist():
        cams_of.setdefault(pid, set()).add(cam)
    queries = zip(np.asarray(q_ids).tolist(), np.asarray(q_cams).tolist())
    return any(cams_of.get(pid, set()) - {cam} for pid, cam in queries)
