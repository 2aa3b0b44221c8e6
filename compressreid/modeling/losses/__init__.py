"""Supervised ReID losses, registered by fast-reid's names and weighted from the config."""

from compressreid.modeling.losses.registry import BRANCH_SCOPE, LOSSES, OUTPUT_SCOPE, ReIDCriterion, build_criterion
from compressreid.modeling.losses import ensemble_losses, metric_losses, softmax_losses  # noqa: F401  (registers)

__all__ = ["BRANCH_SCOPE", "LOSSES", "OUTPUT_SCOPE", "ReIDCriterion", "build_criterion"]
