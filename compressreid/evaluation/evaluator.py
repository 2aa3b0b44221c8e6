"""One evaluator for every stage: embed query and gallery, rank, score, and keep what the plots need.

Metrics are reported in percent (points), the unit gates speak in. When query records carry
``meta["black_clothes"]``, the black-clothes query subset is also scored against the full gallery (``black_*``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.data.build import build_test_loader
from compressreid.data.records import DatasetSplits, ImageRecord
from compressreid.errors import DataError
from compressreid.evaluation.distance import compute_distance
from compressreid.evaluation.features import extract_features
from compressreid.evaluation.gallery_search import check_gallery_options, search_gallery
from compressreid.evaluation.query_expansion import aqe
from compressreid.evaluation.rank import evaluate_rank_detailed
from compressreid.evaluation.rerank import k_reciprocal_rerank
from compressreid.evaluation.collapse import COLLAPSE_METRICS, collapse_metrics
from compressreid.evaluation.metric_names import RANK_METRICS, SUBSET_METRICS, roc_metric_names
from compressreid.evaluation.roc import distance_distributions, roc_from_distmat, threshold_at_fpr, tpr_at_fpr
from compressreid.evaluation.search import evaluate_rank_topk
from compressreid.evaluation.subsets import flagged_queries, subset_metrics_dense, subset_metrics_topk

logger = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    """Metrics of one query/gallery pair plus the arrays the report draws."""

    dataset: str
    metrics: Dict[str, float]
    q_records: List[ImageRecord]
    g_records: List[ImageRecord]
    distmat: Optional[np.ndarray] = None
    roc: object = None
    pos_neg_distances: Optional[tuple] = None
    notes: List[str] = field(default_factory=list)
    # 0-based rank of each query's first true match (0: a Rank-1 hit; -1: skipped, no match left), query order
    query_first_match: Optional[np.ndarray] = None
    # each query's average precision (0..1; NaN: skipped), query order
    query_AP: Optional[np.ndarray] = None


@dataclass
class EmbeddedSplits:
    """Query and gallery features of one test set, with the records actually embedded (unreadable ones skipped)."""

    dataset: str
    q_feats: torch.Tensor
    q_records: List[ImageRecord]
    g_feats: torch.Tensor
    g_records: List[ImageRecord]


def _per_query_first_match(ranks) -> np.ndarray:
    """Each query's first-match rank in query order, -1 for the queries the evaluation skipped."""
    first = np.full(len(ranks.valid_query_mask), -1, dtype=np.int64)
    first[ranks.valid_query_mask] = ranks.first_match
    return first


def _per_query_ap(ranks) -> np.ndarray:
    """Each query's average precision in query order, NaN for the queries the evaluation skipped."""
    ap = np.full(len(ranks.valid_query_mask), np.nan, dtype=np.float64)
    ap[ranks.valid_query_mask] = ranks.all_AP
    return ap


def _labels(records: Sequence[ImageRecord]):
    return [r.pid for r in records], np.array([r.camid for r in records])


def encode_identities(q_pids, g_pids):
    """Map identities (ints, or namespaced strings after merging) onto shared integer labels."""
    table = {pid: i for i, pid in enumerate(sorted(set(q_pids) | set(g_pids), key=str))}
    return np.array([table[p] for p in q_pids]), np.array([table[p] for p in g_pids])


class ReIDEvaluator:
    """Market1501-protocol evaluation with optional flip, AQE, re-ranking, top-k search and ROC.

    With ``topk > 0`` the gallery is searched in blocks (:func:`search_gallery`), stored as ``gallery_storage``
    (``"fp32"``, or ``"int8"`` with ``rescore_window`` candidates per query re-scored exactly).
    """

    def __init__(self, metric: str = "cosine", max_rank: int = 50, topk: int = 0, roc: bool = True,
                 flip: bool = False, rerank: Optional[tuple] = None, aqe_params: Optional[tuple] = None,
                 gallery_storage: str = "fp32", rescore_window: int = 0):
        check_gallery_options(gallery_storage, rescore_window, topk)
        self.metric, self.max_rank, self.topk, self.roc, self.flip = metric, max_rank, topk, roc, flip
        self.rerank, self.aqe_params = rerank, aqe_params
        self.gallery_storage, self.rescore_window = gallery_storage, rescore_window

    @classmethod
    def from_config(cls, cfg: CfgNode) -> "ReIDEvaluator":
        t = cfg.TEST
        rerank = (t.RERANK.K1, t.RERANK.K2, t.RERANK.LAMBDA) if t.RERANK.ENABLED else None
        aqe_params = (t.AQE.QE_TIME, t.AQE.QE_K, t.AQE.ALPHA) if t.AQE.ENABLED else None
        return cls(t.METRIC, t.MAX_RANK, t.TOPK, t.ROC.ENABLED, t.FLIP.ENABLED, rerank, aqe_params,
                   t.GALLERY_STORAGE, t.RESCORE_WINDOW)

    def embed(self, model: nn.Module, test_set: DatasetSplits, cfg: CfgNode, device: torch.device,
              progress: bool = True) -> EmbeddedSplits:
        """Embed ``test_set``'s query and gallery with ``model``; ``cfg`` gives the loader (INPUT.SIZE_TEST)."""
        embedded = {}
        for split in ("query", "gallery"):
            records = getattr(test_set, split)
            feats, kept, skipped = extract_features(model, build_test_loader(cfg, records), device, self.flip,
                                                    f"{test_set.name} {split}", progress)
            if skipped:
                logger.warning("%s %s: skipped %d unreadable image(s)", test_set.name, split, skipped)
            embedded[split] = (feats, [records[i] for i in kept])
        return EmbeddedSplits(test_set.name, *embedded["query"], *embedded["gallery"])

    def evaluate_model(self, model: nn.Module, test_set: DatasetSplits, cfg: CfgNode, device: torch.device,
                       progress: bool = True) -> EvaluationResult:
        """Embed ``test_set``'s query and gallery with ``model`` and evaluate them."""
        return self.evaluate_embedded(self.embed(model, test_set, cfg, device, progress))

    def evaluate_embedded(self, embedded: EmbeddedSplits) -> EvaluationResult:
        """Evaluate features ``embed`` returned (or two models' features combined, see evaluation.cross_model)."""
        return self.evaluate_features(embedded.q_feats, embedded.q_records, embedded.g_feats, embedded.g_records,
                                      dataset=embedded.dataset)

    def evaluate_features(self, q_feats: torch.Tensor, q_records: Sequence[ImageRecord], g_feats: torch.Tensor,
                          g_records: Sequence[ImageRecord], dataset: str = "") -> EvaluationResult:
        if len(q_records) == 0 or len(g_records) == 0:
            raise DataError(f"{dataset or 'evaluation'}: empty {'query' if not q_records else 'gallery'} set")
        q_pids, q_cams = _labels(q_records)
        g_pids, g_cams = _labels(g_records)
        q_ids, g_ids = encode_identities(q_pids, g_pids)
        if not all(bool(torch.isfinite(torch.as_tensor(f)).all()) for f in (q_feats, g_feats)):
            return self._non_finite(dataset, q_records, g_records)
        if self.aqe_params:
            q_feats, g_feats = aqe(q_feats, g_feats, *self.aqe_params)
        if self.topk > 0:
            return self._evaluate_topk(q_feats, g_feats, q_ids, g_ids, q_cams, g_cams, q_records, g_records, dataset)
        distmat = compute_distance(q_feats, g_feats, self.metric)
        if self.rerank:
            distmat = k_reciprocal_rerank(distmat, compute_distance(q_feats, q_feats, self.metric),
                                          compute_distance(g_feats, g_feats, self.metric), *self.rerank)
        ranks = evaluate_rank_detailed(distmat, q_ids, g_ids, q_cams, g_cams, self.max_rank)
        result = EvaluationResult(dataset, {}, list(q_records), list(g_records), distmat,
                                  query_first_match=_per_query_first_match(ranks),
                                  query_AP=_per_query_ap(ranks))
        result.metrics = self._scalar_metrics(ranks, len(q_records), len(g_records))
        result.metrics.update(collapse_metrics(g_feats, np.argmin(distmat, axis=1)))
        rows = flagged_queries(q_records)
        if rows is not None:  # black-clothes queries against the full gallery, for HAA-vs-baseline comparisons
            result.metrics.update(subset_metrics_dense(distmat, q_ids, g_ids, q_cams, g_cams, rows, self.max_rank))
        self._note_skipped(result, ranks.skipped_query_indices, q_pids)
        if self.roc:
            # a seeded sample of negative pairs bounds memory on large galleries (Market1501: ~53M pairs)
            result.roc = roc_from_distmat(distmat, q_ids, g_ids, q_cams, g_cams, max_negatives=5_000_000)
            result.metrics.update({k: 100.0 * v for k, v in tpr_at_fpr(result.roc).items()})
            result.metrics.update(threshold_at_fpr(result.roc))  # the match threshold a tracker should use
            result.pos_neg_distances = distance_distributions(distmat, q_ids, g_ids, q_cams, g_cams)
        return result

    def _evaluate_topk(self, q_feats, g_feats, q_ids, g_ids, q_cams, g_cams, q_records, g_records, dataset):
        found = search_gallery(q_feats, g_feats, self.topk, self.metric, self.gallery_storage, self.rescore_window)
        topk_dist, topk_idx = found.topk_dist, found.topk_idx
        ranks = evaluate_rank_topk(topk_dist, topk_idx, q_ids, g_ids, q_cams, g_cams, self.max_rank)
        result = EvaluationResult(dataset, {}, list(q_records), list(g_records),
                                  query_first_match=_per_query_first_match(ranks),
                                  query_AP=_per_query_ap(ranks))
        result.metrics = self._scalar_metrics(ranks, len(q_records), len(g_records))
        result.metrics.update(collapse_metrics(g_feats, topk_idx[:, 0]))
        result.metrics["topk"] = self.topk
        result.metrics["topk_incomplete_queries"] = int(ranks.num_incomplete)
        if self.gallery_storage != "fp32":
            result.metrics.update(rescore_window=found.window, rescore_at_risk_queries=found.num_at_risk,
                                  rescore_unproven_queries=found.num_unproven)
        rows = flagged_queries(q_records)
        if rows is not None:
            result.metrics.update(subset_metrics_topk(topk_dist, topk_idx, q_ids, g_ids, q_cams, g_cams, rows,
                                                      self.max_rank))
        for message in (ranks.message, found.message):
            if message:
                result.notes.append(message)
                logger.warning("%s: %s", dataset, message)
        self._note_skipped(result, ranks.skipped_query_indices, [r.pid for r in q_records])
        return result

    @staticmethod
    def _non_finite(dataset: str, q_records, g_records) -> EvaluationResult:
        """A model that outputs NaN or inf is measured, not refused: every metric NaN, so every gate on it fails
        (saying NaN) and the stage is rejected, instead of an error that reads as bad input."""
        message = "embeddings contain NaN or inf: every metric is NaN"
        logger.error("%s: %s", dataset, message)
        nan = float("nan")
        names = [*RANK_METRICS, *COLLAPSE_METRICS, *roc_metric_names()]
        flags = flagged_queries(q_records)
        if flags is not None:
            names += [n for n in SUBSET_METRICS if not n.endswith(("num_query", "num_valid_queries"))]
        metrics = {key: nan for key in names}
        if flags is not None:
            metrics.update(black_num_query=len(flags), black_num_valid_queries=0)
        metrics.update(num_query=len(q_records), num_gallery=len(g_records), num_valid_queries=0,
                       num_skipped_queries=len(q_records))
        return EvaluationResult(dataset, metrics, list(q_records), list(g_records), notes=[message])

    @staticmethod
    def _scalar_metrics(ranks, num_query: int, num_gallery: int) -> Dict[str, float]:
        summary = ranks.as_dict()
        metrics = {key: 100.0 * summary[key] for key in ("mAP", "rank1", "rank5", "rank10", "mINP")}
        metrics.update(num_query=num_query, num_gallery=num_gallery, num_valid_queries=summary["num_valid_queries"],
                       num_skipped_queries=summary["num_skipped_queries"])
        return metrics

    @staticmethod
    def _note_skipped(result: EvaluationResult, skipped: np.ndarray, q_pids: Sequence) -> None:
        if len(skipped):
            ids = sorted({str(q_pids[i]) for i in skipped})
            note = (f"{len(skipped)} query image(s) of {len(ids)} identities have no true match in the gallery "
                    f"(other camera) and were skipped: {', '.join(ids[:20])}{' ...' if len(ids) > 20 else ''}")
            result.notes.append(note)
            logger.warning("%s: %s", result.dataset, note)
