"""Registered distillation losses, one family per module; importing this package registers them all."""

from compressreid.distill.losses import embedding, feature_map, logit, relation  # noqa: F401  (registers)
from compressreid.distill.losses.embedding import EmbeddingRegression
from compressreid.distill.losses.feature_map import FeatureMapDistill
from compressreid.distill.losses.logit import LogitKD
from compressreid.distill.losses.relation import PKT, ListwiseRanking, RKDAngle, RKDDistance, SimilarityPreserving

__all__ = ["LogitKD", "EmbeddingRegression", "RKDDistance", "RKDAngle", "SimilarityPreserving", "PKT",
           "ListwiseRanking", "FeatureMapDistill"]
