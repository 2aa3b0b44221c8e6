"""Cross-model retrieval: queries embedded by one model searched against a gallery embedded by another.

Gallery-compatible distillation trains a student into its teacher's embedding space so that a gallery the
teacher already indexed need not be re-embedded; these metrics say whether that worked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.data.records import DatasetSplits
from compressreid.errors import ConfigError
from compressreid.evaluation.evaluator import EmbeddedSplits, EvaluationResult, ReIDEvaluator

# The metrics reported for each of the three retrievals.
SUMMARY_METRICS = ("mAP", "rank1", "mINP")


@dataclass
class CrossModelResult:
    """Three retrievals on one test set: query model -> gallery model, and each model against itself."""

    cross: EvaluationResult
    query_model: EvaluationResult
    gallery_model: EvaluationResult

    def summary(self, query_name: str = "student", gallery_name: str = "teacher") -> Dict[str, Dict[str, float]]:
        """``{<query>_query_<gallery>_gallery: {...}, <query>: {...}, <gallery>: {...}}`` with SUMMARY_METRICS."""
        return {
            cross_key(query_name, gallery_name): _pick(self.cross),
            query_name: _pick(self.query_model),
            gallery_name: _pick(self.gallery_model),
        }


def cross_key(query_name: str, gallery_name: str) -> str:
    return f"{query_name}_query_{gallery_name}_gallery"


def _pick(result: EvaluationResult) -> Dict[str, float]:
    return {name: float(result.metrics[name]) for name in SUMMARY_METRICS}


def combine(query_side: EmbeddedSplits, gallery_side: EmbeddedSplits) -> EmbeddedSplits:
    """Query features of one model with gallery features of another (each with the records it embedded).

    Raises:
        ConfigError: the two embeddings differ in size, or come from different test sets.
    """
    if query_side.dataset != gallery_side.dataset:
        raise ConfigError(f"cross-model retrieval needs one test set, got {query_side.dataset} queries and "
                          f"{gallery_side.dataset} gallery")
    q_dim, g_dim = query_side.q_feats.shape[1], gallery_side.g_feats.shape[1]
    if q_dim != g_dim:
        raise ConfigError(f"cross-model retrieval on {query_side.dataset}: query embeddings have {q_dim} dims, "
                          f"gallery embeddings {g_dim}; the models do not share an embedding space")
    return EmbeddedSplits(query_side.dataset, query_side.q_feats, query_side.q_records, gallery_side.g_feats,
                          gallery_side.g_records)


def cross_model_from_features(evaluator: ReIDEvaluator, query_side: EmbeddedSplits, gallery_side: EmbeddedSplits,
                              own: Optional[Tuple[EvaluationResult, EvaluationResult]] = None) -> CrossModelResult:
    """Evaluate query_side -> gallery_side and each side against itself, with the same evaluator.

    Args:
        own: each side's self-retrieval result when the caller already has them (not evaluated again).
    """
    cross = evaluator.evaluate_embedded(combine(query_side, gallery_side))
    if own is None:
        own = evaluator.evaluate_embedded(query_side), evaluator.evaluate_embedded(gallery_side)
    return CrossModelResult(cross, *own)


def evaluate_cross_model(evaluator: ReIDEvaluator, query_model: nn.Module, gallery_model: nn.Module,
                         test_set: DatasetSplits, query_cfg: CfgNode, gallery_cfg: CfgNode, device: torch.device,
                         progress: bool = True) -> CrossModelResult:
    """Embed ``test_set`` with both models (each through the loader its config describes) and compare.

    Args:
        query_model: embeds the queries (e.g. a gallery-compatible student).
        gallery_model: embeds the gallery (e.g. the teacher whose index is kept).
    """
    query_side = evaluator.embed(query_model.to(device).eval(), test_set, query_cfg, device, progress)
    gallery_side = evaluator.embed(gallery_model.to(device).eval(), test_set, gallery_cfg, device, progress)
    return cross_model_from_features(evaluator, query_side, gallery_side)
