"""Retrieval evaluation: rank metrics, distances and faiss search, ROC, re-ranking and query expansion.

The plot functions are resolved on first access (PEP 562) so importing this package does not import matplotlib.
"""

import importlib

from compressreid.evaluation.distance import compute_distance
from compressreid.evaluation.query_expansion import aqe
from compressreid.evaluation.rank import RankResult, evaluate_rank, evaluate_rank_detailed
from compressreid.evaluation.rerank import k_reciprocal_rerank
from compressreid.evaluation.roc import RocResult, distance_distributions, roc_from_distmat, tpr_at_fpr
from compressreid.evaluation.search import TopkRankResult, evaluate_rank_topk, topk_search

__all__ = [
    "RankResult",
    "RocResult",
    "TopkRankResult",
    "aqe",
    "compute_distance",
    "distance_distributions",
    "evaluate_rank",
    "evaluate_rank_detailed",
    "evaluate_rank_topk",
    "k_reciprocal_rerank",
    "plot_distance_distributions",
    "plot_roc",
    "plot_worst_queries",
    "roc_from_distmat",
    "topk_search",
    "tpr_at_fpr",
]

_PLOTS = ("plot_distance_distributions", "plot_roc", "plot_worst_queries")


def __getattr__(name: str):
    if name in _PLOTS:
        return getattr(importlib.import_module("compressreid.evaluation.plots"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
